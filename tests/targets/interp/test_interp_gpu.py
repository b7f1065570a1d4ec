"""GPU kernels on the interpreter: blocks and threads, shared memory and barriers, the race checker,
the structure rules, the warp MMA with its fragment layout and the warp shuffle, on hand-written
kernels."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.errors import CompileError, GuardViolation, RaceError
from tensoregg.ir.compute import INDEX, Buffer, Var, call, cast, const
from tensoregg.ir.intrinsics import MMA_BF16, MMA_F16, MMA_TF32, WARP_MMAS, WARP_SHUFFLE, LoadMatrix
from tensoregg.ir.loops import Barrier, For, Invoke, Kernel, Local, Ref, Store
from tensoregg.targets.interp.executor import KernelExecutor

F32, F16 = np.dtype(np.float32), np.dtype(np.float16)
RNG = np.random.default_rng(0)


def run(kernel, *data):
    """Run ``kernel`` on ``data`` (one array per param, written in place)."""
    KernelExecutor(kernel, f"kernel {kernel.name}", {}, set()).run([a.reshape(-1) for a in data])


def idx(n):
    return const(n, INDEX)


def loop(var, stop, body, kind="serial", unpack=()):
    """``for var in [0, stop)``."""
    return For(var, idx(0), idx(stop), body, kind, unpack)


def ceil(a, b):
    return -(-a // b)


def guard(var, at, stop, body, unpack=()):
    """``for var in [at, min(at + 1, stop))``: 0 or 1 iterations, the scheduler's guard of a tail."""
    return For(var, at, call("min", at + 1, idx(stop)), body, unpack=unpack)


# ---- element-wise ---------------------------------------------------------------------------------

def elementwise(rows, cols, threads):
    """y[r, c] = 2 x[r, c] + 1, one element per thread of blocks of ``threads``: the fused index
    p = b * threads + t guarded by a loop that unpacks it into (r, c)."""
    x, y = Buffer("x", F32, (rows, cols)), Buffer("y", F32, (rows, cols))
    b, t, p, r, c = Var("b"), Var("t"), Var("p"), Var("r"), Var("c")
    n = rows * cols
    body = [Store(y, (r, c), call("add", call("mul", x[r, c], const(2, F32)), const(1, F32)))]
    threads_loop = loop(t, threads,
                       [guard(p, b * threads + t, n, body, unpack=((r, rows), (c, cols)))], "thread")
    return Kernel("ew", [x, y], [loop(b, ceil(n, threads), [threads_loop], "block")],
                  [y])


@settings(max_examples=10)
@given(st.integers(1, 9), st.integers(1, 40), st.sampled_from([32, 64, 128]))
def test_an_elementwise_kernel_runs_one_element_per_thread(rows, cols, threads):
    x = RNG.standard_normal((rows, cols)).astype(F32)
    y = np.full((rows, cols), np.nan, F32)
    run(elementwise(rows, cols, threads), x, y)
    np.testing.assert_array_equal(y, 2 * x + 1)


def test_a_guard_that_does_not_guard_is_caught():
    """Without the min, the tail's threads load and store past the end."""
    x, y, b, t = Buffer("x", F32, (70,)), Buffer("y", F32, (70,)), Var("b"), Var("t")
    at = b * 32 + t
    kernel = Kernel("tail", [x, y], [loop(b, 3, [
        loop(t, 32, [Store(y, (at,), x[at])], "thread")], "block")], [y])
    message = r"kernel tail: load of x out of range: index on axis 0 70 not in \[0, 70\)"
    with pytest.raises(GuardViolation, match=message):
        run(kernel, np.zeros(70, F32), np.zeros(70, F32))


def spill(blocks, barrier):
    """Thread t of block b stores x[32 b + t] into y[(32 b + t + q) % n] for q = 0, 1 (a barrier after
    each when ``barrier``): each element is stored twice, by neighbouring threads, one iteration apart."""
    n = 32 * blocks
    x, y, b, t, q = Buffer("x", F32, (n,)), Buffer("y", F32, (n,)), Var("b"), Var("t"), Var("q")
    store = Store(y, (call("rem", b * 32 + t + q, idx(n)),), x[b * 32 + t])
    threads = loop(t, 32, [loop(q, 2, [store, *([Barrier()] if barrier else [])])], "thread")
    return Kernel("spill", [x, y], [loop(b, blocks, [threads], "block")], [y])


