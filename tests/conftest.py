import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# The compile cache of every test (and of the commands tests start) is a fresh directory, never the
# user's: tests that look at the cache point it elsewhere themselves.
os.environ["TENSOREGG_CACHE_DIR"] = tempfile.mkdtemp(prefix="tensoregg-test-cache-")
atexit.register(shutil.rmtree, os.environ["TENSOREGG_CACHE_DIR"], ignore_errors=True)
# Likewise the tuning records: a path with no database, so no test compiles with the user's records.
os.environ["TENSOREGG_RECORDS"] = os.path.join(os.environ["TENSOREGG_CACHE_DIR"], "records.sqlite")
# And the object code of kernels (shared by the tests of this process and the commands they start).
os.environ["TENSOREGG_OBJECT_CACHE"] = os.path.join(os.environ["TENSOREGG_CACHE_DIR"], "objects")
