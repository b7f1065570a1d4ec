"""Cold compile time of models on ``llvm``, untuned, split by phase: CPU and wall seconds of the import
(ONNX -> Graph), the e-graph (encode, saturate, extract: ``tensoregg.optimize``), lowering to loop IR,
LLVM IR emission, and LLVM (O3, code generation, loading: ``JitModule``).

    python bench/compile_phases.py [MODEL ...] [--repeats N] [--objects cold|warm] [--json out.jsonl]

MODEL is a light zoo name (``tensoregg.testing.LIGHT_MODELS``; default resnet50 and densenet121). Each
compile runs in a fresh process (no compile cache): ``startup`` is importing tensoregg, ``compile`` the
whole ``tensoregg.compile`` call. With ``--objects cold`` (the default) the object cache on disk
(``tensoregg.targets.llvm.objcache``) starts empty, so LLVM compiles every kernel; with ``warm`` it
holds the model's kernels (from an untimed compile before), as for a model compiled before on this
machine. LLVM runs in helper processes, several at once (``TENSOREGG_COMPILE_JOBS``, default: the CPUs
this process may use), whose CPU seconds this process's do not count: read the llvm phase's wall
time, on an idle machine (the header gives the load average). Printed: the median of ``--repeats``
compiles per model.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tensoregg.targets.llvm import objcache

PHASES = ("import", "egraph", "lower", "emit_ir", "llvm")


def _clocked(times: dict[str, list[float]], phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            got = times.setdefault(phase, [0.0, 0.0])
            got[0] += time.process_time() - cpu
            got[1] += time.perf_counter() - wall
    return run


def measure(name: str) -> dict[str, Any]:
    """One cold compile of ``name`` in this (fresh) process."""
    cpu, wall = time.process_time(), time.perf_counter()
    import tensoregg
    import tensoregg.api
    import tensoregg.optimize
    import tensoregg.targets.llvm.model as native
    from tensoregg.testing import light_model

    started = {"startup_cpu": time.process_time() - cpu, "startup_wall": time.perf_counter() - wall}
    model = light_model(name)
    times: dict[str, list[float]] = {}
    tensoregg.api.to_graph = _clocked(times, "import", tensoregg.api.to_graph)  # type: ignore[assignment]
    tensoregg.optimize.optimize = _clocked(times, "egraph", tensoregg.optimize.optimize)  # type: ignore[assignment]
    for phase, attr in (("lower", "lower_graph"), ("emit_ir", "emit_model"), ("llvm", "JitModule")):
        setattr(native, attr, _clocked(times, phase, getattr(native, attr)))
    cpu, wall = time.process_time(), time.perf_counter()
    tensoregg.compile(model, "llvm", records=False)
    out = {"model": name, "compile_cpu": time.process_time() - cpu,
           "compile_wall": time.perf_counter() - wall, **started}
    for phase in PHASES:
        out[f"{phase}_cpu"], out[f"{phase}_wall"] = times.get(phase, [0.0, 0.0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["resnet50", "densenet121"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--objects", choices=("cold", "warm"), default="cold",
                        help="the object cache empty (cold) or holding the model's kernels (warm)")
    parser.add_argument("--json", help="also write each compile's numbers as JSON lines here")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    print(f"load average {os.getloadavg()[0]:.2f}, {len(os.sched_getaffinity(0))} CPUs, object cache "
          f"{args.objects}; CPU (wall) seconds, median of {args.repeats}")
    print(f"{'model':14s} {'startup':>15s} {'compile':>15s} " + " ".join(f"{p:>15s}" for p in PHASES))
    rows = []
    for name in args.models:
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="tensoregg-objects-") as objects:
                os.environ[objcache.ENV] = objects  # the spawned process's object cache
                if args.objects == "warm":
                    with ctx.Pool(1) as pool:
                        pool.apply(measure, (name,))
                with ctx.Pool(1) as pool:
                    runs.append(pool.apply(measure, (name,)))
        rows += runs

        def median(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        cells = [f"{median(p + '_cpu'):6.2f} ({median(p + '_wall'):6.2f})"
                 for p in ("startup", "compile", *PHASES)]
        print(f"{name:14s} " + " ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
