"""The accelerator's simulated cycles on ResNet-18's 3x3 convolutions (the four stride-1 body convs,
batch 1, padding 1), int8 with bias and requantization, for each accelerator configuration, run two
ways: ``direct`` (``conv.conv_program``: the DMA reads input rows and pads them) and ``im2col`` (the
host unfolds the input, ``tensorize.gemm_program`` multiplies).

    python bench/accel.py [--targets accel,accel-small]

For each layer and way: the chunk the planner chose, the simulated cycles and milliseconds at the
configuration's clock, the GEMM core's utilization (MACs / (MACs per cycle x cycles)), the DMA bytes
read and written, and whether the output matches numpy bit for bit (else MISMATCH). The simulator's
own time is wall time on this machine, not a figure of the accelerator.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tensoregg.targets.accel.conv import Geometry, conv_program
from tensoregg.targets.accel.conv import plan as conv_plan
from tensoregg.targets.accel.machines import CONFIGS, Accel
from tensoregg.targets.accel.program import AccelProgram
from tensoregg.targets.accel.tensorize import gemm_program
from tensoregg.targets.accel.tensorize import plan as gemm_plan

LAYERS = [(64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7)]
"""(input channels, output channels, height = width) of ResNet-18's 3x3 stride-1 convs."""
SCALE, ZERO = np.float32(1 / 4096), 3


def _unfold(x: np.ndarray) -> np.ndarray:
    """(C, H, W) padded by 1 -> (H x W, C x 9) rows, in the weights' (C, ky, kx) order."""
    c, h, w = x.shape
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1)])
    taps = [padded[:, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)]
    return np.stack(taps, axis=1).reshape(c * 9, h * w).T


def _layer(config: Accel, c: int, o: int, h: int, rng: np.random.Generator) -> None:
    x = rng.integers(-128, 128, (c, h, h), dtype=np.int8)
    w = rng.integers(-128, 128, (o, c, 3, 3), dtype=np.int8)
    bias = rng.integers(-999, 999, o).astype(np.int32)
    scales = np.full(o, SCALE, np.float32)
    rows = _unfold(x)
    acc = rows.astype(np.int32) @ w.reshape(o, -1).astype(np.int32).T + bias
    want = (np.clip(np.rint(acc.astype(np.float32) * SCALE), -128 - ZERO, 127 - ZERO) + ZERO).astype(np.int8)
    g = Geometry(c, h, h, (3, 3), (1, 1), (1, 1), (1, 1), (h, h))
    direct = conv_program(config, g, w, bias, scales, ZERO, 0)
    assert direct is not None
    bi = config.block_in
    packed = x.reshape(c // bi, bi, h, h).transpose(0, 2, 3, 1)
    p = conv_plan(config, g, o // config.block_out, c // bi, bias=True)
    assert p is not None
    _run("direct", f"{p.toh} rows x {p.tob} x {p.tcb} blocks", direct, {"x": packed}, want.reshape(h, h, o))
    gemm = gemm_program(config, h * h, w.reshape(o, -1), bias, scales, ZERO)
    q = gemm_plan(config, h * h, c * 9 // bi, o // config.block_out, bias=True)
    _run("im2col", f"{q.tm} rows x {q.tn} x {q.tk} blocks", gemm, {"a": rows}, want)


def _run(way: str, chunk: str, program: AccelProgram, feeds: dict[str, np.ndarray], want: np.ndarray) -> None:
    start = time.perf_counter()
    out, stats = program.run(feeds)
    seconds = time.perf_counter() - start
    ms = stats.cycles / program.config.clock_hz * 1e3
    print(f"    {way:<7} chunk {chunk:<24} {stats.cycles:>8} cycles {ms:6.2f} ms  "
          f"utilization {stats.utilization:.3f}  DMA read {stats.dma_read:>8} "
          f"written {stats.dma_written:>7}  {'ok' if (out['y'] == want).all() else 'MISMATCH'} "
          f"(simulated in {seconds:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="accel,accel-small")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for name in args.targets.split(","):
        config = CONFIGS[name]
        print(f"{name}: {config.batch}x{config.block_in}x{config.block_out}, {config.clock_hz / 1e6:.0f} MHz")
        for c, o, h in LAYERS:
            print(f"  conv3x3 {c}->{o} {h}x{h}")
            _layer(config, c, o, h, rng)


if __name__ == "__main__":
    main()
