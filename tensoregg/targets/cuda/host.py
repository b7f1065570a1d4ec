"""The CUDA C of a compiled program run on this CPU (``tensoregg.runtime.cuda.HostBackend``): a
check of the generated C itself (what NVRTC compiles), where the ``interp`` emulation checks the loop
program it was written from."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tensoregg.runtime.cuda import HostBackend
from tensoregg.targets.cuda.export import cuda_code
from tensoregg.targets.cuda.program import CudaProgram


def check_on_host(program: CudaProgram, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``program``'s CUDA C on this CPU on ``feeds``."""
    code = cuda_code(program)
    return code.run_with(HostBackend(code), feeds)