def test_threads_of_a_launch_storing_different_values_into_one_element_race():
    out = np.zeros(32, F32)
    run(spill(1, False), np.full(32, 3, F32), out)  # the same value: no race
    assert (out == 3).all()
    message = r"kernel spill: race on y element 1: thread 0 of block 0 stores a value other than thread 1 "
    with pytest.raises(RaceError, match=message):
        run(spill(1, False), np.arange(32, dtype=F32), out)
    run(spill(1, True), np.arange(32, dtype=F32), out)  # a barrier orders a block's stores
    np.testing.assert_array_equal(out, np.roll(np.arange(32), 1))
    message = r"race on y element 32: thread 31 of block 0 stores a value other than thread 0 of block 1 "
    with pytest.raises(RaceError, match=message):  # but not those of two blocks
        run(spill(2, True), np.arange(64, dtype=F32), np.zeros(64, F32))


def test_launches_one_after_another_do_not_race():
    """Two block loops in one kernel: y = x by one thread per element, then y = 2 x with the threads
    the other way round; the second launch's stores come after the first's."""
    x, y, b, t = Buffer("x", F32, (64,)), Buffer("y", F32, (64,)), Var("b"), Var("t")
    first = loop(b, 2, [loop(t, 32, [Store(y, (b * 32 + t,), x[b * 32 + t])], "thread")], "block")
    at = idx(63) - b * 32 - t
    second = loop(b, 2, [loop(t, 32, [Store(y, (at,), x[at] * const(2, F32))], "thread")], "block")
    out, data = np.zeros(64, F32), np.arange(64, dtype=F32)
    run(Kernel("twice", [x, y], [first, second], [y]), data, out)
    np.testing.assert_array_equal(out, 2 * data)


# ---- shared-memory GEMM ---------------------------------------------------------------------------

TILE, KSTEP, REG = 64, 16, 4
"""The GEMM's block tile (TILE x TILE of C), its K step, and each thread's register tile (REG x REG):
(TILE / REG)^2 = 256 threads."""


def gemm(m, k, n, barriers=(True, True)):
    """C = A . B (float32) tiled for a GPU: a block per 64 x 64 tile of C, 256 threads (ty, tx) each
    computing a 4 x 4 register tile; per K step of 16, the block loads A's 64 x 16 and B's 16 x 64
    tiles into shared memory together (zeros past the edges), a barrier, the products, a barrier
    (``barriers`` leaves either out)."""
    a, b, c = Buffer("a", F32, (m, k)), Buffer("b", F32, (k, n)), Buffer("c", F32, (m, n))
    sa, sb = Buffer("sa", F32, (TILE, KSTEP)), Buffer("sb", F32, (KSTEP, TILE))
    acc = Buffer("acc", F32, (REG, REG))
    blk, bm, bn, t, ty, tx = Var("blk"), Var("bm"), Var("bn"), Var("t"), Var("ty"), Var("tx")
    kt, ld, kk, i, j, row, col = Var("kt"), Var("l"), Var("kk"), Var("i"), Var("j"), Var("row"), Var("col")
    side = TILE // REG
    zero = const(0, F32)

    def clamped(buf, r, cc, rows, cols):
        """buf[r, cc], 0 outside it (the index clamped, so the load stays inside)."""
        inside = call("and", call("lt", r, idx(rows)), call("lt", cc, idx(cols)))
        at = (call("min", r, idx(rows - 1)), call("min", cc, idx(cols - 1)))
        return call("select", inside, buf[at], zero)

    loads = loop(ld, TILE // side, [
        Store(sa, (ld * side + ty, tx), clamped(a, bm * TILE + ld * side + ty, kt * KSTEP + tx, m, k)),
        Store(sb, (ty, ld * side + tx), clamped(b, kt * KSTEP + ty, bn * TILE + ld * side + tx, k, n))])
    products = loop(kk, KSTEP, [loop(i, REG, [
        loop(j, REG, [
            Store(acc, (i, j), call("add", acc[i, j], sa[ty * REG + i, kk] * sb[kk, tx * REG + j]),
                  contract=True)])])])
    step = [loads, *([Barrier()] if barriers[0] else []), products, *([Barrier()] if barriers[1] else [])]
    out = loop(i, REG, [loop(j, REG, [
        guard(row, bm * TILE + ty * REG + i, m, [guard(col, bn * TILE + tx * REG + j, n, [
            Store(c, (row, col), acc[i, j])])])])])
    init = loop(i, REG, [loop(j, REG, [
        Store(acc, (i, j), zero)])])
    thread = loop(t, side * side, [Local(acc, [
        init, loop(kt, ceil(k, KSTEP), step), out])], "thread",
        ((ty, side), (tx, side)))
    grid = (ceil(m, TILE), ceil(n, TILE))
    shared = [Local(sa, [Local(sb, [thread], "shared")], "shared")]
    block = loop(blk, grid[0] * grid[1], shared, "block", ((bm, grid[0]), (bn, grid[1])))
    return Kernel("gemm", [a, b, c], [block], [c])


