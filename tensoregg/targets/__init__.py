"""Targets: what a machine offers (its hardware facts) and which rule families it uses.

Cost models and lowerings read only the Target. The figures of ``REF`` are this machine kind's
measured anchors (one AMD EPYC core: 102.7 GFLOP/s fp32 FMA peak, ~21 GB/s copy bandwidth, see
../shared/notes/anchors.md); the ``llvm`` target is the host, measured once and cached
(``tensoregg.targets.llvm.host``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

RULE_FAMILIES = ("algebra", "layout", "linalg", "parallel", "fusion")
"""The rule families a target saturates unless it says otherwise, in order: parallel before fusion,
so that merged MatMuls still get their epilogues fused."""


@dataclass(frozen=True)
class MicroKernel:
    """A register-blocked GEMM micro-kernel the target offers: an ``mr`` x ``nr`` tile of C updated by
    ``kc`` outer products of a packed A panel (``mr`` rows) and a packed B panel (``nr`` columns),
    held in vector registers (``nr`` is a multiple of the vector lanes). Tensorize rules match it."""

    name: str
    mr: int
    nr: int
    dtype: str = "float32"
    efficiency: float = 0.0
    """Fraction of the core's FMA peak it reaches on panels in L1, measured on the host (0: unknown)."""


@dataclass(frozen=True)
class PanelTranspose:
    """Packs ``width`` rows of a row-major float32 matrix (k contiguous, rows ``ld`` apart) into a
    micro-kernel panel, k-major: ``P[k * width + r] = X[min(r, rows - 1) * ld + k]``. A transpose,
    which vectorized loops do with scatters or gathers (about a cycle an element); the target does it
    with vector shuffles."""

    width: int

    @property
    def name(self) -> str:
        return f"pack_rows_f32_{self.width}"


@dataclass(frozen=True)
class PanelRuns:
    """Packs a panel of ``width`` lines whose elements at each k lie in at most ``runs`` runs of
    consecutive floats (an im2col panel of a stride-1 Conv: one run per output row it spans):
    ``P[k * width + lane] = X[ks[k] + base + lane]`` for the lanes ``start <= lane < end`` of each run
    (start, end, base), k < kc; lanes in no run are not written. Where vectorized loops gather, the
    target copies each run with masked vector loads and stores."""

    width: int
    runs: int

    @property
    def name(self) -> str:
        return f"pack_runs_f32_{self.width}x{self.runs}"


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


REF = Target("ref", peak_flops=102.7e9, mem_bandwidth=21e9, kernel_overhead_s=2e-6)

TARGETS = ("ref", "llvm")


def get_target(name: str) -> Target:
    """The description of target ``name`` (``llvm``: this host, measured on first use)."""
    if name == "ref":
        return REF
    if name == "llvm":
        from tensoregg.targets.llvm.host import host_target

        return host_target()
    from tensoregg.errors import CompileError

    raise CompileError(f"unknown target {name!r}; available targets: {', '.join(TARGETS)}")
