"""The intrinsics a loop program may ``Invoke`` (``tensoregg.ir.loops``): what each computes, stated
here once, target-neutral. A target declares which it offers (``Target.microkernels``) and emits
their code; the interpreter and the tests compute them from these definitions."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


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


WARP = 32
"""The threads of a warp: consecutive threads of a block's thread loop."""


@dataclass(frozen=True)
class WarpMMA:
    """A warp's matrix multiply-accumulate ``mma.sync.aligned.m{m}n{n}k{k}.row.col.f32.{ab}.{ab}.f32``:
    D (m x n, fp32) = A (m x k) . B (k x n) + C, with A and B in ``ab`` (``f16``, ``bf16``, or ``tf32``:
    fp32 values rounded to 10 mantissa bits, to nearest with ties away, as ``cvt.rna.tf32.f32``).
    The 32 threads of a warp invoke it together, ``Invoke(mma, (Ref(a), Ref(b), Ref(c), Ref(d)))``,
    each with its own fragments: locals of its thread loop (registers) holding ``fragment(operand)``
    elements from the address given, in the order of :meth:`layout` (the PTX ISA's "Matrix
    Fragments for mma.m16n8k16 / m16n8k8"). Products and sums are fp32 (here: exact products, one
    rounding of the sum; the tensor cores' order differs: compare with a tolerance)."""

    m: int
    n: int
    k: int
    ab: str

    @property
    def name(self) -> str:
        return f"mma.sync.aligned.m{self.m}n{self.n}k{self.k}.row.col.f32.{self.ab}.{self.ab}.f32"

    @property
    def dtype(self) -> np.dtype:
        """The element type of the A and B fragments' buffers (tf32 is held in float32)."""
        return np.dtype({"f16": np.float16, "bf16": ml_dtypes.bfloat16, "tf32": np.float32}[self.ab])

    def fragment(self, operand: str) -> int:
        """How many elements of ``operand`` (``a``, ``b``, ``c``: C and D alike) each thread holds."""
        rows, cols = {"a": (self.m, self.k), "b": (self.k, self.n), "c": (self.m, self.n)}[operand]
        return rows * cols // WARP

    def layout(self, operand: str) -> tuple[np.ndarray, np.ndarray]:
        """Where each thread's fragment elements lie in ``operand``'s matrix: (row, col) arrays of shape
        (32, ``fragment(operand)``), indexed by lane (thread index % 32) and element; for B the row
        is k and the column n. The one statement of the layout: the interpreter gathers and scatters
        with it, code generators index fragments by it."""
        lane = np.arange(WARP)[:, None]
        g, t = lane >> 2, lane & 3
        i = np.arange(self.fragment(operand))[None, :]
        if operand == "c":
            row, col = g + 8 * (i >> 1), 2 * t + (i & 1)
        elif self.ab == "tf32" and operand == "a":      # m16n8k8: a0 a1 a2 a3 one per .b32 register
            row, col = g + 8 * (i & 1), t + 4 * (i >> 1)
        elif self.ab == "tf32":
            row, col = t + 4 * i, g
        elif operand == "a":                            # m16n8k16: two elements per .f16x2 register
            row, col = g + 8 * ((i >> 1) & 1), 2 * t + (i & 1) + 8 * (i >> 2)
        else:
            row, col = 2 * t + (i & 1) + 8 * (i >> 1), g
        shape = (WARP, i.shape[1])
        return np.broadcast_to(row, shape), np.broadcast_to(col, shape)


MMA_F16 = WarpMMA(16, 8, 16, "f16")
MMA_BF16 = WarpMMA(16, 8, 16, "bf16")
MMA_TF32 = WarpMMA(16, 8, 8, "tf32")
WARP_MMAS = (MMA_F16, MMA_BF16, MMA_TF32)
"""The warp MMAs of sm_80 and later with fp32 accumulators."""


@dataclass(frozen=True)
class WarpShuffle:
    """A warp's butterfly exchange ``shfl.sync.bfly.b32`` (CUDA's ``__shfl_xor_sync(0xffffffff, v,
    mask)``) of one float32 register: the 32 threads of a warp invoke it together, all of them,
    ``Invoke(WARP_SHUFFLE, (Ref(dst), Ref(src), mask))`` with ``dst`` and ``src`` locals of their
    thread loop (registers) and ``mask`` a constant below 32; each thread's ``dst`` element gets the
    ``src`` element of the thread whose lane is its own xor ``mask``. Bits move as they are."""

    @property
    def name(self) -> str:
        return "shfl.sync.bfly.b32"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)


WARP_SHUFFLE = WarpShuffle()


ASYNC_BYTES = (4, 8, 16)
"""The sizes ``cp.async`` copies: ``.ca`` all of them, ``.cg`` (bypassing L1) 16 bytes only."""


