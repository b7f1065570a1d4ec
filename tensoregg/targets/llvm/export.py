"""The ``llvm`` target's save hook: a NativeModel as the code of an artifact
(``tensoregg.runtime.artifact``), loaded back by ``tensoregg.runtime.native.load_native``.

Parts: the shared library (``NativeModel.write_shared_library``: the model, the thread team's
functions, the C API), its header ``tensoregg.h``, the packed weights as a 1-D uint8 ``weights.npy``
(what ``tegg_create`` reads), and ``outputs/<k>.npy`` for each output that is a constant. The
manifest's ``code`` object is described by ``tensoregg.runtime.native.CODE_FIELDS``.
"""

from __future__ import annotations

import io
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tensoregg.runtime.artifact import TargetCode
from tensoregg.targets.llvm.capi import HEADER
from tensoregg.targets.llvm.model import NativeModel

LIBRARY = "libtensoregg_model.so"
WEIGHTS = "weights.npy"


def npy(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file."""
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()


def save_native(model: NativeModel) -> TargetCode:
    """The code of ``model`` for an artifact (see the module docstring)."""
    ex, plan, g = model.executor, model.plan, model.graph
    with tempfile.TemporaryDirectory() as tmp:
        library = model.write_shared_library(Path(tmp) / LIBRARY).read_bytes()
    parts = {LIBRARY: library, "tensoregg.h": HEADER.encode(), WEIGHTS: npy(ex.weights)}
    constants = {}
    for k, name in enumerate(g.outputs):
        if name in ex.constants and name not in constants:
            constants[name] = f"outputs/{k}.npy"
            parts[constants[name]] = npy(ex.constants[name])
    values: dict[str, Any] = {n: [p.kind, p.at, p.nbytes] for n, p in plan.places.items()}
    kernels = [{"function": fn, "node": f"{node.op} {node.label}", "runs": k not in model.views}
               for k, (fn, node) in enumerate(zip(model.kernel_names, g.nodes))]
    manifest = {"library": LIBRARY, "weights": WEIGHTS, "machine": platform.machine(),
                "cpu": model.target.cpu, "features": model.target.features,
                "weights_nbytes": int(ex.weights.nbytes), "workspace_nbytes": int(ex.work_size),
                "parallel": ex.parallel, "slots": ex.slots, "constants": constants,
                "memory_plan": {"workspace_nbytes": int(ex.work_size), "values": values},
                "kernels": kernels}
    return TargetCode(manifest, parts)
