"""LLVM setup for the host: target machine, the O3 pipeline, MCJIT and object files.

Follows ../shared/notes/llvmlite.md: opaque pointers in the IR layer, the host's CPU name and
features on every target machine (else generic SSE2 code), a fresh pass manager per module (running
one twice aborts the process), one MCJIT engine (with its own target machine) per compiled model,
loading the module's object code (kept per distinct module: ``machine_code``). The O3 pipeline runs
in a helper process (``tensoregg.targets.llvm.pipeline``, which says why), replaced every
``HELPER_MODULES`` modules.
"""

from __future__ import annotations

import os

os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

import atexit
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import llvmlite.binding as llvm
import llvmlite.ir as ir

from tensoregg.errors import CompileError
from tensoregg.targets.llvm import pipeline


def _initialized() -> bool:
    return pipeline.initialized()


def host_cpu() -> tuple[str, str]:
    """(LLVM CPU name, feature string) of this machine."""
    _initialized()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def target_machine(cpu: str = "", features: str = "", *, jit: bool = True, triple: str = "",
                   abiname: str = "") -> llvm.TargetMachine:
    """``pipeline.target_machine``, CompileError if LLVM has no backend for ``triple``."""
    try:
        return pipeline.target_machine(cpu, features, jit=jit, triple=triple, abiname=abiname)
    except pipeline.Rejected as exc:
        raise CompileError(str(exc)) from exc


def missing_features(features: str) -> list[str]:
    """The features of ``features`` (``+avx2,+fma,...``) that this host lacks: code for them would
    stop here with an illegal instruction."""
    _, host = host_cpu()
    have = {f[1:] for f in host.split(",") if f.startswith("+")}
    return sorted(f[1:] for f in features.split(",") if f.startswith("+") and f[1:] not in have)


HELPER_MODULES = 64
"""Modules the helper process optimizes before it is replaced: what LLVM keeps per module stays
bounded there (64 x 0.3 MB for modules like examples/tinycnn.onnx's) and none of it in this one."""


class _Helper:
    """The helper process running ``pipeline.serve``, and how many modules it has served."""

    lock = threading.Lock()
    process: subprocess.Popen[bytes] | None = None
    served = 0


def _compiled(kind: str, module: ir.Module, **machine: object) -> bytes:
    """``pipeline.build(kind, str(module), **machine)`` in the helper process (started, or replaced
    after ``HELPER_MODULES``, here); CompileError naming the module if LLVM refuses it or the helper
    dies on it."""
    text = str(module).encode()
    head = json.dumps({"kind": kind, "size": len(text), **machine}).encode() + b"\n"
    with _Helper.lock:
        proc = _Helper.process
        if proc is None or proc.poll() is not None or _Helper.served >= HELPER_MODULES:
            _stop_helper()
            proc = _Helper.process = subprocess.Popen(
                [sys.executable, "-I", pipeline.__file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            _Helper.served = 0
        _Helper.served += 1
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(head + text)
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            out = proc.stdout.read(reply["size"])
        except (OSError, ValueError) as exc:
            code = proc.wait()
            _Helper.process = None
            raise CompileError(f"LLVM's helper process died (exit status {code}) compiling the generated "
                               f"module {module.name!r}") from exc
    if reply["error"]:
        raise CompileError(f"LLVM rejected the generated module {module.name!r}: {reply['error']}")
    return out


def _stop_helper() -> None:
    proc, _Helper.process = _Helper.process, None
    if proc is not None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()


def _forget_helper() -> None:
    """In a forked child: the parent's helper and lock are the parent's; the child starts its own."""
    _Helper.lock, _Helper.process = threading.Lock(), None


atexit.register(_stop_helper)
os.register_at_fork(after_in_child=_forget_helper)


MACHINE_CODE_CACHE = 32
"""How many distinct modules' object code ``machine_code`` keeps (least recently used dropped)."""
_machine_code: OrderedDict[tuple[bytes, str, str], bytes] = OrderedDict()
_machine_code_lock = threading.Lock()


def machine_code(module: ir.Module, cpu: str = "", features: str = "") -> bytes:
    """``module`` optimized and compiled to an object file for the JIT on ``cpu`` with ``features``
    (default: the host's). The last ``MACHINE_CODE_CACHE`` distinct modules' objects are kept, keyed
    by their text: compiling a model again (a server reloading it, a test suite, a tuning loop) loads
    its object without running the O3 pipeline again, which is faster and keeps no more memory
    (see ``tensoregg.targets.llvm.pipeline``)."""
    if not cpu:
        cpu, features = host_cpu()
    key = (hashlib.sha256(_without_local_names(str(module)).encode()).digest(), cpu, features)
    with _machine_code_lock:
        if key in _machine_code:
            _machine_code.move_to_end(key)
            return _machine_code[key]
    code = _compiled("object", module, cpu=cpu, features=features)
    with _machine_code_lock:
        _machine_code[key] = code
        while len(_machine_code) > MACHINE_CODE_CACHE:
            _machine_code.popitem(last=False)
    return code


_LOCAL_NAME = re.compile(r'(%"|%|^"|^)([-a-zA-Z$._][-\w$.]*|(?<=")[^"]*)("?:?)', re.MULTILINE)


def _without_local_names(text: str) -> str:
    """The IR text with its local value and label names numbered in order of appearance: equal for
    modules that differ only in the fresh names of their loop variables (which every compile draws
    anew). Global names (``@``) are kept."""
    names: dict[str, str] = {}

    def number(m: re.Match[str]) -> str:
        sigil, name, end = m.groups()
        if not sigil and not end.endswith(":"):  # a word at the start of a line, not a label
            return m.group(0)
        return sigil + names.setdefault(name, f"n{len(names)}") + end

    return _LOCAL_NAME.sub(number, text)


class JitModule:
    """Machine code of an optimized module for ``cpu`` and ``features`` (default: the host's), alive
    as long as this object is."""

    def __init__(self, module: ir.Module, cpu: str = "", features: str = "") -> None:
        _initialized()
        code = machine_code(module, cpu, features)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine(cpu, features))
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        self.engine.finalize_object()

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise CompileError(f"function {name!r} not found in the compiled module")
        return int(addr)

    def global_address(self, name: str) -> int:
        """The address of the global variable ``name``."""
        addr = self.engine.get_global_value_address(name)
        if not addr:
            raise CompileError(f"global {name!r} not found in the compiled module")
        return int(addr)


def fastest(run: Callable[[], object], runs: int = 5) -> float:
    """The least wall time in seconds of ``runs`` calls of ``run`` (measuring native code)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def emit_object(module: ir.Module, cpu: str = "", features: str = "", *, triple: str = "",
                abiname: str = "") -> bytes:
    """``module`` optimized and compiled to a position-independent object file for ``cpu`` and
    ``features`` (default: the host's) of ``triple`` (default: the host's; see ``target_machine``)."""
    return _compiled("object", module, cpu=cpu, features=features, jit=False, triple=triple, abiname=abiname)


def emit_assembly(module: ir.Module, cpu: str = "", features: str = "", *, triple: str = "",
                  abiname: str = "") -> str:
    """The assembly text of what ``emit_object`` compiles (to check which instructions code uses)."""
    return _compiled("assembly", module, cpu=cpu, features=features, jit=False, triple=triple,
                     abiname=abiname).decode()
