"""What the cuda tests share: the check that GPU templates build without spills, and a stand-in for
an array in GPU memory."""

import pytest

from tensoregg.targets.cuda import GPUS
from tensoregg.targets.cuda.nvrtc import compile_source


def assert_builds_without_spills(source, kernels):
    """``source`` built by NVRTC for sm_80 and sm_90: each of ``kernels`` ((name, template) pairs)
    without spills or local memory, with the shared memory its template declares, within a block's."""
    for arch in ("sm_80", "sm_90"):
        resources = compile_source(source, arch).resources
        for name, t in kernels:
            r = resources[name]
            assert r.spill_stores == r.spill_loads == 0 and r.stack_bytes == 0, (arch, str(t), r)
            assert r.shared_bytes == t.shared_bytes <= GPUS[arch].shared_per_block, (arch, str(t), r)


@pytest.fixture
def builds_without_spills():
    return assert_builds_without_spills


class FakeCuda:
    """An array in "device memory" (host memory, the emulation's and the fake driver's device) that
    only says where it is (``__cuda_array_interface__``): no ``__array__``, no buffer to copy from."""

    def __init__(self, memory, strides=None):
        self._memory = memory
        self.__cuda_array_interface__ = {"shape": memory.shape, "typestr": memory.dtype.str,
                                         "data": (memory.ctypes.data, False), "strides": strides,
                                         "version": 3}


@pytest.fixture
def fake_cuda():
    return FakeCuda
