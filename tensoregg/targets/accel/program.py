"""The accelerator's program file: what the runtime loads and the simulator runs. Binary, little
-endian, no pickles (``docs/accelerator.md``, "Program file"):

- a header: magic ``TEGGACC1``, the format version, the configuration it was compiled for (batch,
  block_in, block_out and the five scratchpad sizes), the instruction count, the main-memory size and
  the region count;
- the regions of main memory: kind (constant, input, output), name, dtype, shape, byte offset, and
  for a constant its bytes;
- the instructions, 16 bytes each.

``read_program`` checks all of it (sizes, bounds, overlaps, every instruction's encoding) before
anything runs and raises ``AcceleratorError`` naming what is wrong. ``run_program`` executes one in
the simulator on named input arrays.

Imports numpy, the standard library, ``tensoregg.errors`` and the accelerator's own modules only.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass

import numpy as np

from tensoregg.errors import AcceleratorError, InputError
from tensoregg.targets.accel.isa import INSN_BYTES, Instruction, decode_stream, encode
from tensoregg.targets.accel.machines import Accel
from tensoregg.targets.accel.simulator import DEFAULT_WORK_LIMIT, Simulator, Stats

MAGIC = b"TEGGACC1"
VERSION = 1
_HEADER = struct.Struct("<8sI8IIQI")
_REGION = struct.Struct("<BB8sBQ")  # kind, name length, dtype, ndim, offset
KINDS = ("const", "input", "output")
DTYPES = ("int8", "uint8", "int32", "float32", "uint32")
MAX_DRAM = 1 << 32
"""Bytes of main memory a program may ask for (the 30-bit tile addresses reach further)."""


@dataclass(frozen=True)
class Region:
    """A named tensor in main memory: a constant (with its bytes), an input or an output."""

    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    data: bytes = b""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class AccelProgram:
    """A program for one accelerator configuration: its instructions, the size of main memory and
    the regions in it."""

    config: Accel
    instructions: tuple[Instruction, ...]
    dram_bytes: int
    regions: tuple[Region, ...]

    def to_bytes(self) -> bytes:
        """The program file."""
        c = self.config
        out = [_HEADER.pack(MAGIC, VERSION, c.batch, c.block_in, c.block_out, c.uop_entries, c.inp_entries,
                            c.wgt_entries, c.acc_entries, c.scale_entries, len(self.instructions),
                            self.dram_bytes, len(self.regions))]
        for r in self.regions:
            name = r.name.encode()
            out += [_REGION.pack(KINDS.index(r.kind), len(name), r.dtype.encode(), len(r.shape), r.offset),
                    name, struct.pack(f"<{len(r.shape)}Q", *r.shape), r.data]
        out += [encode(insn) for insn in self.instructions]
        return b"".join(out)

    def run(self, feeds: dict[str, np.ndarray], *, work_limit: int = DEFAULT_WORK_LIMIT
            ) -> tuple[dict[str, np.ndarray], Stats]:
        """Execute in the simulator on ``feeds`` (input name -> array): the outputs by name, and the
        run's Stats."""
        dram = np.zeros(self.dram_bytes, np.uint8)
        initialized = np.zeros(self.dram_bytes, bool)
        for r in self.regions:
            if r.kind == "output":
                continue
            if r.kind == "input":
                if r.name not in feeds:
                    raise InputError(f"accelerator program: missing input {r.name!r}")
                value = np.asarray(feeds[r.name])
                if value.dtype != np.dtype(r.dtype) or value.shape != r.shape:
                    raise InputError(f"accelerator program: input {r.name!r} must be "
                                     f"{r.dtype}{list(r.shape)}, not {value.dtype}{list(value.shape)}")
                data = value.astype(value.dtype.newbyteorder("<")).tobytes()
            else:
                data = r.data
            dram[r.offset:r.offset + r.nbytes] = np.frombuffer(data, np.uint8)
            initialized[r.offset:r.offset + r.nbytes] = True
        stats = Simulator(self.config, dram, initialized, work_limit=work_limit).run(list(self.instructions))
        outputs = {}
        for r in self.regions:
            if r.kind == "output":
                if not initialized[r.offset:r.offset + r.nbytes].all():
                    raise AcceleratorError(f"accelerator program: output {r.name!r} is not wholly written")
                raw = dram[r.offset:r.offset + r.nbytes].tobytes()
                outputs[r.name] = np.frombuffer(raw, np.dtype(r.dtype).newbyteorder("<")).astype(r.dtype) \
                    .reshape(r.shape)
        return outputs, stats


