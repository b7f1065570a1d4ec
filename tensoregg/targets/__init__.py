"""Targets: what a machine offers (its hardware facts, ``Target``), which rule families it uses, and
the registry through which ``compile`` finds a target by name.

A target is one folder here and one ``register_target`` call: its description, its code generator
and executor (``build``: optimized Graph -> ``Program``), and whether it can run on this machine.
Cost models and lowerings read only the Target. The built-in targets are ``ref`` (the reference
interpreter, ``targets/ref``) and ``llvm`` (native code for the host, ``targets/llvm``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tensoregg.errors import CompileError
from tensoregg.ir.intrinsics import MicroKernel

if TYPE_CHECKING:
    import numpy as np

    from tensoregg.ir import Graph

RULE_FAMILIES = ("algebra", "layout", "linalg", "parallel", "fusion")
"""The rule families a target saturates unless it says otherwise, in order: parallel before fusion,
so that merged MatMuls still get their epilogues fused."""


@dataclass(frozen=True)
class Target:
    name: str
    peak_flops: float
    """Floating-point operations per second, all cores this target uses."""
    mem_bandwidth: float
    """Bytes per second of main-memory traffic (read + write)."""
    kernel_overhead_s: float
    """Fixed cost of launching one kernel."""
    cpu: str = ""
    """LLVM's name of the CPU (``znver3``), for native targets."""
    features: str = ""
    """LLVM's CPU feature string (``+avx2,+fma,...``)."""
    vector_bits: int = 128
    """Width of the widest float vector register."""
    cores: int = 1
    """CPUs the target's code may run on."""
    caches: tuple[tuple[str, int], ...] = field(default=())
    """(level, bytes) of the data caches, e.g. (("L1", 32768), ("L2", 524288), ...)."""
    vector_registers: int = 16
    """Architectural float vector registers (16 ymm with AVX2, 32 zmm with AVX-512)."""
    microkernels: tuple[MicroKernel, ...] = ()
    """GEMM micro-kernels the target's code generator emits (tensorize candidates)."""
    rule_families: tuple[str, ...] = RULE_FAMILIES
    """The rule families (``tensoregg.rules.RULESETS`` keys) saturated for this target, in order."""


    @property
    def core_flops(self) -> float:
        """Peak floating-point operations per second of one core."""
        return self.peak_flops / max(self.cores, 1)

    @property
    def lanes(self) -> int:
        """fp32 lanes of the widest vector register."""
        return self.vector_bits // 32

    def cache(self, level: str, default: int) -> int:
        """Bytes of cache ``level`` (``L1``, ``L2``, ``L3``), ``default`` where unknown."""
        return dict(self.caches).get(level, default)


class Program(Protocol):
    """What a target's code generator makes of a Graph: ``run`` takes the inputs by name and returns
    the outputs in the Graph's order. A program that can use several threads has ``num_threads``."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Registration:
    """A target as ``compile`` finds it by name: its description, its code generator and executor
    (``build``), and whether it can run on this machine."""

    name: str
    summary: str
    """One line: what the target makes and where it runs."""
    describe: Callable[[], Target]
    """The target's hardware description (a host target measures itself on first use)."""
    build: Callable[[Graph, Target], Program]
    """Code generation and loading: an optimized Graph and the description -> a runnable Program."""
    unavailable: Callable[[], str | None] = lambda: None
    """Why the target cannot run here (a missing tool or device), or None where it can."""


_REGISTRY: dict[str, Registration] = {}


def register_target(name: str, *, summary: str, describe: Callable[[], Target],
                    build: Callable[[Graph, Target], Program],
                    unavailable: Callable[[], str | None] | None = None,
                    replace: bool = False) -> Registration:
    """Make target ``name`` known to ``compile``, ``explain`` and the ``tensoregg`` command. A second
    registration of a name is an error unless ``replace``."""
    if name in _REGISTRY and not replace:
        raise CompileError(f"target {name!r} is already registered (pass replace=True to replace it)")
    entry = Registration(name, summary, describe, build, unavailable or (lambda: None))
    _REGISTRY[name] = entry
    return entry


def available() -> list[str]:
    """The names of the registered targets."""
    return sorted(_REGISTRY)


def registration(name: str) -> Registration:
    """The registration of target ``name``; CompileError naming the known ones if there is none."""
    if name not in _REGISTRY:
        raise CompileError(f"unknown target {name!r}; available targets: {', '.join(available())}")
    return _REGISTRY[name]


def get_target(name: str) -> Target:
    """The description of target ``name`` (``llvm``: this host, measured on first use)."""
    return registration(name).describe()


from tensoregg.targets import llvm, ref  # noqa: E402  (the built-in targets register themselves)
from tensoregg.targets.ref import REF  # noqa: E402

__all__ = ["REF", "Program", "Registration", "Target",
           "available", "get_target", "llvm", "ref", "register_target", "registration"]