def in_k_order(a, b):
    """A . B in float32, one multiply and one add per k in order: what each GPU thread computes."""
    c = np.zeros((a.shape[0], b.shape[1]), F32)
    for kk in range(a.shape[1]):
        c = c + a[:, kk:kk + 1] * b[kk:kk + 1, :]
    return c


@settings(max_examples=6)
@given(st.integers(1, 140), st.integers(1, 40), st.integers(1, 140))
def test_a_shared_memory_gemm_is_exact(m, k, n):
    a, b = RNG.standard_normal((m, k)).astype(F32), RNG.standard_normal((k, n)).astype(F32)
    c = np.full((m, n), np.nan, F32)
    run(gemm(m, k, n), a, b, c)
    np.testing.assert_array_equal(c, in_k_order(a, b))


@pytest.mark.parametrize("m, k, n", [(64, 16, 64), (130, 33, 70)])
def test_the_gemm_on_tile_multiples_and_ragged_edges(m, k, n):
    a, b = RNG.standard_normal((m, k)).astype(F32), RNG.standard_normal((k, n)).astype(F32)
    c = np.full((m, n), np.nan, F32)
    run(gemm(m, k, n), a, b, c)
    np.testing.assert_array_equal(c, in_k_order(a, b))


@pytest.mark.parametrize("missing, message", [
    (0, r"kernel gemm: race on shared sa element 16 in block 0: thread 0 loads it and thread 16 stored it "
        r"with no barrier between"),
    (1, r"kernel gemm: race on shared sa element \d+ in block 0: thread \d+ stores it and several threads "
        r"loaded it with no barrier between")])
def test_the_gemm_without_a_barrier_races(missing, message):
    """Without the first barrier a thread loads what another stored; without the second, the next K
    step's loads overwrite what other threads are still reading."""
    m, k, n = 64, 48, 64
    a, b = RNG.standard_normal((m, k)).astype(F32), RNG.standard_normal((k, n)).astype(F32)
    kernel = gemm(m, k, n, barriers=(missing != 0, missing != 1))
    with pytest.raises(RaceError, match=message):
        run(kernel, a, b, np.zeros((m, n), F32))


# ---- a reduction over shared memory -------------------------------------------------------------

def row_sums(rows, cols, threads, barriers=True):
    """y[r] = sum of x[r, :]: a block per row; thread t sums the columns t, t + threads, ...; then a
    tree over shared memory, halving the active threads at each level, a barrier between levels."""
    x, y, s, acc = Buffer("x", F32, (rows, cols)), Buffer("y", F32, (rows,)), Buffer("s", F32, (threads,)), \
        Buffer("acc", F32, (1,))
    b, t, q, col, u = Var("b"), Var("t"), Var("q"), Var("col"), Var("u")
    zero = idx(0)
    body = [Store(acc, (zero,), const(0, F32)),
            loop(q, ceil(cols, threads), [guard(col, q * threads + t, cols, [
                Store(acc, (zero,), call("add", acc[zero], x[b, col]))])]),
            Store(s, (t,), acc[zero])]
    stride = threads // 2
    while stride:
        body += [*([Barrier()] if barriers else []),
                 guard(u, t, stride, [Store(s, (u,), call("add", s[u], s[u + stride]))])]
        stride //= 2
    body.append(guard(u, t, 1, [Store(y, (b,), s[zero])]))
    thread = loop(t, threads, [Local(acc, body)], "thread")
    return Kernel("rowsum", [x, y], [loop(b, rows, [Local(s, [thread], "shared")], "block")], [y])


