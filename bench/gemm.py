"""fp32 GEMM throughput: tensoregg's llvm target against numpy (OpenBLAS), in one process, same threads.

    python bench/gemm.py [--threads 1,2] [--shapes 256,512,1024,2048,128x768x3072] [--seconds S]
                         [--settle S] [--json out.json]

A shape is ``N`` (N x N x N) or ``MxKxN``: C[M, N] = A[M, K] @ B[K, N]. Each shape gives two rows per
thread count: ``B input`` (a MatMul graph with both operands as inputs: A and B are packed on every
call) and ``B const`` (B an initializer, the weights of a layer: packed once at compile time).

What is measured: the wall time of one call, ``NativeModel.run({"a": a, "b": b})`` (or ``{"a": a}``)
against ``a @ b``, on the same seeded standard-normal float32 arrays, both allocating their result, so
both include their per-call overhead (numpy has no constant-operand form: its call is the same in
both rows). The model is compiled once per shape and variant with the default
chooser (``NativeModel(graph)``: the schedule of least predicted time); the schedule it picked is
reported (micro-kernel mr x nr, the mc/nc/kc blocks and the split_m x split_n parallel tasks, or
``untiled``), with the compile seconds. Each thread count T runs in its own spawned process with
OPENBLAS_NUM_THREADS=T set before numpy loads, tensoregg with ``num_threads = T``. After 2 warm-up calls
each, the two alternate in blocks of about 0.1 s of calls (tensoregg, then as many numpy calls) until
each side has about ``--seconds`` of calls (at least 5); the figures are medians.

With T > 1 each tensoregg block starts after a ``--settle`` pause (0.2 s, not timed): OpenBLAS's
threads spin for about 0.1 s after a call, and a tensoregg call in that window shares the cores with
them (../shared/notes/llvmlite.md, "Benchmarking"). numpy keeps the benefit of back-to-back calls.

Reported: GFLOP/s (2 M N K / median seconds) of both, ratio = tensoregg / numpy throughput (above 1:
tensoregg is faster), each as % of the FMA peak (the llvm target's measured one-core peak x T), and the
error of tensoregg's result against numpy's, max |got - want| / (|want| + 1e-3 max|want|), flagged
MISMATCH above 1e-3. The header gives the machine (LLVM's CPU name, the cores the llvm target uses) and
the load average at the start and the end: figures taken under a load above the core count are noise.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from models import child_rows

from tensoregg.benchmark import RTOL, max_rel_err, quartiles, time_pair

DEFAULT_SHAPES = "256,512,1024,2048,128x768x3072"
VARIANTS = ("B input", "B const")


@dataclass(frozen=True)
class Settings:
    shapes: tuple[tuple[int, int, int], ...]
    """(M, K, N) of each product."""
    seconds: float
    settle: float


def parse_shape(text: str) -> tuple[int, int, int]:
    """``N`` -> (N, N, N); ``MxKxN`` -> (M, K, N)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 1:
        raise ValueError(f"shape {text!r}: expected N or MxKxN with positive sizes")
    m, k, n = parts
    return m, k, n


def describe(schedule: Any) -> str:
    """A schedule in one short line."""
    from tensoregg.ir.schedules import GemmSchedule

    if not isinstance(schedule, GemmSchedule):
        return "untiled"
    s = schedule
    return (f"{s.ukernel.mr}x{s.ukernel.nr} mc={s.mc} nc={s.nc} kc={s.kc} "
            f"split={s.split_m}x{s.split_n}")


def compile_matmul(m: int, k: int, n: int, constant_b: bool, rng: Any) -> tuple[Any, dict[str, Any], Any]:
    """(model compiled with the default chooser, feeds, the schedule it chose) for A[m,k] @ B[k,n]."""
    import numpy as np

    from tensoregg.ir import Graph, Node, TensorType
    from tensoregg.targets.llvm import NativeModel
    from tensoregg.targets.llvm.gemm_schedules import choose_gemm_schedule
    from tensoregg.targets.llvm.host import host_target

    f32 = np.dtype(np.float32)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    inputs = {"a": TensorType(f32, (m, k))}
    weights = {}
    if constant_b:
        weights["b"] = b
    else:
        inputs["b"] = TensorType(f32, (k, n))
    graph = Graph(inputs, weights, [Node("MatMul", ("a", "b"), ("y",))], ["y"])
    chosen: list[Any] = []
    target = host_target()

    def choose(problem: Any) -> Any:  # the default chooser, recording its pick
        chosen.append(choose_gemm_schedule(problem, target))
        return chosen[-1]

    model = NativeModel(graph, choose=choose)
    feeds = {"a": a} if constant_b else {"a": a, "b": b}
    return model, feeds, chosen[-1] if chosen else None


