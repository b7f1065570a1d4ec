"""The accelerator's simulator: bit-exact GEMM and ALU semantics, timing counters, the program
file, what it rejects, and 200 fuzzed instruction streams that it runs or rejects with its error."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.errors import AcceleratorError, InputError
from tensoregg.targets.accel.isa import FLAGS, Instruction, assemble, decode_stream, encode_uop
from tensoregg.targets.accel.machines import SMALL, VTA, Accel
from tensoregg.targets.accel.program import AccelProgram, Region, read_program

sys.path.insert(0, str(Path(__file__).parent))
from accel_strategies import instructions


def program(config: Accel, text: str, regions: list[Region], dram_bytes: int = 1 << 16) -> AccelProgram:
    """An assembled program, through its file (so every test also round-trips the file format)."""
    made = AccelProgram(config, tuple(decode_stream(assemble(text))), dram_bytes, tuple(regions))
    loaded = read_program(made.to_bytes(), config)
    assert loaded == made
    return loaded


def matmul(config: Accel, a: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, object]:
    """a (M, K) int8 times w (N, K) int8 transposed, into int32, as one hand-written program."""
    bi, bo = config.block_in, config.block_out
    (m, k), n = a.shape, w.shape[0]
    kb, nb = k // bi, n // bo
    packed = w.reshape(nb, bo, kb, bi).transpose(0, 2, 1, 3).copy()
    uops = np.array([encode_uop(0, j, j) for j in range(kb)], np.uint32)
    wgt_at, uop_at, out_at = 1 << 12, 1 << 13, 1 << 14
    loops = f"iter_out={m} iter_in={nb} dst_out={nb} dst_in=1"
    text = f"""
    load memory=uop dram={uop_at // 4} y_size=1 x_size={kb}
    load memory=inp y_size=1 x_size={m * kb}
    load memory=wgt dram={wgt_at // (bi * bo)} y_size=1 x_size={nb * kb} push_next
    gemm reset uop_end=1 {loops}
    gemm uop_end={kb} {loops} src_out={kb} wgt_in={kb} pop_prev push_next
    store memory=acc dram={out_at // (4 * bo)} y_size=1 x_size={m * nb} pop_prev
    finish
    """
    prog = program(config, text, [Region("a", "input", "int8", a.shape, 0),
                                  Region("w", "const", "int8", packed.shape, wgt_at, packed.tobytes()),
                                  Region("uops", "const", "uint32", uops.shape, uop_at, uops.tobytes()),
                                  Region("c", "output", "int32", (m, n), out_at)])
    outputs, stats = prog.run({"a": a})
    return outputs["c"], stats


@pytest.mark.parametrize("config", [VTA, SMALL], ids=lambda c: c.name)
def test_matmul_bit_exact_and_counted(config: Accel) -> None:
    rng = np.random.default_rng(0)
    m, k, n = 5, 4 * config.block_in, 2 * config.block_out
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    c, stats = matmul(config, a, w)
    np.testing.assert_array_equal(c, a.astype(np.int32) @ w.astype(np.int32).T)
    assert stats.macs == m * k * n
    assert stats.dma_read == a.size + w.size + 4 * 4 and stats.dma_written == c.nbytes
    assert stats.busy["gemm"] == m * 2 * 4 + m * 2 + 2 * config.gemm_depth  # accumulate + reset steps
    assert stats.instructions == {"load": 3, "gemm": 2, "store": 1, "finish": 1}
    assert stats.stalls["store"] > 0 and stats.cycles >= sum(stats.busy.values()) - stats.busy["load"]
    assert 0 < stats.utilization < 1


def alu(text: str, x: np.ndarray, *, y: np.ndarray | None = None,
        scale: np.ndarray | None = None) -> np.ndarray:
    """Accumulator tiles ``x`` (n, 1, 16) int32 after ``alu {text}`` on each (its source: ``y``'s
    tiles, or the scale rows ``scale``)."""
    n = len(x)
    src = np.zeros_like(x) if y is None else y
    scales = np.ones((n, 16), np.float32) if scale is None else scale
    uops = np.array([encode_uop(j, j if scale is not None else n + j) for j in range(n)], np.uint32)
    tile = 64
    prog = program(VTA, f"""
    load memory=uop dram={(6 * n * tile) // 4} y_size=1 x_size={n}
    load memory=acc dram=0 y_size=1 x_size={n}
    load memory=acc sram={n} dram={n} y_size=1 x_size={n}
    load memory=scale dram={2 * n} y_size=1 x_size={n}
    alu uop_end={n} iter_out=1 iter_in=1 {text} push_next
    store memory=acc dram={4 * n} y_size=1 x_size={n} pop_prev
    finish
    """, [Region("x", "input", "int32", x.shape, 0), Region("y", "input", "int32", x.shape, n * tile),
          Region("s", "input", "float32", scales.shape, 2 * n * tile),
          Region("out", "output", "int32", x.shape, 4 * n * tile),
          Region("uops", "const", "uint32", uops.shape, 6 * n * tile, uops.tobytes())])
    return prog.run({"x": x, "y": src, "s": scales})[0]["out"]


def test_alu_operations() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 31), 1 << 31, (3, 1, 16), dtype=np.int64).astype(np.int32)
    y = rng.integers(-(1 << 31), 1 << 31, (3, 1, 16), dtype=np.int64).astype(np.int32)
    wide = x.astype(np.int64)
    np.testing.assert_array_equal(alu("alu=min", x, y=y), np.minimum(x, y))
    np.testing.assert_array_equal(alu("alu=max use_imm imm=-5", x), np.maximum(x, -5))
    np.testing.assert_array_equal(alu("alu=add", x, y=y), (wide + y).astype(np.int32))  # wraps
    np.testing.assert_array_equal(alu("alu=mul use_imm imm=3", x), (wide * 3).astype(np.int32))
    np.testing.assert_array_equal(alu("alu=shr use_imm imm=4", x), (wide + 8) >> 4)  # rounds half up
    np.testing.assert_array_equal(alu("alu=shr use_imm imm=-2", x), (wide << 2).astype(np.int32))
    np.testing.assert_array_equal(alu("alu=clip use_imm imm=0x7f00", x), np.clip(x, 0, 127))
    np.testing.assert_array_equal(alu("alu=add reset", x, y=y), 0)
    small = np.arange(-24, 24, dtype=np.int32).reshape(3, 1, 16)
    np.testing.assert_array_equal(alu("alu=shr use_imm imm=1", small), [(v + 1) >> 1 for v in small])


def test_requantize_rounds_half_to_even_and_saturates() -> None:
    x = np.array([1, 3, 5, -1, -3, 7, 1000, -1000] * 2, np.int32).reshape(1, 1, 16)
    scale = np.full((1, 16), 0.5, np.float32)
    got = alu("alu=req use_imm imm=-3", x, scale=scale)
    np.testing.assert_array_equal(got.reshape(-1)[:8], [0 - 3, 2 - 3, 2 - 3, 0 - 3, -2 - 3, 4 - 3, 127, -128])


def test_sequential_alu_steps_see_each_others_writes() -> None:
    x = np.arange(48, dtype=np.int32).reshape(3, 1, 16)
    uops = np.array([encode_uop(1, 0), encode_uop(2, 1)], np.uint32)  # acc1 += acc0, then acc2 += acc1
    prog = program(VTA, """
    load memory=uop dram=64 y_size=1 x_size=2
    load memory=acc y_size=1 x_size=3
    alu uop_end=2 iter_out=1 iter_in=1 alu=add push_next
    store memory=acc dram=8 y_size=1 x_size=3 pop_prev
    finish
    """, [Region("x", "input", "int32", x.shape, 0),
          Region("u", "const", "uint32", (2,), 256, uops.tobytes()),
          Region("out", "output", "int32", x.shape, 512)])
    out = prog.run({"x": x})[0]["out"]
    np.testing.assert_array_equal(out, [x[0], x[1] + x[0], x[2] + x[1] + x[0]])


REGIONS = [Region("x", "input", "int8", (64,), 0), Region("y", "output", "int8", (64,), 1024)]


@pytest.mark.parametrize(("text", "message"), [
    ("load memory=inp sram=2047 y_size=1 x_size=2\nfinish", "overflow the inp scratchpad of 2048"),
    ("load memory=inp dram=4095 y_size=1 x_size=2\nfinish", "outside its 65536 bytes"),
    ("load memory=inp dram=64 y_size=1 x_size=1\nfinish", "byte 1024, which nothing initialised"),
    ("load memory=wgt y_size=1 x_size=1 pad_value=3\nfinish", "only input loads take a pad_value"),
    ("gemm uop_end=1 pop_prev\nfinish", "token deadlock: compute waits at instruction 0"),
    ("load memory=inp y_size=1 x_size=1 push_next\nfinish", r"never popped at the end: \{'l2g': 1\}"),
    ("load memory=inp y_size=1 x_size=1 pop_prev\nfinish", "load module, which has no pop_prev"),
    ("store memory=out y_size=1 x_size=1 push_next\nfinish", "store module, which has no push_next"),
    ("gemm uop_end=1", "ends with its only finish"),
    ("finish\nfinish", "ends with its only finish"),
    ("gemm uop_end=1 iter_out=300 iter_in=1 dst_out=7\nfinish", "acc index 2093 outside the scratchpad"),
    ("gemm uop_bgn=2 uop_end=1\nfinish", r"uops \[2, 1\) outside"),
    ("alu uop_end=1 iter_out=1 iter_in=1 alu=shr\nfinish", "alu shr takes an immediate"),
    ("alu uop_end=1 iter_out=1 iter_in=1 alu=clip use_imm imm=1\nfinish", r"bounds \(1, 0\) are reversed"),
    ("store memory=out x_pad0=1\nfinish", "a store takes no padding"),
    ("load memory=inp y_size=1 x_size=1\ngemm uop_end=1 iter_out=1 iter_in=1\nfinish",
     "a race: the (load module writes|compute module reads) inp entries"),
    ("gemm reset uop_end=1 iter_out=1 iter_in=1\nstore memory=out dram=64 y_size=1 x_size=1\nfinish",
     "a race: the (store module reads|compute module writes) acc entries"),
    ("alu uop_end=10 iter_out=10000 iter_in=10000 alu=add use_imm imm=1\nfinish", "work limit"),
])
def test_rejects(text: str, message: str) -> None:
    prog = program(VTA, text, REGIONS)
    with pytest.raises(AcceleratorError, match=message):
        prog.run({"x": np.zeros(64, np.int8)}, work_limit=1000)


def test_inputs_and_outputs_are_checked() -> None:
    prog = program(VTA, "finish", REGIONS)
    with pytest.raises(InputError, match="input 'x' must be int8"):
        prog.run({"x": np.zeros(64, np.int32)})
    with pytest.raises(AcceleratorError, match="output 'y' is not wholly written"):
        prog.run({"x": np.zeros(64, np.int8)})


def test_program_file_is_checked() -> None:
    good = program(VTA, "finish", REGIONS).to_bytes()
    with pytest.raises(AcceleratorError, match="magic"):
        read_program(b"X" + good[1:], VTA)
    with pytest.raises(AcceleratorError, match="not accel-small's"):
        read_program(good, SMALL)
    with pytest.raises(AcceleratorError, match="bytes of instructions"):
        read_program(good[:-1], VTA)
    overlapping = (REGIONS[0], Region("z", "output", "int8", (8,), 60))
    with pytest.raises(AcceleratorError, match="regions 'x' and 'z' overlap"):
        read_program(AccelProgram(VTA, (), 4096, overlapping).to_bytes(), VTA)
    with pytest.raises(AcceleratorError, match="outside main memory"):
        read_program(AccelProgram(VTA, (), 100, tuple(REGIONS)).to_bytes(), VTA)


FUZZ_DRAM = 8192
FUZZ_DATA = np.random.default_rng(2).integers(0, 256, FUZZ_DRAM // 2, dtype=np.uint8)


@settings(max_examples=200, deadline=None)
@given(st.lists(instructions(small=True), max_size=10), st.booleans())
def test_fuzzed_streams_run_or_are_rejected(stream: list[Instruction], tokens: bool) -> None:
    if not tokens:
        stream = [Instruction(i.op, {k: v for k, v in i.fields.items() if k not in FLAGS}) for i in stream]
    stream = [i for i in stream if i.op != "finish"] + [Instruction("finish")]
    prog = AccelProgram(SMALL, tuple(stream), FUZZ_DRAM,
                        (Region("data", "const", "uint8", (FUZZ_DRAM // 2,), 0, FUZZ_DATA.tobytes()),))
    with contextlib.suppress(AcceleratorError):
        prog.run({}, work_limit=20_000)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255), st.booleans())
def test_damaged_program_files_load_and_run_or_are_rejected(position: int, byte: int, cut: bool) -> None:
    good = program(VTA, "load memory=inp y_size=1 x_size=4 push_next\ngemm uop_end=1 pop_prev\nfinish",
                   [Region("x", "input", "int8", (64,), 0)]).to_bytes()
    position %= len(good)
    damaged = good[:position] if cut else good[:position] + bytes([byte]) + good[position + 1:]
    with contextlib.suppress(AcceleratorError, InputError):
        read_program(damaged, VTA).run({"x": np.zeros(64, np.int8)}, work_limit=20_000)


def test_loads_and_stores_share_one_dma_bus() -> None:
    """Two loads start at once on two modules, 128 cycles of transfer each after 64 of latency: the
    second waits for the first's transfer."""
    prog = program(VTA, "load memory=inp y_size=1 x_size=64\nload memory=acc y_size=1 x_size=16\nfinish",
                   [Region("x", "input", "int8", (2048,), 0)])
    stats = prog.run({"x": np.zeros(2048, np.int8)})[1]
    assert stats.cycles == 64 + 128 + 128 and stats.stalls["bus"] == 128
    assert stats.busy["load"] == stats.busy["compute-load"] == 64 + 128