def tree_sums(x, threads):
    """What ``row_sums`` computes, in its order, in float32."""
    part = np.zeros((x.shape[0], threads), F32)
    for q in range(ceil(x.shape[1], threads)):
        chunk = x[:, q * threads:(q + 1) * threads]
        part[:, :chunk.shape[1]] = part[:, :chunk.shape[1]] + chunk
    while part.shape[1] > 1:
        half = part.shape[1] // 2
        part = part[:, :half] + part[:, half:]
    return part[:, 0]


@settings(max_examples=8)
@given(st.integers(1, 5), st.integers(1, 300), st.sampled_from([32, 64, 128]))
def test_a_tree_reduction_over_shared_memory_is_exact(rows, cols, threads):
    x = RNG.standard_normal((rows, cols)).astype(F32)
    y = np.full(rows, np.nan, F32)
    run(row_sums(rows, cols, threads), x, y)
    np.testing.assert_array_equal(y, tree_sums(x, threads))


def test_a_tree_reduction_without_barriers_races():
    with pytest.raises(RaceError, match=r"kernel rowsum: race on shared s element 32 in block 0: thread 0 "
                                        r"loads it and thread 32 stored it"):
        run(row_sums(2, 100, 64, barriers=False), np.ones((2, 100), F32), np.zeros(2, F32))


# ---- control flow and structure -----------------------------------------------------------------

def one_block(threads, body, shared=None):
    """A kernel of one block of ``threads`` threads (``t``) running ``body``, in shared ``shared``."""
    t = Var("t")
    thread = loop(t, threads, body(t), "thread")
    inner = [thread] if shared is None else [Local(shared, [thread], "shared")]
    x = Buffer("x", F32, (threads,))
    return Kernel("k", [x], [loop(Var("b"), 1, inner, "block")], [x])


def test_a_barrier_in_a_loop_whose_trip_count_differs_between_threads_is_refused():
    q = Var("q")
    kernel = one_block(64, lambda t: [For(q, idx(0), t, [Barrier()])])
    message = r"kernel k: thread 1 of block 0 reaches a barrier that thread 0 does not \(a condition or loop"
    with pytest.raises(CompileError, match=message):
        run(kernel, np.zeros(64, F32))
    same = one_block(64, lambda t: [For(q, t - t, idx(3), [Barrier()])])  # a bound that reads t, equal
    run(same, np.zeros(64, F32))


def test_a_block_that_skips_a_barrier_others_pass_races_alone():
    """A barrier under a condition on the block only (legal: all of a block's threads skip it): block
    0 passes it, block 1 loads what its neighbour stored without one."""
    x, y, s, b, t, p = Buffer("x", F32, (64,)), Buffer("y", F32, (64,)), Buffer("s", F32, (32,)), Var("b"), \
        Var("t"), Var("p")
    body = [Store(s, (t,), x[b * 32 + t]), guard(p, b, 1, [Barrier()]),
            Store(y, (b * 32 + t,), s[call("rem", t + 1, idx(32))])]
    block = loop(b, 2, [Local(s, [loop(t, 32, body, "thread")], "shared")], "block")
    kernel = Kernel("skip", [x, y], [block], [y])
    message = r"kernel skip: race on shared s element 1 in block 1: thread 0 loads it and thread 1 stored it"
    with pytest.raises(RaceError, match=message):
        run(kernel, np.arange(64, dtype=F32), np.zeros(64, F32))


def test_a_barrier_under_a_guard_of_some_threads_is_refused():
    p = Var("p")
    kernel = one_block(64, lambda t: [guard(p, t, 40, [Barrier()])])
    with pytest.raises(CompileError, match="thread 0 of block 0 reaches a barrier that thread 40 does not"):
        run(kernel, np.zeros(64, F32))


