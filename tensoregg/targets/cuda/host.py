"""The CUDA C of a program compiled for this CPU by the host C++ compiler and run block by block: a
check of the generated C itself (what NVRTC compiles), where the ``interp`` emulation checks the
loop program it was written from. A block's threads run one after another, or, in a kernel with
barriers, as fibers that take turns at each barrier (``host.h``; shared memory: the kernel's
statics, one block at a time)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tensoregg.errors import CompileError
from tensoregg.ir.loops import Barrier, statements
from tensoregg.ir.memory_plan import POISON
from tensoregg.ir.program import collect_outputs
from tensoregg.targets.cuda.codegen import c_type

if TYPE_CHECKING:
    from tensoregg.targets.cuda.program import CudaProgram

HOST_HEADER = (Path(__file__).parent / "host.h").read_text()


def check_on_host(program: CudaProgram, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``program``'s CUDA C on this CPU (see the module docstring) on ``feeds``."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise CompileError("no C++ compiler (g++) to check the CUDA C on the host")
    wrappers = []
    for k, item in enumerate(program.launches):
        together = any(isinstance(s, Barrier) for s in statements([item.launch.stage]))
        kernel = program.program.lowered[item.node].kernel
        written = {id(b) for b in kernel.outputs}
        args = ", ".join(f"({'' if id(kernel.params[i]) in written else 'const '}"
                         f"{c_type(kernel.params[i].dtype, item.launch.name)}*)a[{j}]"
                         for j, i in enumerate(item.params))
        wrappers.append(f'extern "C" void te_launch_{k}(void** a) {{\n'
                        f"  te_launch({item.launch.blocks}, {item.launch.threads}, {str(together).lower()}, "
                        f"[=] {{ {item.launch.name}({args}); }});\n}}")
    with tempfile.TemporaryDirectory(prefix="tensoregg-cuda-host-") as tmp:
        src, lib = Path(tmp, "model.cpp"), Path(tmp, "model.so")
        src.write_text(HOST_HEADER + program.source + "\n" + "\n".join(wrappers) + "\n")
        command = [compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off",
                   "-o", str(lib), str(src)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise CompileError(f"the host C++ compiler rejected the CUDA C:\n{done.stderr[-4000:]}")
        library = ctypes.CDLL(str(lib))
        return _run(program, library, feeds)


def _run(program: CudaProgram, library: ctypes.CDLL, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    g, plan = program.graph, program.program.plan
    inputs = {n: np.ascontiguousarray(feeds[n]) for n in g.inputs}
    produced = {n: np.empty(g.types[n].shape, g.types[n].dtype) for n, p in plan.places.items()
                if p.kind == "output"}
    io = {n: int(a.ctypes.data) for n, a in [*inputs.items(), *produced.items()]}
    work = np.full(plan.work_size + 64, POISON, np.uint8)
    for k, item in enumerate(program.launches):
        places = plan.param_places(program.program.lowered[item.node])
        pointers = [plan.address(places[i], io, int(work.ctypes.data)) for i in item.params]
        argv = (ctypes.c_void_p * max(len(pointers), 1))(*pointers)
        getattr(library, f"te_launch_{k}")(argv)
    return collect_outputs(g, produced, feeds)