@dataclass(frozen=True)
class AsyncCopy:
    """A thread's asynchronous copy of ``width`` consecutive elements of ``dtype`` (``width *
    dtype.itemsize`` in :data:`ASYNC_BYTES`) from global into shared memory, ``cp.async`` (sm_80):
    ``Invoke(copy, (Ref(dst), Ref(src), count))``, ``dst`` a shared local and ``src`` a param, both
    aligned to the copy's size; the first ``count`` elements (0 <= count <= width) are read from
    ``src``, the rest of ``dst`` is filled with zeros (``count`` 0: ``src`` is not read). The copy
    joins the thread's open group (:class:`AsyncCommit` closes it); ``dst`` holds the data only
    once the thread has waited for the group (:class:`AsyncWait`), and neither the thread nor any
    other may read or write ``dst`` before: other threads see it after a barrier that follows the
    wait."""

    width: int
    dtype: np.dtype

    @property
    def bytes(self) -> int:
        return self.width * self.dtype.itemsize

    @property
    def name(self) -> str:
        return f"cp.async.{'cg' if self.bytes == 16 else 'ca'}.shared.global.{self.bytes}"


@dataclass(frozen=True)
class AsyncCommit:
    """``cp.async.commit_group``: the thread's asynchronous copies since its last commit become one
    group, ``Invoke(ASYNC_COMMIT, ())``; every thread of a block commits together."""

    @property
    def name(self) -> str:
        return "cp.async.commit_group"


@dataclass(frozen=True)
class AsyncWait:
    """``cp.async.wait_group pending``: the thread waits until at most ``pending`` of its committed
    groups are still in flight (the newest ones); the copies of the others have landed.
    ``Invoke(AsyncWait(n), ())``; every thread of a block waits together."""

    pending: int

    @property
    def name(self) -> str:
        return f"cp.async.wait_group {self.pending}"


ASYNC_COMMIT = AsyncCommit()
ASYNC_INTRINSICS = (AsyncCopy, AsyncCommit, AsyncWait)


@dataclass(frozen=True)
class LoadMatrix:
    """A warp's load of ``count`` (2 or 4) 8 x 8 matrices of 16-bit elements from shared memory into
    registers, ``ldmatrix.sync.aligned.m8n8.x{count}.shared.b16``: the 32 threads of a warp invoke it
    together, ``Invoke(ldm, (Ref(dst), Ref(src)))``, ``dst`` a local of their thread loop (registers)
    and ``src`` a shared local; lane ``8 j + r`` gives the address of row r of matrix j (8
    consecutive elements, 16-byte aligned; lanes from ``8 count`` on are ignored). Each thread gets
    2 elements of each matrix j, of row ``lane // 4`` and columns ``2 (lane % 4)`` and ``2 (lane % 4)
    + 1``, into ``dst`` elements ``2 j`` and ``2 j + 1`` (PTX ISA, "Warp-level matrix load
    instruction: ldmatrix": the layout of an mma.m16n8k16 A fragment for x4 over its four 8 x 8
    quarters, of a B fragment for x2 over its two)."""

    count: int
    dtype: np.dtype
    trans: bool = False
    """``.trans``: each matrix transposed on the way: thread l gets rows ``2 (l % 4)`` and ``+ 1``
    of column ``l // 4`` (a B fragment from a k-major tile)."""

    @property
    def name(self) -> str:
        return f"ldmatrix.sync.aligned.m8n8.x{self.count}{'.trans' if self.trans else ''}.shared.b16"

    def rows(self, lane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each (lane, element ``2 j + e``) of ``dst``: the lane whose address gives the row
        (``8 j + lane // 4``; transposed ``8 j + 2 (lane % 4) + e``), and the column in that row
        (``2 (lane % 4) + e``; transposed ``lane // 4``)."""
        j, e = np.divmod(np.arange(2 * self.count), 2)
        lane = lane[:, None]
        if self.trans:
            return 8 * j + 2 * (lane % 4) + e, np.broadcast_to(lane // 4, (lane.shape[0], j.size))
        return 8 * j + lane // 4, 2 * (lane % 4) + e


@dataclass(frozen=True)
class VectorCopy:
    """A thread's copy of ``width`` consecutive elements of ``dtype`` (16 bytes: ``float4``,
    ``half2 x 4``) between global memory and its registers in one access:
    ``Invoke(copy, (Ref(dst), Ref(src)))``, one of them a param (its offset a multiple of
    ``width``: the access is aligned), the other a local of the thread."""

    width: int
    dtype: np.dtype

    @property
    def name(self) -> str:
        return f"ld/st.global.v{self.width * self.dtype.itemsize // 4}.b32"
