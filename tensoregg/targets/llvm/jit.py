"""LLVM setup for the host: target machine, the O3 pipeline, MCJIT and object files.

Follows ../shared/notes/llvmlite.md: opaque pointers in the IR layer, the host's CPU name and
features on every target machine (else generic SSE2 code), a fresh pass manager per module (running
one twice aborts the process), one MCJIT engine (with its own target machine) per compiled model.
"""

from __future__ import annotations

import os

os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

import ctypes
import ctypes.util
import functools
import time
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

    Running the pipeline keeps memory for the life of the process (llvmlite 0.50, LLVM 22): about
    60 KB per run for a one-function module, 0.3 MB for examples/tinycnn.onnx's; nothing at O0, and
    neither a fresh PassBuilder, a fresh LLVMContext, closing every llvmlite object nor
    ``malloc_trim`` releases it. It is the memory a compile leaves behind, inside llvmlite's
    binding of the new pass manager, not tensoregg's."""
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


class JitModule:
    """Machine code of an optimized module for ``cpu`` and ``features`` (default: the host's), alive
    as long as this object is."""

    def __init__(self, module: ir.Module, cpu: str = "", features: str = "") -> None:
        _initialized()
        tm = target_machine(cpu, features)
        self.llvm_module = optimize(module, tm)
        self.engine = llvm.create_mcjit_compiler(self.llvm_module, tm)
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