def test_the_structure_of_a_gpu_kernel_is_checked():
    x, s, t, b = Buffer("x", F32, (4,)), Buffer("s", F32, (4,)), Var("t"), Var("b")

    def refused(body, message):
        with pytest.raises(CompileError, match=message):
            run(Kernel("k", [x], body, [x]), np.zeros(4, F32))
    store = Store(x, (t,), const(1, F32))
    refused([loop(t, 4, [store], "thread")], "kernel k: thread loop t not directly inside a block loop")
    refused([loop(b, 4, [loop(Var("q"), 4, [loop(t, 4, [store], "thread")])], "block")],
            "thread loop t not directly inside a block loop")
    refused([loop(b, 4, [loop(t, 4, [Local(s, [store], "shared")], "thread")], "block")],
            "shared local s not directly inside a block loop")
    refused([loop(b, 4, [Local(s, [loop(t, 4, [store], "thread")])], "block")],
            "local s in a block loop outside its thread loop")
    refused([loop(b, 4, [loop(t, 4, [loop(Var("q"), 4, [Barrier()], "parallel")], "thread")], "block")],
            "barrier inside a vectorized loop of a thread")
    refused([loop(b, 4, [Barrier(), loop(t, 4, [store], "thread")], "block")],
            "barrier outside a thread loop")
    refused([loop(b, 4, [Store(x, (b,), const(1, F32))], "block")], "store in block loop b outside its "
            "thread loop")
    refused([loop(b, 4, [For(t, idx(0), b + 1, [store], "thread")], "block")], r"thread loop t over")
    refused([For(b, idx(1), idx(4), [loop(t, 4, [store], "thread")], "block")], r"block loop b from 1")


# ---- the warp MMA ---------------------------------------------------------------------------------

def test_fragment_layouts_are_the_ptx_isas():
    """The tables against the PTX ISA's formulas ("Matrix Fragments for mma.m16n8k16 with floating
    point type" and "for mma.m16n8k8", .tf32), written out here once more."""
    lane = np.arange(32)[:, None]
    g, tig = lane >> 2, lane % 4
    i8, i4, i2 = np.arange(8), np.arange(4), np.arange(2)
    f16 = {"a": (g + 8 * ((i8 % 4) >= 2), tig * 2 + (i8 & 1) + 8 * (i8 >= 4)),
           "b": (tig * 2 + (i4 & 1) + 8 * (i4 >= 2), g + 0 * i4),
           "c": (g + 8 * (i4 >= 2), tig * 2 + (i4 & 1))}
    tf32 = {"a": (g + 8 * (i4 % 2), tig + 4 * (i4 >= 2)), "b": (tig + 4 * i2, g + 0 * i2), "c": f16["c"]}
    for mma, want in [(MMA_F16, f16), (MMA_BF16, f16), (MMA_TF32, tf32)]:
        for operand, (rows, cols) in want.items():
            got = mma.layout(operand)
            np.testing.assert_array_equal(got[0], rows, err_msg=f"{mma.name} {operand} rows")
            np.testing.assert_array_equal(got[1], cols, err_msg=f"{mma.name} {operand} cols")


def ldmatrix_kernel(count, rows, cols, address, trans=False):
    """One warp: a shared ``rows`` x ``cols`` float16 tile holding its element numbers, each lane's
    ``LoadMatrix(count, trans)`` from row/column ``address(lane)`` of it, the fragments stored lane by
    lane."""
    tile, out = Buffer("tile", F16, (rows * cols,)), Buffer("out", F16, (32 * 2 * count,))
    frag = Buffer("frag", F16, (2 * count,))
    b, t, r, e = Var("b"), Var("t"), Var("r"), Var("e")
    per = rows * cols // 32
    row, col = address(t)
    body = [loop(r, per, [Store(tile, (t * per + r,), cast(t * per + r, F16))]), Barrier(),
            Local(frag, [Invoke(LoadMatrix(count, F16, trans), (Ref(frag, idx(0)),
                                                                Ref(tile, row * cols + col))),
                         loop(e, 2 * count, [Store(out, (t * (2 * count) + e,), frag[e])])])]
    return Kernel("ldmatrix", [out], [loop(b, 1, [Local(tile, [loop(t, 32, body, "thread")], "shared")],
                                           "block")], [out])


