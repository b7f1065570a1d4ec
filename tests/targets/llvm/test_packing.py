"""The panel transpose (``PanelTranspose``, emitted by ``tensoregg.targets.llvm.packing``): against
numpy on every tile width the host offers and more, k counts around the vector chunk, edge panels
with fewer rows than the width, NaN between the rows (never read) and after the panel (never
written), and a run whose last row ends at an unreadable page."""

import ctypes
import mmap
import os

import llvmlite.ir as ir
import numpy as np
import pytest

from tensoregg.targets import PanelTranspose
from tensoregg.targets.llvm.host import host_target
from tensoregg.targets.llvm.jit import JitModule
from tensoregg.targets.llvm.packing import CHUNK, emit_panel_transpose

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
