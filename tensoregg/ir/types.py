"""Tensor types: a numpy dtype and a static shape."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tensoregg.errors import TensoreggError


@dataclass(frozen=True)
class TensorType:
    """The type of a value in a Graph: element dtype and a fully static shape."""

    dtype: np.dtype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # a Python int: no int64 overflow on absurd dims

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @classmethod
    def of(cls, array: np.ndarray) -> TensorType:
        return cls(array.dtype, array.shape)

    def __str__(self) -> str:
        return f"{dtype_name(self.dtype)}[{','.join(map(str, self.shape))}]"


def dtype_name(dtype: np.dtype) -> str:
    """Short dtype name used by the printer and in error messages (``f32``, ``i64``, ``bool``)."""
    dtype = np.dtype(dtype)
    short = {"f": "f", "i": "i", "u": "u"}
    if dtype.kind in short and dtype.name.startswith(("float", "int", "uint")):
        return f"{short[dtype.kind]}{dtype.itemsize * 8}"
    if dtype == np.bool_:
        return "bool"
    if dtype == np.dtype(object):
        return "str"
    return dtype.name


def sample_array(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Seeded sample data: standard normal floats, small integers (0 to 3), random bools."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 4, shape).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    raise TensoreggError(f"cannot make sample data of dtype {dtype}")
