"""The accelerator's simulated cycles on ResNet-18's 3x3 convolutions (the four stride-1 body convs,
batch 1), tiled onto the GEMM core as int8 matrix products (im2col rows x weights, plus bias,
requantized), for each accelerator configuration.

    python bench/accel.py [--targets accel,accel-small]

For each layer: the product's M x K x N, the blocking ``tensorize.plan`` chose (rows, BLOCK_OUT blocks
and BLOCK_IN blocks per chunk), the simulated cycles and milliseconds at the configuration's clock,
the GEMM core's utilization (MACs / (MACs per cycle x cycles)), the DMA bytes read (the im2col rows:
9x the input) and written, the busy cycles of each unit and the cycles each module waited on tokens.
The result is checked against numpy (bit-exact, else MISMATCH). Simulator time is wall time on this
machine, not a figure of the accelerator.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tensoregg.targets.accel.machines import CONFIGS
from tensoregg.targets.accel.tensorize import gemm_program, plan

LAYERS = [(64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7)]
"""(input channels, output channels, output height = width) of ResNet-18's 3x3 stride-1 convs."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="accel,accel-small")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for name in args.targets.split(","):
        config = CONFIGS[name]
        print(f"{name}: {config.batch}x{config.block_in}x{config.block_out}, {config.clock_hz / 1e6:.0f} MHz")
        for c, o, h in LAYERS:
            m, k, n = h * h, 9 * c, o
            w = rng.integers(-128, 128, (n, k), dtype=np.int8)
            bias = rng.integers(-999, 999, n).astype(np.int32)
            scales = np.full(n, 1 / 4096, np.float32)
            program = gemm_program(config, m, w, bias, scales, 3)
            a = rng.integers(-128, 128, (m, program.regions[0].shape[1]), dtype=np.int8)
            start = time.perf_counter()
            out, stats = program.run({"a": a})
            seconds = time.perf_counter() - start
            acc = a[:, :k].astype(np.int32) @ w.astype(np.int32).T + bias
            want = np.clip(np.rint(acc.astype(np.float32) * scales), -131, 124).astype(np.int32) + 3
            ok = "ok" if (out["y"][:, :n] == want).all() else "MISMATCH"
            p = plan(config, m, -(-k // config.block_in), -(-n // config.block_out), bias=True)
            print(f"  conv3x3 {c:>3}->{o:<3} {h:>2}x{h:<2} M={m:<5} K={k:<5} N={n:<4} "
                  f"chunk {p.tm}x{p.tn}x{p.tk}  {stats.cycles:>8} cycles "
                  f"{stats.cycles / config.clock_hz * 1e3:7.2f} ms  utilization {stats.utilization:.3f}  "
                  f"DMA read {stats.dma_read} written {stats.dma_written}  {ok} "
                  f"(simulated in {seconds:.1f} s)")
            print(f"    busy {dict(stats.busy)}  token stalls {dict(stats.stalls)}")


if __name__ == "__main__":
    main()
