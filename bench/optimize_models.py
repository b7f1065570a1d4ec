"""Optimize step per model: time (encode, saturate, extract), peak memory, what changed, and whether the
optimized program still matches onnxruntime (rtol 1e-4).

    python bench/optimize_models.py [MODEL ...] [--families a,b] [--json out.json]

MODEL is a light zoo name (tensoregg.testing.LIGHT_MODELS, default all) or ``encoder`` (the transformer
encoder layer of tensoregg.testing_models). Each model runs in its own process so that its peak RSS
(which includes Python, numpy, onnx and egglog: about 0.3 GB before any model) is its own.
onnxruntime runs with 1 intra-op thread; tensoregg's reference interpreter is single-threaded numpy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from collections import Counter
from typing import Any


def load(name: str) -> Any:
    if name == "encoder":
        from tensoregg.testing_models import encoder_layer

        return encoder_layer()
    from tensoregg.testing import light_model

    return light_model(name)


def measure(name: str, families: list[str] | None) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    import tensoregg
    from tensoregg.optimize import optimize
    from tensoregg.targets import REF

    model = load(name)
    graph = tensoregg.compile(model, optimize=False).graph
    start = time.perf_counter()
    optimized, report = optimize(graph, REF, families)
    seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(t.shape).astype(t.dtype) for n, t in graph.inputs.items()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    want = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)
    got = tensoregg.compile(optimized, optimize=False).run(**feeds)
    err = max(float(np.max(np.abs(g - w) / (np.abs(w) + 1e-6))) if w.size else 0.0
              for g, w in zip(got, want))
    ok = all(np.allclose(g, w, rtol=1e-4, atol=1e-5) for g, w in zip(got, want))
    before, after = Counter(n.op for n in graph.nodes), Counter(n.op for n in optimized.nodes)
    return {"model": name, "nodes_before": len(graph.nodes), "nodes_after": len(optimized.nodes),
            "ops_changed": {op: [before[op], after[op]] for op in sorted(set(before) | set(after))
                            if before[op] != after[op]},
            "optimize_s": seconds, "steps_s": report.seconds,
            "phases": [str(p) for p in report.phases], "extractor": report.extractor,
            "cost_ms": [report.cost_before * 1e3, report.cost_after * 1e3],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "max_rel_err_vs_ort": err, "matches_ort": ok}


def _child(name: str, families: list[str] | None, queue: Any) -> None:
    try:
        queue.put(measure(name, families))
    except Exception as e:  # reported, not raised: one model's failure must not hide the others
        queue.put({"model": name, "error": f"{type(e).__name__}: {e}"})


def main(argv: list[str] | None = None) -> int:
    from tensoregg.testing import LIGHT_MODELS

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(LIGHT_MODELS))
    parser.add_argument("--families", help="rule families (default: the ref target's)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    families = args.families.split(",") if args.families else None
    ctx = mp.get_context("spawn")
    rows = []
    for name in args.models:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, families, queue))
        proc.start()
        row = queue.get()
        proc.join()
        rows.append(row)
        if "error" in row:
            print(f"{name:14s} ERROR {row['error']}", flush=True)
            continue
        steps = " ".join(f"{k} {v:.2f}" for k, v in row["steps_s"].items())
        print(f"{name:14s} nodes {row['nodes_before']:4d} -> {row['nodes_after']:4d}  optimize "
              f"{row['optimize_s']:5.2f} s ({steps})  peak {row['peak_rss_mb']:6.0f} MB  "
              f"vs ort max rel {row['max_rel_err_vs_ort']:.1e} {'ok' if row['matches_ort'] else 'MISMATCH'}  "
              f"{row['ops_changed']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r.get("matches_ort") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