def measure(threads: int, settings: Settings, out: Any) -> None:
    """One row per shape and variant at ``threads`` threads on ``out``."""
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(threads):
        raise RuntimeError("OPENBLAS_NUM_THREADS must be set before numpy loads")
    import numpy as np

    from tensoregg.targets.llvm.host import host_target

    peak = host_target().core_flops * threads
    rng = np.random.default_rng(0)
    for m, k, n in settings.shapes:
        flops = 2.0 * m * n * k
        for variant in VARIANTS:
            start = time.perf_counter()
            model, feeds, schedule = compile_matmul(m, k, n, variant == "B const", rng)
            compile_s = time.perf_counter() - start
            model.num_threads = threads
            a, b = feeds["a"], feeds.get("b", model.graph.initializers.get("b"))
            err = max_rel_err(model.run(feeds), [a @ b])
            ours, theirs = time_pair(partial(model.run, feeds), partial(np.matmul, a, b), None,
                                     settings.seconds, settings.settle if threads > 1 else 0.0)
            te, ref = flops / statistics.median(ours) / 1e9, flops / statistics.median(theirs) / 1e9
            out.put({"shape": f"{m}x{k}x{n}", "variant": variant, "threads": threads,
                     "compile_s": compile_s, "tensoregg_gflops": te, "numpy_gflops": ref,
                     "ratio": te / ref, "tensoregg_peak": te * 1e9 / peak, "numpy_peak": ref * 1e9 / peak,
                     "max_rel_err": err, "schedule": describe(schedule), "runs": len(ours),
                     "tensoregg_quartiles_ms": quartiles(ours), "numpy_quartiles_ms": quartiles(theirs),
                     "status": "ok" if err <= RTOL else "MISMATCH"})
            del model


def _child(threads: int, settings: Settings, out: Any) -> None:
    try:
        measure(threads, settings, out)
    except Exception as e:  # reported, not raised: the parent prints it as a row
        out.put({"threads": threads, "status": f"error: {type(e).__name__}: {e}"})
    out.put(None)


def run_threads(ctx: Any, threads: int, settings: Settings, timeout: float) -> list[dict[str, Any]]:
    """Rows at ``threads`` threads from their own process (OPENBLAS_NUM_THREADS set before it starts),
    printed as they come; a crash or a timeout is a row."""
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    return child_rows(ctx, _child, (threads, settings), {"threads": threads}, timeout, print_row)


HEADER = (f"{'shape MxKxN':15s} {'variant':8s} {'thr':>3s} {'compile s':>9s} {'te GFLOP/s':>10s} "
          f"{'np GFLOP/s':>10s} {'ratio':>6s} {'te peak':>7s} {'np peak':>7s} {'max rel err':>11s}  "
          f"schedule")


def print_row(row: dict[str, Any]) -> None:
    if "shape" not in row:
        print(f"threads {row['threads']}: {row['status']}", flush=True)
        return
    flag = "" if row["status"] == "ok" else f"  {row['status']}"
    print(f"{row['shape']:15s} {row['variant']:8s} {row['threads']:3d} {row['compile_s']:9.2f} "
          f"{row['tensoregg_gflops']:10.1f} {row['numpy_gflops']:10.1f} {row['ratio']:6.2f} "
          f"{row['tensoregg_peak']:7.0%} {row['numpy_peak']:7.0%} {row['max_rel_err']:11.1e}  "
          f"{row['schedule']}{flag}", flush=True)


def machine() -> dict[str, Any]:
    import numpy as np

    from tensoregg.runtime.threads import available_cpus
    from tensoregg.targets.llvm.host import host_target

    target = host_target()
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    return {"cpu": target.cpu, "cores": target.cores, "cpus_available": len(available_cpus()),
            "core_peak_gflops": target.core_flops / 1e9, "numpy": np.__version__,
            "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
            "load_average": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # this process does no BLAS; each child sets its own
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES,
                        help=f"comma-separated N or MxKxN (default {DEFAULT_SHAPES})")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed calls per side, in seconds")
    parser.add_argument("--settle", type=float, default=0.2,
                        help="seconds of pause before each block of tensoregg calls (threads > 1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per thread count")
    parser.add_argument("--json", help="also write the machine and the rows to this file")
    args = parser.parse_args(argv)
    try:
        shapes = tuple(parse_shape(s) for s in args.shapes.split(","))
    except ValueError as e:
        parser.error(str(e))
    settings = Settings(shapes, args.seconds, args.settle)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores for llvm ({info['cpus_available']} available), "
          f"one-core FMA peak {info['core_peak_gflops']:.1f} GFLOP/s; numpy {info['numpy']} with "
          f"{info['blas']}; load average {' '.join(f'{x:.2f}' for x in info['load_average'])}")
    print("ratio = tensoregg / numpy throughput; peak = the FMA peak of the threads used", flush=True)
    print(HEADER, flush=True)
    ctx = mp.get_context("spawn")
    rows = [row for t in (int(x) for x in args.threads.split(","))
            for row in run_threads(ctx, t, settings, args.timeout)]
    info["load_average_end"] = os.getloadavg()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in info['load_average_end'])}")
    for t in sorted({r["threads"] for r in rows if "ratio" in r}):
        for variant in VARIANTS:
            ratios = [r["ratio"] for r in rows if r.get("threads") == t and r.get("variant") == variant]
            if ratios:
                geomean = math.exp(statistics.fmean(math.log(x) for x in ratios))
                print(f"geometric mean of ratios, {t} thread{'s' if t > 1 else ''}, {variant}: "
                      f"{geomean:.2f} over {len(ratios)} shapes")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
