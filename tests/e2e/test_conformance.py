"""The official ONNX backend tests through tensoregg's backend adapter (../shared/tools/conformance.py).

Floors, not goals: each suite must pass at least what it passed when this test was last raised.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT.parent / "shared" / "tools" / "conformance.py"
FLOORS = {
    "ref": {"light": 9, "pytorch-converted": 82, "pytorch-operator": 35, "simple": 7, "node": 1703},
    "llvm": {"light": 9, "pytorch-converted": 82, "pytorch-operator": 35, "simple": 7, "node": 1696},
}
"""Passed cases per target and suite; on llvm the rest are declined (an op or dtype without a
lowering), never wrong."""

pytestmark = pytest.mark.skipif(not HARNESS.exists(), reason="needs ../shared/tools/conformance.py")


@pytest.mark.parametrize(("target", "suite"), [(t, s) for t in FLOORS for s in sorted(FLOORS[t])])
def test_conformance_floor(target, suite, tmp_path):
    out = tmp_path / "result.json"
    jobs = os.environ.get("CONFORMANCE_JOBS", "2")  # the llvm node suite is the suite's long tail
    env = {**os.environ, "TENSOREGG_TARGET": target}
    proc = subprocess.run([sys.executable, str(HARNESS), "--backend", "tensoregg.frontends.onnx_backend",
                           "--suite", suite, "--json", str(out), "-j", jobs, "--show-failures", "30"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False, env=env)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = json.loads(out.read_text())["cases"]
    passed = sum(1 for case in cases if case["status"] == "passed")
    wrong = [case["name"] for case in cases if case["status"] in ("failed", "errored")]
    assert passed >= FLOORS[target][suite] and not wrong, proc.stdout[-6000:]
