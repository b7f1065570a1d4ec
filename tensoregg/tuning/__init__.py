"""Auto-tuning: measured refinement of the schedules the cost model picks.

``records`` holds the tuning records (SQLite), ``measure`` times candidates in worker processes,
``search`` is the tuning loop (``tensoregg.tune``, ``tensoregg tune``); ``compile`` reads the records
through ``records.measured_pricing``.
"""
