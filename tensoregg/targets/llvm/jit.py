"""LLVM setup for the host: target machine, the O3 pipeline, MCJIT and object files.

Follows ../shared/notes/llvmlite.md: opaque pointers in the IR layer, the host's CPU name and
features on every target machine (else generic SSE2 code), a fresh pass manager per module (running
one twice aborts the process), one MCJIT engine (with its own target machine) per compiled model,
loading its modules' object code (a module per kernel, kept by text in memory and on disk:
``machine_codes``). The O3 pipeline runs in helper processes (``tensoregg.targets.llvm.helpers``;
``tensoregg.targets.llvm.pipeline`` says why), several at once.
"""

from __future__ import annotations

import os

os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import llvmlite.binding as llvm
import llvmlite.ir as ir

from tensoregg.errors import CompileError
from tensoregg.targets.llvm import helpers, objcache, pipeline


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


MACHINE_CODE_BYTES = 64 << 20
"""How many bytes of object code ``machine_codes`` keeps in memory (least recently used dropped)."""
_machine_code: OrderedDict[str, bytes] = OrderedDict()
_machine_code_lock = threading.Lock()


def _remembered(key: str) -> bytes | None:
    with _machine_code_lock:
        code = _machine_code.get(key)
        if code is not None:
            _machine_code.move_to_end(key)
    return code if code is not None else objcache.load(key)


def _remember(key: str, code: bytes) -> None:
    with _machine_code_lock:
        _machine_code[key] = code
        total = sum(map(len, _machine_code.values()))
        while total > MACHINE_CODE_BYTES and len(_machine_code) > 1:
            total -= len(_machine_code.popitem(last=False)[1])


def machine_codes(modules: Sequence[ir.Module], cpu: str = "", features: str = "", *, jit: bool = True,
                  triple: str = "", abiname: str = "") -> list[bytes]:
    """Each of ``modules`` optimized and compiled to an object file for ``cpu`` and ``features``
    (default: the host's) of ``triple`` (default: the host's; see ``target_machine``), for the JIT or
    position-independent. Object code is kept by the text of its module, in memory
    (``MACHINE_CODE_BYTES``) and on disk (``objcache``): a module compiled before, by this process or
    another, is not compiled again, which is faster and keeps no more memory (see
    ``tensoregg.targets.llvm.pipeline``). The others are compiled on several cores at once
    (``helpers.build_all``)."""
    if not cpu and not triple:
        cpu, features = host_cpu()
    machine: dict[str, object] = {"cpu": cpu, "features": features, "jit": jit, "triple": triple,
                                  "abiname": abiname}
    texts = [str(m) for m in modules]
    keys = [objcache.key(_without_local_names(t), "object", machine) for t in texts]
    found: dict[str, bytes] = {}
    todo: dict[str, int] = {}
    for k, key in enumerate(keys):
        if key not in found and key not in todo:
            code = _remembered(key)
            if code is None:
                todo[key] = k
            else:
                found[key] = code
    if todo:
        built = helpers.build_all([helpers.Request("object", texts[k], modules[k].name, machine)
                                   for k in todo.values()])
        fresh = dict(zip(todo, built))
        objcache.store(fresh)
        found |= fresh
    for key in keys:
        _remember(key, found[key])
    return [found[key] for key in keys]


def machine_code(module: ir.Module, cpu: str = "", features: str = "") -> bytes:
    """``module`` optimized and compiled to an object file for the JIT (see ``machine_codes``)."""
    return machine_codes([module], cpu, features)[0]


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
    """Machine code of optimized modules for ``cpu`` and ``features`` (default: the host's), alive
    as long as this object is."""

    def __init__(self, modules: ir.Module | Sequence[ir.Module], cpu: str = "", features: str = "") -> None:
        _initialized()
        codes = machine_codes([modules] if isinstance(modules, ir.Module) else modules, cpu, features)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine(cpu, features))
        for code in codes:  # linked together: a symbol one object declares is another's definition
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


def emit_objects(modules: Sequence[ir.Module], cpu: str = "", features: str = "", *, triple: str = "",
                 abiname: str = "") -> list[bytes]:
    """``modules`` optimized and compiled to position-independent object files (see ``machine_codes``)."""
    return machine_codes(modules, cpu, features, jit=False, triple=triple, abiname=abiname)


def emit_assembly(module: ir.Module, cpu: str = "", features: str = "", *, triple: str = "",
                  abiname: str = "") -> str:
    """The assembly text of what ``emit_objects`` compiles for ``module`` (to check which instructions
    code uses)."""
    machine: dict[str, object] = {"cpu": cpu, "features": features, "jit": False, "triple": triple,
                                  "abiname": abiname}
    return helpers.build(helpers.Request("assembly", str(module), module.name, machine)).decode()
