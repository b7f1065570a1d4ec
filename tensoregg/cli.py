"""The ``tensoregg`` command: ``run`` a model (optionally checking it), ``print`` its Graph,
``explain`` what the optimizer did to it, list the ``targets``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import tensoregg
from tensoregg.errors import ParameterError, TensoreggError
from tensoregg.ir import TensorType
from tensoregg.runtime import Module
from tensoregg.targets import available, registration


def random_input(t: TensorType, rng: np.random.Generator) -> np.ndarray:
    """Seeded sample data for one input: standard normal floats, small ints, random bools."""
    if t.dtype.kind == "f":
        return rng.standard_normal(t.shape).astype(t.dtype)
    if t.dtype.kind in "iu":
        return rng.integers(0, 4, t.shape).astype(t.dtype)
    if t.dtype == np.bool_:
        return rng.random(t.shape) < 0.5
    raise TensoreggError(f"cannot make sample data of dtype {t.dtype}")


def parse_shapes(items: Sequence[str]) -> dict[str, list[int]]:
    """``--input-shape`` values (NAME=D1,D2,...) as ``input_shapes``; ParameterError for a bad one."""
    shapes = {}
    for item in items:
        name, _, dims = item.rpartition("=")
        parts = [d.strip() for d in dims.split(",") if d.strip()]
        if not name or not all(d.isdigit() for d in parts):
            raise ParameterError(f"--input-shape expects NAME=D1,D2,... with dims ints >= 0, got {item!r}")
        shapes[name] = [int(d) for d in parts]
    return shapes


def check_against_onnx(model_path: str, module: Module, feeds: dict[str, np.ndarray],
                       outputs: list[np.ndarray]) -> bool:
    """Compare with onnx's ReferenceEvaluator, and onnxruntime when installed; print per output."""
    from onnx.reference import ReferenceEvaluator

    peers = {"onnx.reference": lambda: ReferenceEvaluator(model_path).run(None, feeds)}
    try:
        import onnxruntime as ort

        peers["onnxruntime"] = lambda: ort.InferenceSession(
            model_path, providers=["CPUExecutionProvider"]).run(None, feeds)
    except ImportError:
        pass
    ok = True
    for peer, run in peers.items():
        for name, got, want in zip(module.output_names, outputs, run()):
            err = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
            good = got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-5)
            ok &= good
            print(f"  check {name} vs {peer}: max |diff| {err:.3g} {'ok' if good else 'MISMATCH'}")
    return ok


def cmd_run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    module = tensoregg.compile(args.model, target=args.target, input_shapes=parse_shapes(args.input_shape))
    t1 = time.perf_counter()
    print(f"compiled {args.model} for target {module.target} in {(t1 - t0) * 1e3:.1f} ms: {module}")
    rng = np.random.default_rng(args.seed)
    feeds = {n: random_input(t, rng) for n, t in module.graph.inputs.items()}
    outputs = module.run(**feeds)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        module.run(**feeds)
        times.append(time.perf_counter() - t)
    if times:
        print(f"median latency over {args.repeat} runs: {np.median(times) * 1e3:.3f} ms")
    for name, out in zip(module.output_names, outputs):
        print(f"  output {name}: {TensorType.of(out)} mean {out.astype(np.float64).mean():.6g}")
    if args.check and not check_against_onnx(args.model, module, feeds, outputs):
        print("check FAILED")
        return 1
    return 0


def cmd_print(args: argparse.Namespace) -> int:
    print(tensoregg.compile(args.model, input_shapes=parse_shapes(args.input_shape)).graph)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    families = [f for f in args.families.split(",") if f] if args.families is not None else None
    explanation = tensoregg.explain(args.model, args.target, input_shapes=parse_shapes(args.input_shape),
                                    rule_families=families)
    print(json.dumps(explanation.to_dict(), indent=1) if args.json else explanation)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for name in available():
        entry = registration(name)
        why_not = entry.unavailable()
        rows.append({"name": name, "summary": entry.summary, "runs_here": why_not is None,
                     **({"why_not": why_not} if why_not else {})})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        where = "runs here" if r["runs_here"] else f"cannot run here: {r['why_not']}"
        print(f"{r['name']:<{width}}  {r['summary']} ({where})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tensoregg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="compile a model, run it on seeded random inputs")
    run.add_argument("model")
    run.add_argument("--target", default=None, choices=available(), help="default: $TENSOREGG_TARGET or llvm")
    run.add_argument("--check", action="store_true", help="compare outputs with onnx.reference/onnxruntime")
    run.add_argument("--repeat", type=int, default=0, help="time this many extra runs")
    run.add_argument("--seed", type=int, default=0)
    run.set_defaults(fn=cmd_run)
    show = sub.add_parser("print", help="import a model and print its Graph")
    show.add_argument("model")
    show.set_defaults(fn=cmd_print)
    why = sub.add_parser("explain", help="optimize a model and show phases, limits hit, e-graph sizes, "
                                          "rules fired, cost before/after and the extracted graph")
    why.add_argument("model")
    why.add_argument("--target", default=None, choices=available(), help="default: $TENSOREGG_TARGET or llvm")
    why.add_argument("--families", metavar="A,B,...", help="rule families to run (default: the target's)")
    why.add_argument("--json", action="store_true", help="print the explanation as JSON")
    why.set_defaults(fn=cmd_explain)
    targets = sub.add_parser("targets", help="list the registered targets and whether each runs here")
    targets.add_argument("--json", action="store_true", help="print the list as JSON")
    targets.set_defaults(fn=cmd_targets)
    for p in (run, show, why):
        p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...",
                       help="fix a symbolic input shape (repeatable)")
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except TensoreggError as e:
        print(f"tensoregg: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
