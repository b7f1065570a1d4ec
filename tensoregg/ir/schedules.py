"""Schedule templates: how a kernel's loops are tiled, as terms with literal parameters.

A contraction kernel (MatMul, Gemm, Conv as an implicit GEMM, their fused forms) is ``batch``
independent products C[M, N] = A[M, K] @ B[K, N] (:class:`GemmProblem`). Its schedules form one
template, :class:`GemmSchedule`: the BLIS loop nest with its decisions filled in. Per task of one
parallel loop over ``batch x split_n x split_m`` tasks (each an N range and an M range)::

    for jc in N range, step nc:
      for pc in 0..K, step kc:
        pack B[pc:pc+kc, jc:jc+nc] into nr-wide panels     (unless B is constant: packed at compile time)
        for ic in M range, step mc:             # A block (mc x kc), read once per jc
          pack A[ic:ic+mc, pc:pc+kc] into mr-high panels    (unless A is constant)
          for ir in 0..mc, step mr:             # A micro-panel (mr x kc) lives in L1
            for jr in 0..nc, step nr:           # B block (kc x nc) lives in L2, streamed per ir
              micro-kernel: C[ir.., jr..] += A panel @ B panel (mr x nr in registers)
          (last pc: the kernel's epilogue on each finished tile)

The tiles of one A micro-panel run along C's rows (jr inner, unlike BLIS's ir inner), so the C tiles
(and an epilogue's residual) are written and read as ``mr`` streams moving forward through memory,
which the hardware prefetchers follow; BLIS's order jumps ``mr`` rows down C per tile (measured: a
1x1 Conv with K = 64 and a residual, 0.83 -> 0.70 ms in ResNet-50; 2048^3 GEMM 0.92 -> 1.01 of
OpenBLAS at one thread).

:class:`Untiled` is the default lowering (``tensoregg.ir.lower``), which always exists. The schedules
of a problem are enumerated by the llvm target's rules (``tensoregg.targets.llvm.gemm_schedules``) and
costed by its cost model (``tensoregg.extraction.kernel_cost``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tensoregg.ir.intrinsics import MicroKernel
from tensoregg.ir.target import Target

if TYPE_CHECKING:
    import numpy as np

    from tensoregg.ir.compute import Buffer
    from tensoregg.ir.contraction import Contraction
    from tensoregg.ir.loops import Stmt


@dataclass(frozen=True)
class GemmProblem:
    """``batch`` products of an M x K by a K x N matrix. ``pack_a`` / ``pack_b``: the operand is
    computed at run time and packed per block; False: it is a constant, packed once at compile time.
    ``row_form`` describes the alternative to tiling, for the cost model."""

    batch: int
    m: int
    n: int
    k: int
    pack_a: bool = True
    pack_b: bool = True
    dtype: str = "float32"
    row_form: bool = True
    """Whether the default lowering (``Untiled``) vectorizes output rows (else: one serial chain per
    element, for an output whose last axis is 1)."""

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k


@dataclass(frozen=True)
class GemmSchedule:
    """The BLIS nest above: block sizes ``mc`` (a multiple of the micro-kernel's ``mr``), ``nc`` (a
    multiple of its ``nr``) and ``kc``; M and N split into ``split_m`` x ``split_n`` parallel tasks."""

    ukernel: MicroKernel
    mc: int
    nc: int
    kc: int
    split_m: int = 1
    split_n: int = 1

    def __post_init__(self) -> None:
        mr, nr = self.ukernel.mr, self.ukernel.nr
        if min(self.mc, self.nc, self.kc, self.split_m, self.split_n, mr, nr) < 1:
            raise ValueError(f"{self}: every size must be positive")
        if self.mc % mr or self.nc % nr:
            raise ValueError(f"{self!r}: mc must be a multiple of mr ({mr}) and nc of nr ({nr})")

    def __str__(self) -> str:
        split = f" split {self.split_m}x{self.split_n}" if self.split_m * self.split_n > 1 else ""
        return f"tiled {self.ukernel.name} mc={self.mc} nc={self.nc} kc={self.kc}{split}"


@dataclass(frozen=True)
class Untiled:
    """The default lowering: loops over the output, the row form where it applies."""

    def __str__(self) -> str:
        return "untiled"


@runtime_checkable
class Template(Protocol):
    """A target's own tiled schedule of a contraction (a GPU's shared-memory tiles, say): it lowers
    the contraction itself, to loop IR the target's code generator and ``interp`` both run."""

    def lower(self, c: Contraction, known: Mapping[int, np.ndarray]
              ) -> tuple[list[Stmt], list[tuple[Buffer, np.ndarray]]]:
        """Loop IR computing ``c.out`` and the constants it made (buffer, value); ``known`` holds
        the values of the constant buffers (by Buffer id)."""
        ...


Schedule = GemmSchedule | Untiled | Template

Pricer = Callable[[Sequence[GemmProblem], Target], Sequence[Sequence[tuple[Schedule, float]]]]
"""A target's schedule templates with its cost model: for each problem (all of a model's at once),
its schedules on a description, each with its predicted seconds (``Untiled`` always among them)."""
