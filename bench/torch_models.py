"""Whole-model latency of PyTorch models: tensoregg's llvm target (through torch.export) against torch
eager, in one process, same thread count.

    python bench/torch_models.py [MODEL ...] [--threads 1,2] [--seconds S] [--json out.json]

MODEL is a name from tensoregg.testing.torch_models.MODELS (resnet18, mobilenet_v2: 1x3x224x224;
encoder_layer: nn.TransformerEncoderLayer(256, 8, 1024) on 2x32x256), seeded random weights; default
all. Each is compiled once by ``tensoregg.compile(model, "llvm", example_inputs=...)`` (its seconds
are reported) and, for each thread count, by ``torch.compile(model, backend="tensoregg")`` (whose
module takes torch's thread count). For each thread count T the
module runs with ``num_threads = T`` on numpy inputs, torch eager with ``torch.set_num_threads(T)``
under ``torch.inference_mode()`` on the same input as a tensor; the two alternate in blocks of about
0.1 s of calls (tensoregg.benchmark.time_pair), medians over about ``--seconds`` of calls per side.
The torch.compile column times the compiled callable alone (tensor in, tensor out: it adds the
conversions). ratio is tensoregg / eager (below 1: tensoregg is faster); rel_l2 compares the module's
output with eager's. The header gives the load average: on a shared machine, figures taken under a
load above the core count are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

import tensoregg
from tensoregg.benchmark import time_alone, time_pair
from tensoregg.frontends.torch_backend import tensoregg_backend
from tensoregg.testing.torch_models import MODELS


def measure(name: str, threads: list[int], seconds: float) -> list[dict[str, Any]]:
    model, inputs = MODELS[name]()
    start = time.perf_counter()
    module = tensoregg.compile(model, "llvm", example_inputs=inputs)
    compile_s = time.perf_counter() - start
    feeds = [x.numpy() for x in inputs]
    with torch.inference_mode():
        want = model(*inputs).numpy()
    (got,) = module.run(*feeds)
    rel_l2 = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    rows = []
    for t in threads:
        module.num_threads = t
        torch.set_num_threads(t)
        torch._dynamo.reset()  # the backend compiles again, for torch's thread count
        compiled = torch.compile(model, backend=tensoregg_backend, options={"target": "llvm"})
        with torch.inference_mode():
            backend_out = compiled(*inputs).numpy()
        backend_l2 = float(np.linalg.norm(backend_out - want) / np.linalg.norm(want))
        with torch.inference_mode():
            ours, eager = time_pair(lambda: module.run(*feeds), lambda: model(*inputs), None, seconds, 0.0)
            via_compile = time_alone(lambda: compiled(*inputs), None, seconds)
        row = {"model": name, "threads": t, "tensoregg_ms": statistics.median(ours) * 1e3,
               "torch_compile_ms": statistics.median(via_compile) * 1e3,
               "eager_ms": statistics.median(eager) * 1e3, "compile_s": compile_s,
               "rel_l2": rel_l2, "backend_rel_l2": backend_l2}
        row["ratio"] = row["tensoregg_ms"] / row["eager_ms"]
        rows.append(row)
        print(f"{name:14} T={t}  tensoregg {row['tensoregg_ms']:8.2f} ms  torch.compile(tensoregg) "
              f"{row['torch_compile_ms']:8.2f} ms  eager {row['eager_ms']:8.2f} ms  "
              f"ratio {row['ratio']:.2f}  rel_l2 {rel_l2:.1e}/{backend_l2:.1e}  compile {compile_s:.0f} s",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help=f"default: all of {', '.join(sorted(MODELS))}")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {sorted(MODELS)}")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    rows = [row for name in args.models or sorted(MODELS) for row in measure(name, threads, args.seconds)]
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
