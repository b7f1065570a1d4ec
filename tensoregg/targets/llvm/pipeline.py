"""LLVM's O3 pipeline and object emission from IR text, importing llvmlite alone, so that
``tensoregg.targets.llvm.jit`` can run it in a helper process (this file as a script, serving
requests on its stdin).

Why a helper process: running the pipeline keeps memory for the life of the process (llvmlite 0.50,
LLVM 22): ``LLVMPY_CreatePassBuilder`` allocates a ``PassInstrumentationCallbacks`` that nothing
deletes (about 32 KB once the pipeline is built), and each run keeps more in proportion to the work
the passes do (malloc's bytes in use: about 50 KB for a one-function module, 280 KB for
examples/tinycnn.onnx's optimized one, 116 KB of that at O1, nothing at O0), the same for the same
text run twice, and neither a fresh LLVMContext or target machine, closing every llvmlite object nor
``malloc_trim`` releases it. Parsing and code generation alone keep nothing.

Protocol: a request is one JSON line (``kind``: ``object`` or ``assembly``, ``size``, and
``target_machine``'s arguments) followed by ``size`` bytes of IR text; the reply is one JSON line
(``size``, and ``error`` where LLVM refused) followed by ``size`` bytes of output.
"""

from __future__ import annotations

import ctypes.util
import functools
import json
import sys
from typing import IO, Any

import llvmlite.binding as llvm

NO_UNROLL = "tensoregg.no_unroll"
"""Named metadata a module holds (``!tensoregg.no_unroll = !{}``) to be optimized without loop
unrolling: what its code generator asks for a module whose loops gain little from it (a tiled GEMM's
tile and packing loops around its micro-kernel call; the micro-kernel, its own module, keeps it)."""


class Rejected(Exception):
    """LLVM refused the module or the target (the message says why)."""


@functools.cache
def initialized() -> bool:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    libm = ctypes.util.find_library("m")
    if libm:  # math functions (erff, tanf, ...) resolved by the JIT from the C library
        llvm.load_library_permanently(libm)
    return True


@functools.cache
def initialized_all() -> bool:
    """Every backend of the llvmlite build (AArch64, RISC-V...), for cross compilation."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    return True


def target_machine(cpu: str = "", features: str = "", *, jit: bool = True, triple: str = "",
                   abiname: str = "") -> llvm.TargetMachine:
    """A target machine for ``cpu`` with ``features`` (default: the host's) at O3, position-independent
    when not for the JIT. ``triple`` (default: the host's) selects another architecture (its generic
    CPU unless ``cpu`` is given), ``abiname`` its ABI where it has several (RISC-V: ``lp64d``, the
    hard-float ABI of Linux distributions). Rejected if LLVM has no backend for ``triple``."""
    initialized()
    if not cpu and not triple:
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    if triple:
        initialized_all()
        try:
            target = llvm.Target.from_triple(triple)
        except RuntimeError as exc:
            raise Rejected(f"LLVM has no backend for {triple!r}: {exc}") from exc
    else:
        target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=3,
                                        reloc="default" if jit else "pic",
                                        codemodel="jitdefault" if jit else "default", jit=jit,
                                        abiname=abiname)


_machine = functools.cache(target_machine)


def optimize(text: str, tm: llvm.TargetMachine, careful: bool = False) -> llvm.ModuleRef:
    """Parse and verify ``text`` for ``tm`` and run the O3 pipeline on it (without loop unrolling
    where the module holds ``NO_UNROLL``; ``careful``: without unrolling or SLP vectorization, the
    passes whose output has crashed LLVM's code generators); Rejected if LLVM refuses it."""
    try:
        parsed = llvm.parse_assembly(text)
        parsed.triple = tm.triple
        parsed.data_layout = str(tm.target_data)
        parsed.verify()
    except RuntimeError as exc:
        raise Rejected(str(exc)) from exc
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization, tuning.slp_vectorization = True, not careful
    tuning.loop_unrolling = not careful and f"!{NO_UNROLL} = " not in text
    tuning.loop_interleaving = False
    passes = llvm.create_pass_builder(tm, tuning)
    passes.getModulePassManager().run(parsed, passes)
    return parsed


def build(kind: str, text: str, careful: bool = False, **machine: Any) -> bytes:
    """``text`` optimized (``careful``: see ``optimize``) and emitted as an object file (``kind``
    ``object``) or assembly text (``assembly``, UTF-8) for ``target_machine(**machine)`` (made once per
    process and machine)."""
    tm = _machine(**machine)
    module = optimize(text, tm, careful)
    if kind == "assembly":
        return str(tm.emit_assembly(module)).encode()
    return bytes(tm.emit_object(module))


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """Answer requests (see the module docstring) until ``requests`` ends."""
    while line := requests.readline():
        head = json.loads(line)
        text = requests.read(head.pop("size")).decode()
        try:
            out, error = build(head.pop("kind"), text, **head), ""
        except Rejected as exc:
            out, error = b"", str(exc)
        replies.write(json.dumps({"size": len(out), "error": error}).encode() + b"\n" + out)
        replies.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