def read_program(data: bytes, config: Accel) -> AccelProgram:
    """The program in ``data``, checked for the accelerator ``config`` (see the module docstring)."""
    if len(data) < _HEADER.size:
        raise AcceleratorError(f"program file: {len(data)} bytes, shorter than its header")
    magic, version, *shape, n_insns, dram_bytes, n_regions = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise AcceleratorError(f"program file: magic {magic!r} is not {MAGIC!r}")
    if version != VERSION:
        raise AcceleratorError(f"program file: format version {version}, this simulator reads {VERSION}")
    c = config
    expected = [c.batch, c.block_in, c.block_out, c.uop_entries, c.inp_entries, c.wgt_entries,
                c.acc_entries, c.scale_entries]
    if shape != expected:
        raise AcceleratorError(f"program file: compiled for configuration {shape} (batch, block_in, "
                               f"block_out, uop, inp, wgt, acc, scale), not {c.name}'s {expected}")
    if dram_bytes > MAX_DRAM:
        raise AcceleratorError(f"program file: {dram_bytes} bytes of main memory, over {MAX_DRAM}")
    pos, regions = _HEADER.size, []
    for _ in range(n_regions):
        region, pos = _read_region(data, pos, dram_bytes)
        regions.append(region)
    _check_regions(regions)
    if len(data) - pos != n_insns * INSN_BYTES:
        raise AcceleratorError(f"program file: {len(data) - pos} bytes of instructions, not {n_insns} x "
                               f"{INSN_BYTES}")
    return AccelProgram(config, tuple(decode_stream(data[pos:])), dram_bytes, tuple(regions))


def _read_region(data: bytes, pos: int, dram_bytes: int) -> tuple[Region, int]:
    if pos + _REGION.size > len(data):
        raise AcceleratorError("program file: truncated in its regions")
    kind, name_len, dtype_raw, ndim, offset = _REGION.unpack_from(data, pos)
    pos += _REGION.size
    end = pos + name_len + 8 * ndim
    if end > len(data):
        raise AcceleratorError("program file: truncated in its regions")
    try:
        name = data[pos:pos + name_len].decode()
        dtype = dtype_raw.rstrip(b"\0").decode()
    except UnicodeDecodeError:
        raise AcceleratorError("program file: a region's name or dtype is not text") from None
    if kind >= len(KINDS) or dtype not in DTYPES or not name:
        raise AcceleratorError(f"program file: region {name!r}: kind {kind} or dtype {dtype!r} unknown")
    shape = struct.unpack_from(f"<{ndim}Q", data, pos + name_len)
    region = Region(name, KINDS[kind], dtype, shape, offset)
    if offset + region.nbytes > dram_bytes:
        raise AcceleratorError(f"program file: region {name!r} [{offset}, {offset + region.nbytes}) lies "
                               f"outside main memory ({dram_bytes} bytes)")
    if region.kind == "const":
        if end + region.nbytes > len(data):
            raise AcceleratorError(f"program file: constant {name!r} is truncated")
        region = Region(name, "const", dtype, shape, offset, data[end:end + region.nbytes])
        end += region.nbytes
    return region, end


def _check_regions(regions: list[Region]) -> None:
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise AcceleratorError(f"program file: region names repeat: {names}")
    spans = sorted((r.offset, r.offset + r.nbytes, r.name) for r in regions)
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end:
            raise AcceleratorError(f"program file: regions {a!r} and {b!r} overlap")
