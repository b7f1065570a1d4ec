"""Arrays in GPU memory as a ``cuda`` module's inputs and outputs, without a copy: any object with
``__cuda_array_interface__`` (version 2 or 3: CuPy, Numba, PyTorch) or with ``__dlpack__`` on a CUDA
device (``__dlpack_device__()`` of kDLCUDA: PyTorch, CuPy, JAX) is read as a :class:`DeviceView`
(its pointer, shape and dtype; the kernels read it where it lies); the outputs of a run given one
are :class:`DeviceArray` s in memory the run allocated, returned as the kind of array given
(``same_kind``: torch tensors, CuPy arrays; other kinds get the ``DeviceArray``, which has
``__cuda_array_interface__``). Under the emulation the "device" is this CPU: a pointer is a host
address (``host_view``)."""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensoregg.errors import InputError

CUDA_DEVICES = (2, 13)
"""DLPack's device types of CUDA memory (``DLDeviceType``: kDLCUDA, kDLCUDAManaged)."""
DL_CODES = {0: "i", 1: "u", 2: "f", 5: "b"}
"""DLPack's type codes (``DLDataTypeCode``: int, uint, float, bfloat) as numpy kinds."""


@dataclass(frozen=True)
class DeviceView:
    """A contiguous array in device memory given as an input: where it starts, its shape and dtype,
    the object given, its kind (the top-level module of its type: ``torch``, ``cupy``...), and what
    must stay alive while the kernels read it (a DLPack capsule)."""

    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype
    value: Any
    kind: str
    keep: Any = None


class DeviceArray:
    """An output in device memory (``owner`` keeps the allocation alive; freed with it)."""

    def __init__(self, pointer: int, shape: tuple[int, ...], dtype: np.dtype, owner: Any) -> None:
        self.pointer, self.shape, self.dtype, self.owner = pointer, shape, np.dtype(dtype), owner

    @classmethod
    def on_host(cls, array: np.ndarray) -> DeviceArray:
        """``array``'s memory as device memory (the emulation's: this CPU's)."""
        return cls(int(array.ctypes.data), tuple(array.shape), array.dtype, array)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.pointer, False),
                "strides": None, "version": 3}

    def __repr__(self) -> str:
        return f"<tensoregg.DeviceArray {self.dtype}[{','.join(map(str, self.shape))}] at {self.pointer:#x}>"


def device_view(value: Any, name: str) -> DeviceView | None:
    """``value`` as a :class:`DeviceView` if it is an array in CUDA memory (module docstring), else
    None; InputError naming input ``name`` for one the kernels cannot read as it is (strided, a mask,
    an unknown dtype)."""
    kind = type(value).__module__.split(".")[0]
    interface = getattr(value, "__cuda_array_interface__", None)
    if interface is not None:
        return _from_interface(value, interface, name, kind)
    device = getattr(value, "__dlpack_device__", None)
    on_gpu = device is not None and hasattr(value, "__dlpack__") and int(device()[0]) in CUDA_DEVICES
    if on_gpu:
        return _from_dlpack(value, name, kind)
    return None


def _from_interface(value: Any, interface: dict[str, Any], name: str, kind: str) -> DeviceView:
    try:
        shape = tuple(int(n) for n in interface["shape"])
        dtype = np.dtype(interface["typestr"])
        pointer, _ = interface["data"]
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"input {name!r}: a malformed __cuda_array_interface__ ({e})") from e
    if interface.get("mask") is not None:
        raise InputError(f"input {name!r}: a masked __cuda_array_interface__ array is not supported")
    _check_contiguous(interface.get("strides"), shape, dtype, name)
    return DeviceView(int(pointer or 0), shape, dtype, value, kind)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


def dl_tensor(capsule: Any) -> _DLTensor:
    """The ``DLTensor`` a DLPack capsule (``"dltensor"``) holds, read in place."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return _DLTensor.from_address(get(capsule, b"dltensor"))  # the DLManagedTensor starts with it


def _from_dlpack(value: Any, name: str, kind: str) -> DeviceView:
    """The capsule is kept (in ``source``) unconsumed: its producer frees it with the capsule."""
    capsule = value.__dlpack__()
    t = dl_tensor(capsule)
    if t.device.device_type not in CUDA_DEVICES:
        raise InputError(f"input {name!r}: __dlpack__ gave a tensor on device type {t.device.device_type}, "
                         "not CUDA memory")
    if t.dtype.code not in DL_CODES or t.dtype.lanes != 1 or t.dtype.bits % 8:
        raise InputError(f"input {name!r}: DLPack dtype code {t.dtype.code}, {t.dtype.bits} bits, "
                         f"{t.dtype.lanes} lanes is not supported")
    code = DL_CODES[t.dtype.code]
    dtype = np.dtype("bfloat16" if code == "b" else f"{code}{t.dtype.bits // 8}")
    shape = tuple(t.shape[k] for k in range(t.ndim))
    strides = None if not t.strides else [t.strides[k] * dtype.itemsize for k in range(t.ndim)]
    _check_contiguous(strides, shape, dtype, name)
    return DeviceView(int(t.data or 0) + int(t.byte_offset), shape, dtype, value, kind, capsule)


def _check_contiguous(strides: Any, shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    """InputError unless ``strides`` (bytes; None: C order) are row-major contiguous (axes of extent
    1 may have any)."""
    if strides is None:
        return
    expected: list[int] = []
    step = dtype.itemsize
    for n in reversed(shape):
        expected.insert(0, step)
        step *= n
    if any(n > 1 and int(s) != e for s, e, n in zip(strides, expected, shape)):
        raise InputError(f"input {name!r}: a strided device array (strides {list(strides)}); the kernels "
                         "read row-major contiguous memory: make it contiguous first")


def host_view(view: DeviceView) -> np.ndarray:
    """The array at ``view``'s address in this process's memory (the emulation's device memory)."""
    nbytes = int(np.prod(view.shape, dtype=np.int64)) * view.dtype.itemsize
    if not nbytes:
        return np.zeros(view.shape, view.dtype)
    raw = (ctypes.c_uint8 * nbytes).from_address(view.pointer)
    return np.frombuffer(memoryview(raw), view.dtype).reshape(view.shape)


def same_kind(kind: str, array: DeviceArray) -> Any:
    """``array`` as an array of ``kind`` (``torch``: a CUDA tensor; ``cupy``: a CuPy array; both
    sharing its memory), else as it is."""
    if kind == "torch":
        return importlib.import_module("torch").as_tensor(array, device="cuda")
    if kind == "cupy":
        return importlib.import_module("cupy").asarray(array)
    return array
