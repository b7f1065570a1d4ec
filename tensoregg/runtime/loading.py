"""``load``: a saved artifact back as a runnable Module, without the compiler."""

from __future__ import annotations

import os

from tensoregg.runtime.artifact import read_artifact
from tensoregg.runtime.batched import BATCHED, from_batched_artifact
from tensoregg.runtime.module import Module, from_artifact


def load(path: str | os.PathLike[str]) -> Module:
    """The model saved at ``path`` (``Module.save``), checked (``read_artifact``) and ready to run,
    with numpy and the standard library only (no egglog, onnx or llvmlite): a ``BatchedModule`` for
    a model saved with a symbolic batch."""
    artifact = read_artifact(path)
    if BATCHED in artifact.manifest["code"]:
        return from_batched_artifact(artifact)
    return from_artifact(artifact)
