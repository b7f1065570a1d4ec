"""The intrinsics of ``tensoregg.ir.intrinsics`` computed with numpy from their definitions, on flat
buffer memory, every element they read or write checked to lie in the addressed buffer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tensoregg.errors import CompileError, GuardViolation, UnsupportedOperator
from tensoregg.ir.intrinsics import MicroKernel, PanelRuns, PanelTranspose

F32, F64, I64 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)

SIGNATURES = {MicroKernel: "iRRRiiii", PanelTranspose: "iRiiR", PanelRuns: "iRRRR"}
"""Per intrinsic, its arguments: ``R`` an address (``Ref``), ``i`` an i64 value."""
OPERANDS = {MicroKernel: (F32, F32, F32), PanelTranspose: (F32, F32), PanelRuns: (F32, I64, I64, F32)}
"""Per intrinsic, the element type of each address it takes, in order."""


@dataclass
class Span:
    """The memory from element ``offset`` of a flat buffer ``memory`` named ``name``."""

    memory: np.ndarray
    offset: int
    name: str

    def at(self, index: np.ndarray, where: str) -> np.ndarray:
        """``offset + index``, GuardViolation naming ``where`` if one lies outside the buffer."""
        at = self.offset + np.asarray(index, I64)
        if at.size and (at.min() < 0 or at.max() >= self.memory.size):
            bad = at[(at < 0) | (at >= self.memory.size)].flat[0]
            raise GuardViolation(f"{where}: element {bad} of {self.name} is outside it "
                                 f"({self.memory.size} elements)")
        return at

    def read(self, index: np.ndarray, where: str) -> np.ndarray:
        return self.memory[self.at(index, where)]

    def write(self, index: np.ndarray, values: np.ndarray, where: str) -> None:
        if not self.memory.flags.writeable:
            raise GuardViolation(f"{where}: writes into {self.name}, an input or constant")
        self.memory[self.at(index, where)] = values


def check_signature(intrinsic: object, refs: Sequence[bool], dtypes: Sequence[np.dtype], where: str) -> None:
    """CompileError unless an Invoke of ``intrinsic`` has the arguments its definition takes
    (``refs``: which are addresses; ``dtypes``: the addressed buffers' element types)."""
    kind = type(intrinsic)
    if kind not in SIGNATURES:
        raise UnsupportedOperator(f"intrinsic {intrinsic!r}", target="interp",
                                  detail=f"no definition ({where})")
    got = "".join("R" if r else "i" for r in refs)
    if got != SIGNATURES[kind] or tuple(dtypes) != OPERANDS[kind]:
        name = getattr(intrinsic, "name", intrinsic)
        raise CompileError(f"{where}: invoke of {name} with arguments {got} of {[str(d) for d in dtypes]}; "
                           f"it takes {SIGNATURES[kind]} of {[str(d) for d in OPERANDS[kind]]}")


def execute(intrinsic: object, args: Sequence[Span | int], where: str) -> None:
    """Run ``intrinsic`` on ``args`` (checked by ``check_signature``)."""
    name = f"{where}: {getattr(intrinsic, 'name', intrinsic)}"
    if isinstance(intrinsic, MicroKernel):
        microkernel(intrinsic, *args, where=name)  # type: ignore[arg-type]
    elif isinstance(intrinsic, PanelTranspose):
        panel_transpose(intrinsic, *args, where=name)  # type: ignore[arg-type]
    elif isinstance(intrinsic, PanelRuns):
        panel_runs(intrinsic, *args, where=name)  # type: ignore[arg-type]


def microkernel(uk: MicroKernel, kc: int, a: Span, b: Span, c: Span, ldc: int, m: int, n: int,
                accumulate: int, *, where: str) -> None:
    """C[r, c] (row stride ``ldc``) for r < m, c < n: from C (``accumulate``) or 0, then one fused
    multiply-add per k of the packed panels, A[k * mr + r] * B[k * nr + c], in k order. Each FMA is
    computed in float64 and rounded once to float32 (exact but for the rare double rounding)."""
    if m > uk.mr or n > uk.nr:
        raise CompileError(f"{where}: a {m} x {n} tile exceeds the micro-kernel's {uk.mr} x {uk.nr}")
    kc = max(kc, 0)
    panel_a = a.read(np.arange(kc * uk.mr), where).reshape(kc, uk.mr)[:, :max(m, 0)].astype(F64)
    panel_b = b.read(np.arange(kc * uk.nr), where).reshape(kc, uk.nr)[:, :max(n, 0)].astype(F64)
    tile = np.arange(max(m, 0))[:, None] * ldc + np.arange(max(n, 0))[None, :]
    acc = c.read(tile, where) if accumulate else np.zeros(tile.shape, F32)
    for k in range(kc):
        acc = (acc + np.multiply.outer(panel_a[k], panel_b[k])).astype(F32)
    c.write(tile, acc, where)


def panel_transpose(pack: PanelTranspose, kc: int, x: Span, ld: int, rows: int, p: Span, *,
                    where: str) -> None:
    """P[k * width + r] = X[min(r, rows - 1) * ld + k] for k < kc, r < width."""
    k = np.arange(max(kc, 0))[:, None]
    r = np.minimum(np.arange(pack.width), rows - 1)[None, :]
    p.write(k * pack.width + np.arange(pack.width)[None, :], x.read(r * ld + k, where), where)


def panel_runs(pack: PanelRuns, kc: int, x: Span, ks: Span, runs: Span, p: Span, *, where: str) -> None:
    """P[k * width + lane] = X[ks[k] + base + lane] for k < kc and the lanes start <= lane < end of each
    run (start, end, base) of ``runs``; other lanes are not written."""
    offsets = ks.read(np.arange(max(kc, 0)), where)[:, None]
    k = np.arange(max(kc, 0))[:, None]
    for start, end, base in runs.read(np.arange(3 * pack.runs), where).reshape(pack.runs, 3):
        lanes = np.arange(start, end)[None, :]
        if lanes.size:
            p.write(k * pack.width + lanes, x.read(offsets + base + lanes, where), where)
