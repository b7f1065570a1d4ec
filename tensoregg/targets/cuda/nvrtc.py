"""CUDA C -> cubin with NVRTC (the ``nvidia-cuda-nvrtc`` wheel through ``cuda-bindings``; no GPU
needed), and what ptxas said of each kernel: registers, spills, shared memory."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tensoregg.errors import CompileError

OPTIONS = ("--fmad=false", "--std=c++17", "-default-device", "--ptxas-options=-v")
"""NVRTC options of every build: no contraction but the code's own ``fma`` (the loop IR's rounding),
device code by default, ptxas's resource report in the log."""


@dataclass(frozen=True)
class Resources:
    """What ptxas reports for one kernel."""

    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    shared_bytes: int


@dataclass(frozen=True)
class Cubin:
    """A compiled module: the cubin for ``arch``, NVRTC's log and each kernel's resources."""

    arch: str
    image: bytes
    log: str
    resources: dict[str, Resources]


def nvrtc_missing() -> str | None:
    """Why NVRTC cannot run here (its Python bindings or library absent), or None."""
    try:
        from cuda.bindings import nvrtc

        _check(nvrtc.nvrtcVersion(), "nvrtcVersion")
    except Exception as exc:  # ImportError, or the library not found (a RuntimeError)
        return f"NVRTC is not available ({exc}); pip install 'tensoregg[cuda]'"
    return None


def compile_source(source: str, arch: str, name: str = "model.cu") -> Cubin:
    """Compile ``source`` for ``arch`` (``sm_80``, ``sm_90``); CompileError with NVRTC's log on failure."""
    from cuda.bindings import nvrtc

    missing = nvrtc_missing()
    if missing:
        raise CompileError(missing)
    prog = _check(nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], []), "nvrtcCreateProgram")
    try:
        options = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in OPTIONS)]
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log_bytes = b" " * size
        _check(nvrtc.nvrtcGetProgramLog(prog, log_bytes), "nvrtcGetProgramLog")
        log = log_bytes.rstrip(b"\0 ").decode(errors="replace")
        if int(status) != 0:
            raise CompileError(f"NVRTC could not compile {name} for {arch}:\n{_errors(log)}")
        size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        image = b" " * size
        _check(nvrtc.nvrtcGetCUBIN(prog, image), "nvrtcGetCUBIN")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return Cubin(arch, image, log, parse_resources(log))


def parse_resources(log: str) -> dict[str, Resources]:
    """Each kernel's resources from ptxas's verbose report in ``log``."""
    out: dict[str, Resources] = {}
    for block in re.split(r"ptxas info\s*: Compiling entry function ", log)[1:]:
        name = re.match(r"'([^']+)'", block)
        frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                          block)
        used = re.search(r"Used (\d+) registers", block)
        smem = re.search(r"(\d+) bytes smem", block)
        if name and frame and used:
            stack, stores, loads = (int(x) for x in frame.groups())
            out[name.group(1)] = Resources(int(used.group(1)), stores, loads, stack,
                                           int(smem.group(1)) if smem else 0)
    return out


def _errors(log: str, limit: int = 40) -> str:
    lines = [line for line in log.splitlines() if "error" in line or "warning" in line] or log.splitlines()
    return "\n".join(lines[:limit])


def _check(result: tuple, call: str):  # type: ignore[no-untyped-def, type-arg]
    status, *values = result
    if int(status) != 0:
        raise CompileError(f"{call} failed: {status}")
    return values[0] if len(values) == 1 else tuple(values)