def test_ldmatrix_gives_the_mma_fragments_of_a_row_major_a_and_of_b_either_way():
    """x4 on the four 8 x 8 quarters of a row-major 16 x 16 A (lane 8 q + r: row r + 8 (q % 2), column
    8 (q // 2)) gives each thread its m16n8k16 A fragment; x2 on the two halves along k of a B held
    n-major (row n, column k) its B fragment, and x2.trans on those of a B held k-major (row k,
    column n); the mapping itself is the PTX ISA's: thread l gets row l / 4, columns 2 (l % 4) and
    + 1 of matrix j as elements 2 j, 2 j + 1 (transposed: rows 2 (l % 4) and + 1 of column l / 4)."""
    def quarters(t):
        q, r = call("div", t, idx(8)), call("rem", t, idx(8))
        return r + call("rem", q, idx(2)) * 8, call("div", q, idx(2)) * 8

    def halves(t):
        q, r = call("rem", call("div", t, idx(8)), idx(2)), call("rem", t, idx(8))
        return r, q * 8

    def k_rows(t):
        return call("rem", t, idx(16)), idx(0)

    lane = np.arange(32)[:, None]
    for count, rows, address, operand, trans in [(4, 16, quarters, "a", False), (2, 8, halves, "b", False),
                                                 (2, 16, k_rows, "b", True)]:
        out = np.zeros((32, 2 * count), F16)
        run(ldmatrix_kernel(count, rows, 16, address, trans), out)
        got = out.astype(np.int64)
        tile_rows, tile_cols = got // 16, got % 16
        for j in range(count):  # PTX's mapping, matrix j at (r0, c0) of the tile
            r0, c0 = {4: (8 * (j % 2), 8 * (j // 2)), 2: (8 * j, 0) if trans else (0, 8 * j)}[count]
            rows_j, cols_j = (2 * (lane % 4) + [0, 1], lane // 4 + [0, 0]) if trans else \
                (lane // 4 + [0, 0], 2 * (lane % 4) + [0, 1])
            np.testing.assert_array_equal(tile_rows[:, 2 * j:2 * j + 2], r0 + rows_j)
            np.testing.assert_array_equal(tile_cols[:, 2 * j:2 * j + 2], c0 + cols_j)
        want_rows, want_cols = MMA_F16.layout(operand)
        if operand == "b" and not trans:  # the tile holds B[k, n] at row n, column k
            want_rows, want_cols = want_cols, want_rows
        np.testing.assert_array_equal(tile_rows, want_rows)
        np.testing.assert_array_equal(tile_cols, want_cols)


def test_ldmatrix_of_a_row_not_16_byte_aligned_is_refused():
    with pytest.raises(GuardViolation, match=r"not 16-byte aligned"):
        run(ldmatrix_kernel(4, 16, 16, lambda t: (call("rem", t, idx(16)), idx(1))), np.zeros((32, 8), F16))


def stage(tile, src, row, col, threads, t):
    """The block's threads copy ``src[row:, col:]`` into the shared ``tile``, element q by thread
    q % threads."""
    j, q = Var("j"), Var("q")
    width = idx(tile.shape[1])
    r, c = call("div", q, width), call("rem", q, width)
    return loop(j, ceil(tile.size, threads), [guard(q, j * threads + t, tile.size, [
        Store(tile, (r, c), src[row + r, col + c])])])


def mma_gemm(mma, m, k, n, warps, threads=None, guard_lanes=None, shared=None):
    """C = A . B with ``mma``: a block per 16 x (8 warps) tile of C, each warp a 16 x 8 tile; each
    thread loads its fragments at the rows and columns of the layout tables (given as params), from
    global memory or, with ``shared``, from the block's A and B tiles that its threads copied to shared
    memory (a barrier after, and unless ``shared`` is "racy", another after the MMA); accumulates over
    K, and stores its C fragment."""
    ab = mma.dtype
    a, b, c = Buffer("a", ab, (m, k)), Buffer("b", ab, (k, n)), Buffer("c", F32, (m, n))
    tables = [Buffer(f"{op}{axis}", INDEX, (32, mma.fragment(op))) for op in "abc" for axis in "rc"]
    ar, ac, br, bc, cr, cc = tables
    fa, fb, fc = (Buffer(f"frag_{op}", dt, (mma.fragment(op),)) for op, dt in zip("abc", (ab, ab, F32)))
    blk, bm, bn, t, w, lane, kt, e = (Var(v) for v in ("blk", "bm", "bn", "t", "w", "lane", "kt", "e"))
    zero = idx(0)
    count = threads or 32 * warps

    def each(op, body):
        return loop(e, mma.fragment(op), body)
    n0 = (bn * warps + w) * mma.n
    call_mma = Invoke(mma, (Ref(fa, zero), Ref(fb, zero), Ref(fc, zero), Ref(fc, zero)))
    if guard_lanes is not None:
        call_mma = guard(Var("p"), lane, guard_lanes, [call_mma])
    if shared is None:
        step = [each("a", [Store(fa, (e,), a[bm * mma.m + ar[lane, e], kt * mma.k + ac[lane, e]])]),
                each("b", [Store(fb, (e,), b[kt * mma.k + br[lane, e], n0 + bc[lane, e]])]), call_mma]
    else:
        sa, sb = Buffer("sa", ab, (mma.m, mma.k)), Buffer("sb", ab, (mma.k, mma.n * warps))
        step = [stage(sa, a, bm * mma.m, kt * mma.k, count, t),
                stage(sb, b, kt * mma.k, bn * warps * mma.n, count, t), Barrier(),
                each("a", [Store(fa, (e,), sa[ar[lane, e], ac[lane, e]])]),
                each("b", [Store(fb, (e,), sb[br[lane, e], w * mma.n + bc[lane, e]])]), call_mma,
                *([] if shared == "racy" else [Barrier()])]
    body = [each("c", [Store(fc, (e,), const(0, F32))]), loop(kt, k // mma.k, step),
            each("c", [Store(c, (bm * mma.m + cr[lane, e], n0 + cc[lane, e]), fc[e])])]
    parts = ((w, count // 32), (lane, 32)) if count % 32 == 0 else ((w, 1), (lane, count))  # else refused
    thread = loop(t, count, [Local(fa, [Local(fb, [Local(fc, body)])])], "thread", parts)
    if shared is not None:
        thread = Local(sa, [Local(sb, [thread], "shared")], "shared")
    grid = (m // mma.m, n // (mma.n * warps))
    block = loop(blk, grid[0] * grid[1], [thread], "block", ((bm, grid[0]), (bn, grid[1])))
    return Kernel("mma", [a, b, c, *tables], [block], [c]), [np.ascontiguousarray(x) for op in "abc"
                                                             for x in mma.layout(op)]


def tf32(x):
    """``x`` (float32) rounded to tf32 as cvt.rna does: to nearest, ties away from zero."""
    bits = x.view(np.uint32)
    return ((bits + np.uint32(1 << 12)) & np.uint32(~((1 << 13) - 1) & 0xFFFFFFFF)).view(F32)


TOLERANCE = {"f16": (1e-3, 1e-2), "bf16": (1e-2, 1e-2), "tf32": (1e-4, 5e-3)}
"""(rtol, atol) per input type, tinygrad's for its tensor-core tests (notes/gpu.md)."""


def mma_inputs(mma, m, k, n):
    scale = 1 / np.sqrt(k)
    a = (RNG.standard_normal((m, k)) * scale).astype(mma.dtype)
    return a, (RNG.standard_normal((k, n)) * scale).astype(mma.dtype), np.full((m, n), np.nan, F32)


@pytest.mark.parametrize("mma", WARP_MMAS, ids=lambda x: x.ab)
@pytest.mark.parametrize("m, k, n, warps, shared", [(16, 16, 32, 4, None), (48, 64, 32, 2, None),
                                                    (32, 32, 64, 4, None), (32, 48, 32, 2, "tiles")])
def test_a_warp_mma_gemm_matches_numpy(mma, m, k, n, warps, shared):
    kernel, tables = mma_gemm(mma, m, k, n, warps, shared=shared)
    a, b, c = mma_inputs(mma, m, k, n)
    run(kernel, a, b, c, *tables)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    rtol, atol = TOLERANCE[mma.ab]
    np.testing.assert_allclose(c, exact, rtol=rtol, atol=atol)
    if mma.ab == "tf32":  # the inputs as the tensor cores take them: then exact but for fp32 rounding
        exact = tf32(a).astype(np.float64) @ tf32(b).astype(np.float64)
    np.testing.assert_allclose(c, exact, rtol=1e-6, atol=1e-6)


def test_a_warp_mma_gemm_through_shared_memory_without_its_second_barrier_races():
    kernel, tables = mma_gemm(MMA_F16, 16, 32, 16, 2, shared="racy")
    message = r"kernel mma: race on shared sa element 0 in block 0: thread 0 stores it and several threads"
    with pytest.raises(RaceError, match=message + " loaded it"):
        run(kernel, *mma_inputs(MMA_F16, 16, 32, 16), *tables)


def test_a_warp_mma_needs_whole_warps_that_run_together():
    kernel, tables = mma_gemm(MMA_F16, 16, 16, 8, 1, threads=48)
    message = r"kernel mma: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 in thread loop t of 48 threads"
    with pytest.raises(CompileError, match=message + r", not a multiple of the warp's 32"):
        run(kernel, np.zeros((16, 16), np.float16), np.zeros((16, 8), np.float16), np.zeros((16, 8), F32),
            *tables)
    kernel, tables = mma_gemm(MMA_BF16, 16, 16, 8, 1, guard_lanes=16)
    bf16 = ml_dtypes.bfloat16
    with pytest.raises(CompileError, match=r"invokes it and thread 16 of its warp does not"):
        run(kernel, np.zeros((16, 16), bf16), np.zeros((16, 8), bf16), np.zeros((16, 8), F32), *tables)


# ---- the warp shuffle -------------------------------------------------------------------------------

def shuffle(blocks, threads, mask, live=None):
    """y[b, t] = x[b, t] exchanged by ``shfl.sync.bfly`` with ``mask`` (the threads below ``live`` of
    each block only, when given)."""
    x, y = Buffer("x", F32, (blocks, threads)), Buffer("y", F32, (blocks, threads))
    src, dst, b, t, g = Buffer("src", F32, (1,)), Buffer("dst", F32, (1,)), Var("b"), Var("t"), Var("g")
    exchange = Invoke(WARP_SHUFFLE, (Ref(dst, idx(0)), Ref(src, idx(0)), idx(mask)))
    body = [Store(src, (idx(0),), x[b, t]), exchange, Store(y, (b, t), dst[idx(0)])]
    if live is not None:
        body = [For(g, idx(0), call("min", idx(1), idx(live) - t), body)]
    threads_loop = loop(t, threads, [Local(src, [Local(dst, body)])], "thread")
    return Kernel("shfl", [x, y], [loop(b, blocks, [threads_loop], "block")], [y])


@settings(max_examples=8)
@given(st.integers(1, 3), st.sampled_from([32, 64, 96]), st.integers(0, 31))
def test_a_warp_shuffle_gives_each_lane_its_partners_value(blocks, threads, mask):
    x = RNG.standard_normal((blocks, threads)).astype(F32)
    y = np.full_like(x, np.nan)
    run(shuffle(blocks, threads, mask), x, y)
    lane = np.arange(threads)
    np.testing.assert_array_equal(y, x[:, (lane & ~31) | ((lane & 31) ^ mask)])


def test_a_warp_shuffle_needs_whole_warps_that_run_together():
    x = np.zeros((1, 48), F32)
    with pytest.raises(CompileError, match=r"shfl.sync.bfly.b32 in thread loop t of 48 threads"):
        run(shuffle(1, 48, 1), x, x.copy())
    x = np.zeros((2, 64), F32)
    run(shuffle(2, 64, 3, live=32), x, x.copy())  # whole warps skip it: allowed
    message = r"thread 32 of block 0 invokes it and thread 40 of its warp does not"
    with pytest.raises(CompileError, match=message):
        run(shuffle(2, 64, 3, live=40), x, x.copy())
