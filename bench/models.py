"""Whole-model latency: tensoregg's llvm target against onnxruntime, in one process, same thread count.

    python bench/models.py [MODEL ...] [--threads 1,2] [--busy 0] [--runs N] [--seconds S]
                           [--json out.json] [--tune MINUTES --records PATH]

MODEL is a light zoo name (tensoregg.testing.LIGHT_MODELS, seeded random weights), ``mlp``
(784-512-512-10, batch 64), ``encoder`` (the transformer encoder layer) or ``resnet_small`` (a
ResNet-18-style network at 1x3x224x224), the last three from tensoregg.testing_models; default all.

What is measured: the wall time of one inference call, ``module.run(**feeds)`` against
``InferenceSession.run(None, feeds)``, on the same seeded random input already in numpy arrays, so
both include their per-call overhead. For each model and each thread count T, tensoregg's module
(compiled once per model by ``tensoregg.compile(model, "llvm")``, whose seconds are reported) runs
with ``num_threads = T``, onnxruntime with ``intra_op_num_threads = T``, ``inter_op_num_threads = 1``,
its default graph optimizations (ORT_ENABLE_ALL) and other defaults, on the CPU provider. Outputs must
agree: the error reported is max |got - want| / (|want| + 1e-3 max|want|) over all outputs, want
being onnxruntime's; above 1e-3 the row is flagged MISMATCH. After 2 warm-up calls each, the two
alternate in blocks of about 0.1 s of calls (tensoregg, then as many onnxruntime calls), so that both
share the machine's noise; the figures are medians over N calls each (default: enough for about
``--seconds`` per side, at least 5; the quartiles go to --json). ratio is tensoregg / onnxruntime
(below 1: tensoregg is faster); the last lines give the geometric mean of the ratios per thread count
over the models that ran.

Why blocks and not call-by-call alternation: onnxruntime's idle intra-op workers spin (its default
``session.intra_op.allow_spinning``) for tens of milliseconds after a call, and a tensoregg call in
that window competes with them for the cores (measured: the encoder at 2 threads on 2 cores, 0.14 ms
alone, took 40 ms right after an onnxruntime call). So with T > 1 each tensoregg block starts after a
``--settle`` pause (0.1 s, not timed); onnxruntime keeps its spinning, which helps its back-to-back
calls as in a serving loop. tensoregg's own workers block between calls, so they cost onnxruntime
nothing.

With ``--records PATH``, each model is also compiled with those tuning records (after ``--tune
MINUTES`` of ``tensoregg.tune`` into them, when given; the time it took is reported) and the tuned
module is timed against onnxruntime the same way, right after the untuned one (compiled with
``records=False``): rows then have ``tuned_ms`` and ``tuned_ratio`` (against its own onnxruntime
median) beside the untuned figures.

With ``--busy K,...`` (default 0), each thread count is timed again beside K busy processes: plain
Python busy loops (``while True: pass``, at the benchmark's own priority, free to run on any core),
started before the timing (and given ``BUSY_START_S`` to get going) and killed after it. With K
plus the threads above the cores, the machine is overcommitted: what a user serving on a busy
machine sees, and what a benchmark on a shared machine measures. Both sides are timed the same
way beside the same busy processes; rows then have a ``busy`` column and the geometric means are per
thread count and K. A busy row's median says how the runtime degrades, its quartiles how much of
the time slices it loses (a descheduled thread that others wait for).

Both runtimes share one process; each model gets a fresh (spawned) process, so that one model's
memory does not pile onto the next, with OPENBLAS_NUM_THREADS=1 (numpy's BLAS must not start threads
of its own). A model tensoregg cannot compile yet is reported as ``unsupported: <message>``. The
header gives the machine (LLVM's CPU name, the cores the llvm target uses) and the load average at
the start and the end: on a shared machine, figures taken under a load above the core count are noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import queue as queue_mod
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

EXTRA_MODELS = ("mlp", "encoder", "resnet_small")
BUSY_START_S = 0.5
"""Seconds the busy processes of ``--busy`` get to start before the timing does."""


def load(name: str) -> Any:
    from tensoregg import testing_models

    builders: dict[str, Callable[[], Any]] = {
        "mlp": testing_models.mlp,
        # the size of ../shared/notes/anchors.md's encoder row (0.218 GFLOPs): d=256, 4 heads, seq 128
        "encoder": partial(testing_models.encoder_layer, seq=128, d_model=256, heads=4, ffn=1024),
        "resnet_small": testing_models.small_resnet}
    if name in builders:
        return builders[name]()
    from tensoregg.testing import light_model

    return light_model(name)


@dataclass(frozen=True)
class Settings:
    threads: tuple[int, ...]
    runs: int | None
    """Timed calls per side; None: enough for about ``seconds`` per side."""
    seconds: float
    settle: float
    """Pause before each block of tensoregg calls when several threads run."""
    records: str | None = None
    """Tuning records to compile a tuned module with as well (None: untuned only, with the default
    records as ``compile`` finds them)."""
    tune_minutes: float = 0.0
    """Minutes of ``tensoregg.tune`` into ``records`` first."""
    busy: tuple[int, ...] = (0,)
    """Busy processes beside each timing (``--busy``), one timing per count."""


@contextlib.contextmanager
def busy_processes(k: int) -> Iterator[None]:
    """``k`` Python busy loops running (at this process's priority) for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]
    try:
        if procs:
            time.sleep(BUSY_START_S)
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def measure(name: str, settings: Settings, out: Any) -> None:
    """Compile ``name`` once, then put one row per thread count on ``out``."""
    import numpy as np

    import tensoregg
    from tensoregg.benchmark import RTOL, max_rel_err, ort_session, quartiles, time_pair
    from tensoregg.errors import UnsupportedOperator

    model = load(name)
    start = time.perf_counter()
    try:
        module = tensoregg.compile(model, "llvm", records=not settings.records)
    except UnsupportedOperator as e:
        out.put({"model": name, "status": f"unsupported: {e}"})
        return
    compile_s = time.perf_counter() - start
    tuned, tune_s = None, 0.0
    if settings.records:
        if settings.tune_minutes > 0:
            start = time.perf_counter()
            print(tensoregg.tune(model, "llvm", minutes=settings.tune_minutes, records=settings.records,
                                 progress=False), flush=True)
            tune_s = time.perf_counter() - start
        tuned = tensoregg.compile(model, "llvm", records=settings.records)
    rng = np.random.default_rng(0)
    feeds = {n: (rng.standard_normal(s) if np.dtype(d).kind == "f" else rng.integers(0, 10, s)).astype(d)
             for n, s, d in zip(module.input_names, module.input_shapes, module.input_dtypes, strict=True)}
    data = model.SerializeToString()
    del model
    for t, k in ((t, k) for t in settings.threads for k in settings.busy):
        module.num_threads = t
        session = ort_session(data, t)
        want = session.run(None, feeds)
        got = module.run(**feeds)
        err = max_rel_err(got, want)
        settle = settings.settle if t > 1 else 0.0
        with busy_processes(k):
            ours, theirs = time_pair(partial(module.run, **feeds), partial(session.run, None, feeds),
                                     settings.runs, settings.seconds, settle)
        te_ms, ort_ms = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
        row = {"model": name, "threads": t, "busy": k, "compile_s": compile_s, "tensoregg_ms": te_ms,
               "ort_ms": ort_ms, "ratio": te_ms / ort_ms, "max_rel_err": err, "runs": len(ours),
               "tensoregg_quartiles_ms": quartiles(ours), "ort_quartiles_ms": quartiles(theirs)}
        if tuned is not None:
            tuned.num_threads = t
            err = max(err, max_rel_err(tuned.run(**feeds), want))
            with busy_processes(k):
                ours, theirs = time_pair(partial(tuned.run, **feeds), partial(session.run, None, feeds),
                                         settings.runs, settings.seconds, settle)
            tuned_ms, tuned_ort_ms = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
            row |= {"tuned_ms": tuned_ms, "tuned_ort_ms": tuned_ort_ms,
                    "tuned_ratio": tuned_ms / tuned_ort_ms, "tune_minutes": tune_s / 60, "max_rel_err": err}
        out.put({**row, "status": "ok" if err <= RTOL else "MISMATCH"})


def _child(name: str, settings: Settings, out: Any) -> None:
    try:
        measure(name, settings, out)
    except Exception as e:  # reported, not raised: one model's failure must not hide the others
        out.put({"model": name, "status": f"error: {type(e).__name__}: {e}"})
    out.put(None)


def run_model(ctx: Any, name: str, settings: Settings, timeout: float) -> list[dict[str, Any]]:
    """Rows for ``name`` from its own process, printed as they come; a crash or a timeout is a row."""
    return child_rows(ctx, _child, (name, settings), {"model": name}, timeout, print_row,
                      ("error", "unsupported"))


def child_rows(ctx: Any, target: Callable[..., None], args: tuple[Any, ...], label: dict[str, Any],
               timeout: float, show: Callable[[dict[str, Any]], None],
               stop: tuple[str, ...] = ("error",)) -> list[dict[str, Any]]:
    """The rows ``target(*args, queue)`` puts on its queue from its own process (None ends them),
    each shown as it comes; a crash or a timeout is a row (``label`` plus an error status), and a
    row whose status starts with one of ``stop`` is the last."""
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            row = out.get(timeout=1.0)
        except queue_mod.Empty:
            if time.monotonic() > deadline:
                proc.kill()
                row = {**label, "status": f"error: timed out after {timeout:.0f} s"}
            elif not proc.is_alive():
                row = {**label, "status": f"error: process died (exit code {proc.exitcode})"}
            else:
                continue
        if row is None:
            break
        rows.append(row)
        show(row)
        if row["status"].startswith(stop):
            break
    proc.join()
    return rows


HEADER = (f"{'model':14s} {'thr':>3s} {'busy':>4s} {'compile s':>9s} {'tensoregg ms':>12s} "
          f"{'(quartiles)':>15s} {'ort ms':>9s} {'(quartiles)':>15s} {'ratio':>7s} {'max rel err':>11s}"
          "  status")


def print_row(row: dict[str, Any]) -> None:
    if "threads" not in row:
        print(f"{row['model']:14s} {'':>3s} {row['status']}", flush=True)
        return
    tuned = "" if "tuned_ms" not in row else (
        f"  tuned {row['tuned_ms']:.3f} ms (ort {row['tuned_ort_ms']:.3f}) ratio {row['tuned_ratio']:.2f} "
        f"after {row['tune_minutes']:.1f} min")
    spread = {side: f"({row[f'{side}_quartiles_ms'][0]:.2f}-{row[f'{side}_quartiles_ms'][2]:.2f})"
              for side in ("tensoregg", "ort")}
    print(f"{row['model']:14s} {row['threads']:3d} {row['busy']:4d} {row['compile_s']:9.2f} "
          f"{row['tensoregg_ms']:12.3f} {spread['tensoregg']:>15s} {row['ort_ms']:9.3f} {spread['ort']:>15s} "
          f"{row['ratio']:7.2f} {row['max_rel_err']:11.1e}  {row['status']}{tuned}", flush=True)


def machine() -> dict[str, Any]:
    import onnxruntime as ort

    from tensoregg.runtime.threads import available_cpus
    from tensoregg.targets import get_target

    target = get_target("llvm")
    model_name = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
            model_name = next(names, "")
    return {"cpu": target.cpu, "cpu_model": model_name, "cores": target.cores,
            "cpus_available": len(available_cpus()), "onnxruntime": ort.__version__,
            "load_average": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads, here and in the spawned processes
    from tensoregg.testing import LIGHT_MODELS

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=[*LIGHT_MODELS, *EXTRA_MODELS])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--busy", default="0",
                        help="comma-separated counts of busy processes to time beside (default 0)")
    parser.add_argument("--runs", type=int, help="timed calls per side (default: about --seconds each)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="time per side per model and thread count when --runs is not given")
    parser.add_argument("--settle", type=float, default=0.1,
                        help="seconds of pause before each block of tensoregg calls (threads > 1)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per model process")
    parser.add_argument("--json", help="also write the machine and the rows to this file")
    parser.add_argument("--records", help="also time each model compiled with these tuning records")
    parser.add_argument("--tune", type=float, default=0.0, metavar="MINUTES",
                        help="tune each model for this long into --records first")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in LIGHT_MODELS and m not in EXTRA_MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join([*LIGHT_MODELS, *EXTRA_MODELS])}")
    if args.tune and not args.records:
        parser.error("--tune needs --records")
    settings = Settings(tuple(int(t) for t in args.threads.split(",")), args.runs, args.seconds, args.settle,
                        args.records, args.tune, tuple(int(k) for k in args.busy.split(",")))
    info = machine()
    print(f"machine: {info['cpu']} ({info['cpu_model']}), {info['cores']} cores for llvm, onnxruntime "
          f"{info['onnxruntime']}, load average {' '.join(f'{x:.2f}' for x in info['load_average'])}")
    print(HEADER, flush=True)
    ctx = mp.get_context("spawn")
    rows = [row for name in args.models for row in run_model(ctx, name, settings, args.timeout)]
    info["load_average_end"] = os.getloadavg()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in info['load_average_end'])}")
    for t, k in ((t, k) for t in settings.threads for k in settings.busy):
        beside = f" beside {k} busy" if k else ""
        for key, what in (("ratio", ""), ("tuned_ratio", " (tuned)")):
            ratios = [r[key] for r in rows if r.get("threads") == t and r.get("busy") == k and key in r]
            if ratios:
                geomean = math.exp(statistics.fmean(math.log(x) for x in ratios))
                print(f"geometric mean of ratios{what}, {t} thread{'s' if t > 1 else ''}{beside}: "
                      f"{geomean:.2f} over {len(ratios)} models")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    return 1 if any(r["status"].startswith(("MISMATCH", "error")) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
