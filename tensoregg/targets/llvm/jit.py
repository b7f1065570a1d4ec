"""LLVM setup for the host: target machine, the O3 pipeline, MCJIT and object files.

Follows ../shared/notes/llvmlite.md: opaque pointers in the IR layer, the host's CPU name and
features on every target machine (else generic SSE2 code), a fresh pass manager per module (running
one twice aborts the process), one MCJIT engine (with its own target machine) per compiled model,
loading the module's object code (kept per distinct module: ``machine_code``).
"""

from __future__ import annotations

import os

os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

import ctypes
import ctypes.util
import functools
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import llvmlite.binding as llvm
import llvmlite.ir as ir

from tensoregg.errors import CompileError


@functools.cache
def _initialized() -> bool:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    libm = ctypes.util.find_library("m")
    if libm:  # math functions (erff, tanf, ...) resolved by the JIT from the C library
        llvm.load_library_permanently(libm)
    return True


def host_cpu() -> tuple[str, str]:
    """(LLVM CPU name, feature string) of this machine."""
    _initialized()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


@functools.cache
def _initialized_all() -> bool:
    """Every backend of the llvmlite build (AArch64, RISC-V...), for cross compilation."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    return True


def target_machine(cpu: str = "", features: str = "", *, jit: bool = True, triple: str = "",
                   abiname: str = "") -> llvm.TargetMachine:
    """A target machine for ``cpu`` with ``features`` (default: the host's) at O3, position-independent
    when not for the JIT. ``triple`` (default: the host's) selects another architecture (its generic
    CPU unless ``cpu`` is given), ``abiname`` its ABI where it has several (RISC-V: ``lp64d``, the
    hard-float ABI of Linux distributions)."""
    _initialized()
    if not cpu and not triple:
        cpu, features = host_cpu()
    if triple:
        _initialized_all()
        try:
            target = llvm.Target.from_triple(triple)
        except RuntimeError as exc:
            raise CompileError(f"LLVM has no backend for {triple!r}: {exc}") from exc
    else:
        target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=3,
                                        reloc="default" if jit else "pic",
                                        codemodel="jitdefault" if jit else "default", jit=jit,
                                        abiname=abiname)


def missing_features(features: str) -> list[str]:
    """The features of ``features`` (``+avx2,+fma,...``) that this host lacks: code for them would
    stop here with an illegal instruction."""
    _, host = host_cpu()
    have = {f[1:] for f in host.split(",") if f.startswith("+")}
    return sorted(f[1:] for f in features.split(",") if f.startswith("+") and f[1:] not in have)


def optimize(module: ir.Module, tm: llvm.TargetMachine) -> llvm.ModuleRef:
    """Parse, verify and run the O3 pipeline on ``module``; raise CompileError if LLVM rejects it.

    Running the pipeline keeps memory for the life of the process (llvmlite 0.50, LLVM 22), inside
    llvmlite's binding of the new pass manager: ``LLVMPY_CreatePassBuilder`` allocates a
    ``PassInstrumentationCallbacks`` that nothing deletes (about 32 KB once the pipeline is built),
    and each run keeps more in proportion to the module (malloc's bytes in use: 50 KB for a
    one-function module, 270 KB for examples/tinycnn.onnx's optimized one); nothing at O0, and
    neither a fresh LLVMContext, closing every llvmlite object nor ``malloc_trim`` releases it.
    ``machine_code`` therefore runs it once per distinct module."""
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    try:
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
    except RuntimeError as exc:
        raise CompileError(f"LLVM rejected the generated module {module.name!r}: {exc}") from exc
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = tuning.slp_vectorization = tuning.loop_unrolling = True
    tuning.loop_interleaving = False
    passes = llvm.create_pass_builder(tm, tuning)
    passes.getModulePassManager().run(parsed, passes)
    return parsed


MACHINE_CODE_CACHE = 32
"""How many distinct modules' object code ``machine_code`` keeps (least recently used dropped)."""
_machine_code: OrderedDict[tuple[bytes, str, str], bytes] = OrderedDict()
_machine_code_lock = threading.Lock()


def machine_code(module: ir.Module, cpu: str = "", features: str = "") -> bytes:
    """``module`` optimized and compiled to an object file for the JIT on ``cpu`` with ``features``
    (default: the host's). The last ``MACHINE_CODE_CACHE`` distinct modules' objects are kept, keyed
    by their text: compiling a model again (a server reloading it, a test suite, a tuning loop) loads
    its object without running the O3 pipeline again, which is faster and keeps no more memory
    (see ``optimize``)."""
    if not cpu:
        cpu, features = host_cpu()
    key = (hashlib.sha256(_without_local_names(str(module)).encode()).digest(), cpu, features)
    with _machine_code_lock:
        if key in _machine_code:
            _machine_code.move_to_end(key)
            return _machine_code[key]
    tm = target_machine(cpu, features)
    code = bytes(tm.emit_object(optimize(module, tm)))
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
    tm = target_machine(cpu, features, jit=False, triple=triple, abiname=abiname)
    return bytes(tm.emit_object(optimize(module, tm)))


def emit_assembly(module: ir.Module, cpu: str = "", features: str = "", *, triple: str = "",
                  abiname: str = "") -> str:
    """The assembly text of what ``emit_object`` compiles (to check which instructions code uses)."""
    tm = target_machine(cpu, features, jit=False, triple=triple, abiname=abiname)
    return str(tm.emit_assembly(optimize(module, tm)))
