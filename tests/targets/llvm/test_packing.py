"""The packing intrinsics of ``tensoregg.targets.llvm.packing``.

The panel transpose (``PanelTranspose``): against numpy on every tile width the host offers and more,
k counts around the vector chunk, edge panels with fewer rows than the width, NaN between the rows
(never read) and after the panel (never written), and a run whose last row ends at an unreadable
page. The run copy (``PanelRuns``): random runs (some empty) against numpy, lanes in no run left
as they were, and a run ending at an unreadable page."""

import ctypes
import mmap
import os

import llvmlite.ir as ir
import numpy as np
import pytest

from tensoregg.ir.intrinsics import PanelRuns, PanelTranspose
from tensoregg.targets.llvm.host import host_target, vector_bits
from tensoregg.targets.llvm.jit import JitModule, host_cpu
from tensoregg.targets.llvm.packing import CHUNK, emit_panel_runs, emit_panel_transpose

WIDTHS = sorted({1, 2, 3, 5, 16, 32, *(uk.mr for uk in host_target().microkernels),
                 *(uk.nr for uk in host_target().microkernels)})
SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                             ctypes.c_void_p)


@pytest.fixture(scope="module")
def packs():
    """{width: callable} and the JIT module keeping them alive."""
    module = ir.Module("packs")
    for w in WIDTHS:
        pack = PanelTranspose(w)
        assert emit_panel_transpose(module, pack) is emit_panel_transpose(module, pack)
    jit = JitModule(module)
    return {w: SIGNATURE(jit.address(PanelTranspose(w).name)) for w in WIDTHS}, jit


@pytest.mark.parametrize("width", WIDTHS)
def test_panels_match_numpy(packs, width):
    rng = np.random.default_rng(width)
    for kc in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5):
        for rows in sorted({1, max(1, width - 1), width}):
            ld = kc + 3
            x = np.full((rows, ld), np.nan, np.float32)  # the columns past kc are never read
            x[:, :kc] = rng.standard_normal((rows, kc))
            p = np.full(kc * width + 8, np.nan, np.float32)
            packs[0][width](kc, x.ctypes.data, ld, rows, p.ctypes.data)
            want = x[np.minimum(np.arange(width), rows - 1), :kc].T.reshape(-1)
            assert np.array_equal(p[:kc * width], want), (width, kc, rows)
            assert np.isnan(p[kc * width:]).all(), (width, kc, rows)


def test_nothing_past_the_last_row_is_read(packs):
    """The last row's kc-th float is the last before a PROT_NONE page (run in a forked child)."""
    page, kc, ld = mmap.PAGESIZE, 2 * CHUNK + 3, 4 * CHUNK
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    mem = mmap.mmap(-1, 2 * page)  # MAP_SHARED: the child's writes are seen here
    assert libc.mprotect(ctypes.addressof(ctypes.c_char.from_buffer(mem, page)), page, 0) == 0
    floats = np.frombuffer(mem, np.float32, count=page // 4)
    rows = 3
    x = floats[page // 4 - ((rows - 1) * ld + kc):]
    x[:] = np.arange(x.size, dtype=np.float32)
    p = np.zeros(kc * 12, np.float32)
    pid = os.fork()
    if pid == 0:
        packs[0][12](kc, x.ctypes.data, ld, rows, p.ctypes.data)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the transpose read past its last row"


LANES = vector_bits(host_cpu()[1]) // 32
RUNS_SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_void_p)


def random_runs(rng: np.random.Generator, width: int, runs: int) -> np.ndarray:
    """``runs`` (start, end, base) triples cutting [0, width) at random points (some empty)."""
    cuts = np.sort(rng.integers(0, width + 1, runs - 1))
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [width]])
    return np.stack([starts, ends, rng.integers(0, 50, runs) * 3 - starts], axis=1).astype(np.int64)


@pytest.mark.parametrize("width,runs", [(LANES, 1), (2 * LANES, 2), (2 * LANES, 5), (3 * LANES, 3)])
def test_runs_copy_their_lanes_and_nothing_else(width, runs):
    module = ir.Module("runs")
    pack = PanelRuns(width, runs)
    assert emit_panel_runs(module, pack, LANES) is emit_panel_runs(module, pack, LANES)
    jit = JitModule(module)
    fn = RUNS_SIGNATURE(jit.address(pack.name))
    rng = np.random.default_rng(width * runs)
    x = rng.standard_normal(4096).astype(np.float32)
    for kc in (0, 1, 7):
        table = random_runs(rng, width, runs)
        ks = rng.integers(0, 1000, kc).astype(np.int64)
        p = np.full(kc * width + 8, np.nan, np.float32)
        fn(kc, x.ctypes.data, ks.ctypes.data, table.ctypes.data, p.ctypes.data)
        want = np.full_like(p, np.nan)
        for start, end, base in table:
            for k in range(kc):
                want[k * width + start:k * width + end] = x[ks[k] + base + np.arange(start, end)]
        np.testing.assert_array_equal(p, want)


def test_runs_read_nothing_past_their_last_element():
    """A run ending at the last float before a PROT_NONE page (a forked child runs it)."""
    width = 2 * LANES
    module = ir.Module("runs_edge")
    emit_panel_runs(module, PanelRuns(width, 2), LANES)
    jit = JitModule(module)
    fn = RUNS_SIGNATURE(jit.address(PanelRuns(width, 2).name))
    page = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    mem = mmap.mmap(-1, 2 * page)
    assert libc.mprotect(ctypes.addressof(ctypes.c_char.from_buffer(mem, page)), page, 0) == 0
    x = np.frombuffer(mem, np.float32, count=page // 4)
    end = page // 4  # the second run's lanes 3 .. width-5 read up to x[end - 1]; lanes past it are
    table = np.array([[0, 3, 0], [3, width - 4, end - (width - 4)]], np.int64)  # not read
    ks = np.zeros(1, np.int64)
    p = np.zeros(width, np.float32)
    pid = os.fork()
    if pid == 0:
        fn(1, x.ctypes.data, ks.ctypes.data, table.ctypes.data, p.ctypes.data)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "a run read past its last element"
