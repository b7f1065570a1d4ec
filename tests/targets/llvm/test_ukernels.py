"""GEMM micro-kernels: the tile lists per register file, and the JIT-compiled kernels against a float64
reference on full and edge tiles, with NaN guards around the tile (no write outside it), a guard
page after it (no read outside it) and the exact sequential fma chain."""

import ctypes
import mmap
import os

import llvmlite.ir as ir
import numpy as np
import pytest

from tensoregg.errors import CompileError
from tensoregg.ir.intrinsics import MicroKernel
from tensoregg.targets.llvm.host import vector_bits
from tensoregg.targets.llvm.jit import JitModule, host_cpu
from tensoregg.targets.llvm.ukernels import emit_microkernel, fits, microkernels_for

SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
AVX2, AVX512 = (256, 16), (512, 32)


def names(tiles: tuple[MicroKernel, ...]) -> set[str]:
    return {uk.name for uk in tiles}


def test_tile_lists_follow_the_register_budget():
    assert {"gemm_f32_6x16", "gemm_f32_4x24", "gemm_f32_1x32"} <= names(microkernels_for(*AVX2))
    assert {"gemm_f32_14x32", "gemm_f32_12x32", "gemm_f32_8x48", "gemm_f32_6x64",
            "gemm_f32_1x64"} <= names(microkernels_for(*AVX512))
    for bits in (128, 256, 512):
        for registers in (8, 16, 32, 64):
            tiles = microkernels_for(bits, registers)
            lanes = bits // 32
            assert 1 <= len(tiles) <= 10 and len(names(tiles)) == len(tiles)
            for uk in tiles:
                assert uk.nr % lanes == 0 and 1 <= uk.nr // lanes <= 4 and 1 <= uk.mr <= 16
                assert fits(uk.mr, uk.nr // lanes, registers) and uk.name == f"gemm_f32_{uk.mr}x{uk.nr}"
    with pytest.raises(CompileError, match="registers"):
        microkernels_for(256, 2)


def test_emit_once_per_module_and_reject_a_bad_tile():
    module = ir.Module("t")
    uk = microkernels_for(*AVX2)[0]
    assert emit_microkernel(module, uk, 8) is emit_microkernel(module, uk, 8)
    with pytest.raises(CompileError, match="multiple"):
        emit_microkernel(module, MicroKernel("gemm_f32_2x12", 2, 12), 8)


@pytest.fixture(scope="module", params=[AVX2, AVX512], ids=["256", "512"])
def compiled(request):
    """(tiles, lanes, {name: callable}, the JIT module keeping them alive) of one vector width."""
    bits, registers = request.param
    if bits == 512 and vector_bits(host_cpu()[1]) < 512:
        pytest.skip("the host has no AVX-512")
    tiles = microkernels_for(bits, registers)
    module = ir.Module(f"ukernels{bits}")
    for uk in tiles:
        emit_microkernel(module, uk, bits // 32)
    jit = JitModule(module)
    return tiles, bits // 32, {uk.name: SIGNATURE(jit.address(uk.name)) for uk in tiles}, jit


def panels(rng, uk: MicroKernel, kc: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed A (kc x mr) and B (kc x nr) panels; at least one float each so the pointers are valid."""
    a = rng.standard_normal(max(kc * uk.mr, 1)).astype(np.float32)
    b = rng.standard_normal(max(kc * uk.nr, 1)).astype(np.float32)
    return a, b


def tile_cases(uk: MicroKernel, lanes: int) -> list[tuple[int, int]]:
    """(m, n): the full tile, partial rows, partial columns (a multiple of the lanes or not, fewer
    than the lanes) and a single element."""
    cases = {(uk.mr, uk.nr), (max(uk.mr - 1, 1), uk.nr), (uk.mr, uk.nr - 1), (uk.mr, min(3, uk.nr)),
             (1, 1), (max(uk.mr // 2, 1), max(uk.nr - lanes, 1)), (uk.mr, min(lanes + 3, uk.nr))}
    return sorted(cases)


def test_kernels_match_the_reference_and_write_only_their_tile(compiled):
    tiles, lanes, kernels, _ = compiled
    rng = np.random.default_rng(0)
    for uk in tiles:
        for m, n in tile_cases(uk, lanes):
            for kc in (0, 1, 7, 64):
                for accumulate in (0, 1):
                    a, b = panels(rng, uk, kc)
                    ldc = uk.nr + 5  # C rows: 2 guard floats, the tile's n, then guards up to ldc
                    buf = np.full((uk.mr + 2, ldc), np.nan, np.float32)
                    buf[1:m + 1, 2:n + 2] = rng.standard_normal((m, n))
                    before = buf.copy()
                    kernels[uk.name](kc, a.ctypes.data, b.ctypes.data, buf[1, 2:].ctypes.data, ldc, m, n,
                                     accumulate)
                    a_mat = a[:kc * uk.mr].reshape(kc, uk.mr).T[:m].astype(np.float64)
                    b_mat = b[:kc * uk.nr].reshape(kc, uk.nr)[:, :n].astype(np.float64)
                    c0 = before[1:m + 1, 2:n + 2].astype(np.float64) * accumulate
                    bound = (kc + 1) * 2.0 ** -23 * (np.abs(c0) + np.abs(a_mat) @ np.abs(b_mat)) + 1e-30
                    got = buf[1:m + 1, 2:n + 2]
                    case = (uk.name, m, n, kc, accumulate)
                    assert np.all(np.abs(got - (c0 + a_mat @ b_mat)) <= bound), case
                    outside = np.ones(buf.shape, bool)
                    outside[1:m + 1, 2:n + 2] = False
                    assert np.isnan(buf[outside]).all(), f"{uk.name} wrote outside its {m}x{n} tile"


def test_the_result_is_the_sequential_fma_chain(compiled):
    """Each element is fma(A[r,k], B[k,c], acc) for k in order, rounded once per step. Emulated in
    float64: the product of two floats is exact there and the sum's double rounding (to 53 then 24
    bits) differs from one rounding only with probability ~2^-28 per step (a fixed seed: no flake)."""
    tiles, _, kernels, _ = compiled
    rng = np.random.default_rng(1)
    kc = 32
    for uk in tiles[:2]:
        a, b = panels(rng, uk, kc)
        c = rng.standard_normal((uk.mr, uk.nr)).astype(np.float32)
        expect = c.copy()
        for k in range(kc):
            prod = a[k * uk.mr:(k + 1) * uk.mr, None].astype(np.float64) * b[k * uk.nr:(k + 1) * uk.nr]
            expect = (prod + expect).astype(np.float32)
        kernels[uk.name](kc, a.ctypes.data, b.ctypes.data, c.ctypes.data, uk.nr, uk.mr, uk.nr, 1)
        assert np.array_equal(c, expect), uk.name


def test_an_edge_tile_reads_nothing_past_its_last_element(compiled):
    """The tile's last element is the last float before an unreadable page: full-width loads or the
    rows below it would fault. The kernels run in a forked child so that a fault fails the test, not
    the test process; the pages are shared with it."""
    tiles, _, kernels, _ = compiled
    page, kc = mmap.PAGESIZE, 4
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    rng = np.random.default_rng(2)
    runs = []
    for uk in tiles:
        mem = mmap.mmap(-1, 2 * page)  # MAP_SHARED
        guard = ctypes.addressof(ctypes.c_char.from_buffer(mem, page))
        assert libc.mprotect(guard, page, 0) == 0  # PROT_NONE
        n = max(uk.nr - 3, 1)
        c = np.frombuffer(mem, np.float32, count=page // 4)[-n:]
        c[:] = 1.0
        runs.append((uk, n, c, *panels(rng, uk, kc)))
    pid = os.fork()
    if pid == 0:  # the child: run every kernel on its tile, then leave without cleanup
        for uk, n, c, a, b in runs:
            kernels[uk.name](kc, a.ctypes.data, b.ctypes.data, c.ctypes.data, page // 4, 1, n, 1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "a kernel touched memory past its tile"
    for uk, n, c, a, b in runs:
        ref = 1.0 + a.reshape(kc, uk.mr)[:, 0].astype(np.float64) @ b.reshape(kc, uk.nr)[:, :n]
        np.testing.assert_allclose(c, ref, rtol=1e-5, atol=1e-5, err_msg=uk.name)
