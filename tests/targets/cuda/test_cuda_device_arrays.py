"""Inputs in GPU memory (``tensoregg.runtime.device_arrays``): an object with
``__cuda_array_interface__`` or a CUDA ``__dlpack__`` is read where it lies, and the outputs come back
in device memory. Without a GPU the emulation's device memory is this CPU's, so fakes holding host
addresses (and nothing a copy into numpy could use) stand in for torch and CuPy tensors, through the
compiled module's emulation and through a loaded artifact's CUDA C (the host backend); the driver
backend's pointers and allocations are checked against the fake driver in ``test_cuda_driver``. Not
tested: ``same_kind``'s torch and CuPy conversions (no CUDA build of either here)."""

import numpy as np
import pytest

import tensoregg
from tensoregg.errors import InputError
from tensoregg.runtime.cuda import EMULATE
from tensoregg.runtime.device_arrays import DeviceArray, DeviceView, dl_tensor, host_view
from tensoregg.targets.cuda.nvrtc import nvrtc_missing
from tensoregg.testing import single_op_model

needs_nvrtc = pytest.mark.skipif(nvrtc_missing() is not None, reason=str(nvrtc_missing()))
R = np.random.default_rng(4)


class FakeDLPack:
    """A CUDA tensor by DLPack: numpy's capsule with its device type set to kDLCUDA."""

    def __init__(self, memory):
        self._memory = memory

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):
        capsule = self._memory.__dlpack__()
        dl_tensor(capsule).device.device_type = 2
        return capsule


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv(EMULATE, "1")


@pytest.fixture(scope="module")
def softmax():
    """The model, its cuda module (one for the file), an input and the reference's output."""
    x = R.standard_normal((3, 40)).astype(np.float32)
    model = single_op_model("Softmax", [x], {})
    want = tensoregg.compile(model, "ref").run(x)[0]
    return model, tensoregg.compile(model, "cuda"), x, want


def on_device(result, want):
    """``result`` is one output in device memory holding ``want``."""
    (out,) = result
    assert isinstance(out, DeviceArray) and out.__cuda_array_interface__["shape"] == want.shape
    view = DeviceView(out.__cuda_array_interface__["data"][0], want.shape, want.dtype, out, "tensoregg")
    np.testing.assert_allclose(host_view(view), want, rtol=1e-6, atol=1e-7)


@needs_nvrtc
@pytest.mark.parametrize("kind", ["cuda_array_interface", "dlpack"])
def test_device_inputs_are_read_in_place_and_outputs_stay_on_the_device(softmax, kind, fake_cuda, tmp_path):
    _, module, x, want = softmax
    fake = fake_cuda if kind == "cuda_array_interface" else FakeDLPack
    memory = x.copy()
    on_device(module.run(fake(memory)), want)
    memory[:] = 2 * x  # the same device array, changed in place: the next run reads the change
    on_device(module.run(fake(memory)), np.exp(2 * x) / np.exp(2 * x).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(module.run(x)[0], want, rtol=1e-6)  # numpy in, numpy out
    if kind == "dlpack":  # past the DeviceView both kinds take the same path
        return
    module.save(tmp_path / "m.tegg")
    loaded = tensoregg.load(tmp_path / "m.tegg")  # its CUDA C on the host backend
    on_device(loaded.run(fake(x.copy())), want)


@needs_nvrtc
def test_device_arrays_the_kernels_cannot_read_are_refused(softmax, fake_cuda):
    model, module, x, _ = softmax
    wide = np.zeros((3, 80), np.float32)
    with pytest.raises(InputError, match=r"input 'in0': a strided device array \(strides \[320, 8\]\)"):
        module.run(fake_cuda(wide[:, ::2], strides=(320, 8)))
    with pytest.raises(InputError, match="input 'in0': dtype float64 does not match the model's float32"):
        module.run(fake_cuda(x.astype(np.float64)))
    with pytest.raises(InputError, match="an array in GPU memory, which target 'ref' cannot read"):
        tensoregg.compile(model, "ref").run(fake_cuda(x))
