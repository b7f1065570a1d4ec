"""The README's Python examples run as written."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(index):
    """Each block runs after the ones before it (a later example may continue an earlier one)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        namespace: dict = {}
        for code in BLOCKS[:index + 1]:
            exec(compile(code, "README.md", "exec"), namespace)
        for name, fn in namespace.items():
            if name.startswith("test_") and callable(fn):
                fn()
    finally:
        os.chdir(cwd)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2
