"""The device runtime (``runtime.cuda.DriverBackend``) without a GPU: a fake driver whose "device
memory" is host memory and whose ``cuLaunchKernel`` runs the launched kernel's CUDA C compiled for
the CPU (``HostBackend``'s library), reading the kernel parameters the way the driver reads them.
So the driver-API path (one allocation for the memory plan, the copies, the parameter packing, the
launch order and grids, the errors) computes the model before it ever meets a GPU."""
# ruff: noqa: N802  (the fake's methods have the driver API's names)

import ctypes
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tensoregg
from tensoregg.errors import CompileError
from tensoregg.runtime import cuda as runtime_cuda
from tensoregg.runtime.cuda import EMULATE, DriverBackend, HostBackend
from tensoregg.targets.cuda.export import cuda_code
from tensoregg.targets.cuda.nvrtc import nvrtc_missing

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tinycnn.onnx"
pytestmark = pytest.mark.skipif(nvrtc_missing() is not None, reason=str(nvrtc_missing()))


class FakeDriver:
    """Enough of ``cuda.bindings.driver`` for DriverBackend; every call returns (0, values...)."""

    CUdevice_attribute = SimpleNamespace(**{name: name for name in (
        "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR", "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR",
        "CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT", "CU_DEVICE_ATTRIBUTE_CLOCK_RATE",
        "CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE", "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN")})
    ATTRIBUTES = {"CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR": 9,
                  "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR": 0,
                  "CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT": 132, "CU_DEVICE_ATTRIBUTE_CLOCK_RATE": 1830000,
                  "CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE": 50 << 20,
                  "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": 227 << 10}

    def __init__(self, host: HostBackend, names: list[str], fail_launch: str | None = None) -> None:
        self.host, self.names, self.fail_launch = host, names, fail_launch
        self.allocations: list[np.ndarray] = []
        self.launched: list[tuple[str, int, int]] = []
        self.freed: list[int] = []
        self.copies = 0

    def cuInit(self, flags):
        return (0,)

    def cuDeviceGetCount(self):
        return 0, 1

    def cuDeviceGet(self, ordinal):
        return 0, ordinal

    def cuDevicePrimaryCtxRetain(self, device):
        return 0, "context"

    def cuCtxSetCurrent(self, context):
        return (0,)

    def cuDeviceGetAttribute(self, attribute, device):
        return 0, self.ATTRIBUTES[attribute]

    def cuDeviceGetName(self, size, device):
        return 0, b"Fake H100\0"

    def cuModuleLoadData(self, image):
        assert image, "an empty cubin"
        return 0, "module"

    def cuModuleGetFunction(self, module, name):
        return 0, name.decode()

    def cuMemAlloc(self, size):
        memory = np.full(size, 0xFF, np.uint8)
        self.allocations.append(memory)
        return 0, int(memory.ctypes.data)

    def cuMemFree(self, pointer):
        self.freed.append(pointer)
        return (0,)

    def cuCtxSynchronize(self):
        return (0,)

    def cuMemcpyHtoD(self, dst, src, size):
        ctypes.memmove(dst, src.ctypes.data, size)
        return (0,)

    def cuMemcpyHtoDAsync(self, dst, src, size, stream):
        self.copies += 1  # a run's (the weights are copied once, synchronously)
        return self.cuMemcpyHtoD(dst, src, size)

    def cuMemcpyDtoHAsync(self, dst, src, size, stream):
        ctypes.memmove(dst.ctypes.data, src, size)
        self.copies += 1
        return (0,)

    def cuMemcpyDtoDAsync(self, dst, src, size, stream):
        ctypes.memmove(dst, src, size)
        self.copies += 1
        return (0,)

    def cuStreamCreate(self, flags):
        return 0, "stream"

    def cuStreamSynchronize(self, stream):
        return (0,)

    def cuLaunchKernel(self, function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        if function == self.fail_launch:
            return (701,)  # CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
        k = self.names.index(function)
        launch = self.host_code.launches[k]
        assert (gx, gy, gz, bx, by, bz, shared) == (launch.blocks, 1, 1, launch.threads, 1, 1, 0)
        values = [ctypes.c_uint64.from_address(ctypes.c_uint64.from_address(params + 8 * j).value).value
                  for j in range(len(launch.params))]
        argv = (ctypes.c_void_p * max(len(values), 1))(*values)
        getattr(self.host.library, f"te_launch_{k}")(argv)
        self.launched.append((function, gx, bx))
        return (0,)

    def cuGetErrorName(self, status):
        return 0, {701: b"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"}.get(int(status), b"CUDA_ERROR")


def fake_device(monkeypatch, code, **options) -> FakeDriver:
    fake = FakeDriver(HostBackend(code), [s.name for s in code.launches], **options)
    fake.host_code = code
    monkeypatch.setattr(runtime_cuda, "_driver", lambda: fake)
    return fake


@pytest.fixture
def example(monkeypatch):
    monkeypatch.setenv(EMULATE, "1")
    module = tensoregg.compile(str(EXAMPLE), "cuda")
    monkeypatch.delenv(EMULATE)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(module.input_shapes[0]).astype(np.float32)
    return module, {module.input_names[0]: x}, tensoregg.compile(str(EXAMPLE), "ref").run(x)


def test_the_driver_path_computes_the_model(monkeypatch, example):
    module, feeds, want = example
    code = cuda_code(module.program)
    fake = fake_device(monkeypatch, code)
    backend = DriverBackend(code)
    assert len(fake.allocations) == 1, "the memory plan is one allocation"
    got = code.run_with(backend, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    assert [name for name, _, _ in fake.launched] == [s.name for s in code.launches]
    got_again = code.run_with(backend, feeds)  # the workspace is reused
    np.testing.assert_array_equal(got_again[0], got[0])


def test_a_module_runs_on_the_device_when_one_is_present(monkeypatch, example):
    module, feeds, want = example
    fake_device(monkeypatch, cuda_code(module.program))
    np.testing.assert_allclose(module.run(**feeds)[0], want[0], rtol=1e-5, atol=1e-6)


def test_device_arrays_are_launched_on_where_they_lie(monkeypatch, example, fake_cuda):
    """An input with ``__cuda_array_interface__`` is passed to the kernels as its pointer, the output
    is a fresh device allocation they write into: no copy either way; freed with the output."""
    module, feeds, want = example
    fake = fake_device(monkeypatch, cuda_code(module.program))
    (x,) = feeds.values()
    (out,) = module.run(fake_cuda(x.copy()))
    assert fake.copies == 0 and len(fake.allocations) == 2  # the memory plan, the output
    module.run(**feeds)
    assert fake.copies == 2  # numpy in and out: copied
    pointer = out.__cuda_array_interface__["data"][0]
    assert pointer == int(fake.allocations[1].ctypes.data)
    got = fake.allocations[1].view(np.float32)[:want[0].size].reshape(want[0].shape)
    np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-6)
    del out
    assert fake.freed == [pointer]


def test_a_device_array_not_16_byte_aligned_is_copied_on_the_device_first(monkeypatch, example, fake_cuda):
    """The kernels' 16-byte accesses (cp.async, float4) need aligned buffers: a view at an odd offset
    is copied into the plan's input area (device to device) and read there."""
    module, feeds, want = example
    fake = fake_device(monkeypatch, cuda_code(module.program))
    (x,) = feeds.values()
    memory = np.zeros(x.size + 4, np.float32)
    odd = memory[1:1 + x.size].reshape(x.shape)
    odd[...] = x
    (out,) = module.run(fake_cuda(odd))
    assert fake.copies == 1
    got = fake.allocations[1].view(np.float32)[:want[0].size].reshape(want[0].shape)
    np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-6)
    del out


def test_a_failed_launch_names_the_kernel_and_its_grid(monkeypatch, example):
    module, feeds, _ = example
    code = cuda_code(module.program)
    victim = code.launches[1]
    fake_device(monkeypatch, code, fail_launch=victim.name)
    where = rf"\(kernel {victim.name}, grid {victim.blocks}, block {victim.threads}\)"
    with pytest.raises(CompileError, match=rf"cuLaunchKernel failed: CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES "
                                           rf"{where}"):
        code.run_with(DriverBackend(code), feeds)


def test_a_device_of_an_architecture_without_a_cubin_is_refused(monkeypatch, example):
    module, _, _ = example
    code = cuda_code(module.program)
    fake = fake_device(monkeypatch, code)
    fake.ATTRIBUTES = {**FakeDriver.ATTRIBUTES, "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR": 7}
    with pytest.raises(CompileError, match=r"cubins for .*sm_90.*the device is sm_70"):
        DriverBackend(code)
