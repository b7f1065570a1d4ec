"""The intrinsics a loop program may ``Invoke`` (``tensoregg.ir.loops``): what each computes, stated
here once, target-neutral. A target declares which it offers (``Target.microkernels``) and emits
their code; the interpreter and the tests compute them from these definitions."""

from __future__ import annotations

from dataclasses import dataclass


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
