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
FLOORS = {"light": 9, "pytorch-converted": 82, "pytorch-operator": 35, "simple": 7, "node": 1703}

pytestmark = pytest.mark.skipif(not HARNESS.exists(), reason="needs ../shared/tools/conformance.py")


@pytest.mark.parametrize("suite", sorted(FLOORS))
def test_conformance_floor(suite, tmp_path):
    out = tmp_path / "result.json"
    jobs = os.environ.get("CONFORMANCE_JOBS", "1")
    proc = subprocess.run([sys.executable, str(HARNESS), "--backend", "tensoregg.frontends.onnx_backend",
                           "--suite", suite, "--json", str(out), "-j", jobs, "--show-failures", "30"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    passed = sum(1 for case in summary["cases"] if case["status"] == "passed")
    assert passed >= FLOORS[suite], proc.stdout[-6000:]
