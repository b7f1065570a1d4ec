"""The ``tensoregg`` command: ``compile`` a model to an artifact, ``run`` a model or an artifact
(optionally checking it), ``print`` its Graph, ``explain`` what the optimizer did to it, list the
``targets``, ``extract`` an artifact's files (the C API), ``cache clear``, ``serve`` an artifact
over HTTP, ``tune`` models' kernels, ``records`` export/import the tuning records, and ``soak`` the
differential fuzzer."""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import tensoregg
from tensoregg import cache, progress
from tensoregg.errors import InputError, ParameterError, TensoreggError
from tensoregg.ir import TensorType
from tensoregg.ir.types import sample_array
from tensoregg.runtime import Module
from tensoregg.runtime.artifact import spec_json
from tensoregg.targets import available, registration


def parse_shapes(items: Sequence[str]) -> dict[str, list[int | str]]:
    """``--input-shape`` values (NAME=D1,D2,...; D1 may be a name, a symbolic batch) as
    ``input_shapes``; ParameterError for a bad one."""
    shapes: dict[str, list[int | str]] = {}
    for item in items:
        name, _, dims = item.rpartition("=")
        parts = [d.strip() for d in dims.split(",") if d.strip()]
        if not name or not all(d.isdigit() or (k == 0 and d.isidentifier()) for k, d in enumerate(parts)):
            raise ParameterError(f"--input-shape expects NAME=D1,D2,... with dims ints >= 0 (the first may "
                                 f"be a name: a symbolic batch), got {item!r}")
        shapes[name] = [int(d) if d.isdigit() else d for d in parts]
    return shapes


def parse_ranges(items: Sequence[str]) -> dict[str, tuple[int, int]] | None:
    """``--dim-range`` values (NAME=LOW:HIGH) as ``dim_ranges``; ParameterError for a bad one."""
    ranges = {}
    for item in items:
        name, _, bounds = item.partition("=")
        low, _, high = bounds.partition(":")
        if not name or not low.isdigit() or not high.isdigit():
            raise ParameterError(f"--dim-range expects NAME=LOW:HIGH, got {item!r}")
        ranges[name] = (int(low), int(high))
    return ranges or None


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


def is_artifact(path: str) -> bool:
    """Whether ``path`` is a saved artifact (a zip file) rather than a model."""
    return Path(path).is_file() and zipfile.is_zipfile(path)


def obtain(args: argparse.Namespace) -> tuple[Module, str]:
    """The Module ``args.model`` stands for (an artifact loaded, or a model compiled, through the
    cache unless ``--no-cache``) and a line saying how it was obtained."""
    t0 = time.perf_counter()
    if is_artifact(args.model):
        module = tensoregg.load(args.model)
        how = "loaded"
    else:
        module = tensoregg.compile(args.model, target=args.target,
                                   input_shapes=parse_shapes(args.input_shape),
                                   dim_ranges=parse_ranges(args.dim_range), cache=not args.no_cache,
                                   validate=getattr(args, "validate", False),
                                   records=args.records or True)
        how = "compiled" if module.graph is not None else "loaded from the compile cache"
    ms = (time.perf_counter() - t0) * 1e3
    return module, f"{how} {args.model} for target {module.target} in {ms:.1f} ms: {module!r}"


def read_inputs(module: Module, items: Sequence[str], seed: int) -> dict[str, np.ndarray]:
    """The inputs given as ``NAME=FILE.npy`` items; seeded random data for the others."""
    given = {}
    for item in items:
        name, _, path = item.partition("=")
        if not path or name not in module.input_names:
            raise InputError(f"--input expects NAME=FILE.npy with NAME one of {module.input_names}, "
                             f"got {item!r}")
        given[name] = np.load(path, allow_pickle=False)
    rng = np.random.default_rng(seed)
    return {t.name: given[t.name] if t.name in given else sample_array(t.dtype, t.shape, rng)
            for t in module.inputs}


def cmd_run(args: argparse.Namespace) -> int:
    if args.check and is_artifact(args.model):
        raise SystemExit("--check compares with the ONNX model: run the model, not an artifact")
    module, how = obtain(args)
    print(how)
    feeds = read_inputs(module, args.input, args.seed)
    outputs = module.run(**feeds)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        module.run(**feeds)
        times.append(time.perf_counter() - t)
    if times:
        print(f"median latency over {args.repeat} runs: {np.median(times) * 1e3:.3f} ms")
    for k, (name, out) in enumerate(zip(module.output_names, outputs)):
        print(f"  output {name}: {TensorType.of(out)} mean {out.astype(np.float64).mean():.6g}")
        if args.output:
            Path(args.output).mkdir(parents=True, exist_ok=True)
            np.save(Path(args.output) / f"{k}.npy", out, allow_pickle=False)
    report = getattr(module.program, "report", None)  # a program that tells what its run did (accel)
    if callable(report):
        print(report())
    if args.check and not check_against_onnx(args.model, module, feeds, outputs):
        print("check FAILED")
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tensoregg import benchmark

    if args.vs and is_artifact(args.model):
        raise InputError("--vs onnxruntime runs the ONNX model: bench the model, not an artifact")
    module, how = obtain(args)
    if args.threads:
        module.num_threads = args.threads
    feeds = read_inputs(module, args.input, args.seed)
    ours = partial(module.run, **feeds)
    info: dict[str, Any] = {"model": args.model, "target": module.target, "threads": module.num_threads}
    if args.vs:
        session = benchmark.ort_session(args.model, module.num_threads)
        err = benchmark.max_rel_err(module.run(**feeds), session.run(None, feeds))
        times, theirs = benchmark.time_pair(ours, partial(session.run, None, feeds), args.runs, args.seconds,
                                            0.1 if module.num_threads > 1 else 0.0)
        info["onnxruntime"] = benchmark.summary(theirs)
        info["max_rel_err"] = err
    else:
        times = benchmark.time_alone(ours, args.runs, args.seconds)
    info["tensoregg"] = benchmark.summary(times)
    if args.vs:
        info["ratio"] = info["tensoregg"]["median_ms"] / info["onnxruntime"]["median_ms"]
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(how)
    for side in ("tensoregg", "onnxruntime"):
        if side in info:
            q = info[side]["quartiles_ms"]
            print(f"{side:12s} median {info[side]['median_ms']:.3f} ms (quartiles {q[0]:.3f} .. {q[2]:.3f}) "
                  f"over {info[side]['runs']} runs, {info['threads']} thread(s)")
    if args.vs:
        print(f"ratio tensoregg / onnxruntime: {info['ratio']:.2f}; max relative difference {err:.1e}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from tensoregg.runtime.native import NativeExecutor
    from tensoregg.runtime.profile import profile_kernels

    module, how = obtain(args)
    executor = getattr(module.program, "executor", module.program)
    if not isinstance(executor, NativeExecutor):
        raise InputError(f"profile times the kernels of llvm models; this one is for {module.target!r}")
    artifact = module.artifact()
    times = profile_kernels(artifact, executor, read_inputs(module, args.input, args.seed), args.runs)
    total = sum(t.seconds for t in times) or 1e-12
    peak = float(artifact.manifest["code"].get("core_peak_flops", 0.0))
    rows: list[dict[str, Any]] = [
        {"kernel": t.kernel, "node": t.node, "ops": t.ops, "shape": t.shape, "ms": t.seconds * 1e3,
         "percent": 100 * t.seconds / total, "gflops": t.flops / t.seconds / 1e9 if t.seconds else 0.0,
         "percent_of_peak": 100 * t.flops / t.seconds / peak if t.seconds and peak else 0.0,
         "schedule": t.schedule} for t in times]
    if args.json:
        print(json.dumps({"model": args.model, "total_ms": total * 1e3, "core_peak_gflops": peak / 1e9,
                          "kernels": rows}, indent=1))
        return 0
    print(how)
    print(f"{len(rows)} kernels, one thread, median of {args.runs} runs; peak {peak / 1e9:.1f} GFLOP/s "
          "a core")
    ops = [" + ".join(t.ops) for t in times]
    width = max([len(o) for o in ops] + [9])
    print(f"{'kernel':8s} {'fused ops':{width}s} {'shape':16s} {'ms':>8s} {'%':>6s} {'GFLOP/s':>8s} "
          f"{'% peak':>7s}")
    for r, o in zip(rows, ops):
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['kernel']:8s} {o:{width}s} {shape:16s} {r['ms']:8.4f} {r['percent']:6.1f} "
              f"{r['gflops']:8.2f} {r['percent_of_peak']:7.1f}")
    print(f"{'total':8s} {'':{width}s} {'':16s} {total * 1e3:8.4f}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    module = tensoregg.compile(args.model, target=args.target, input_shapes=parse_shapes(args.input_shape),
                               cache=not args.no_cache, validate=args.validate, records=args.records or True)
    seconds = time.perf_counter() - t0
    path = module.save(args.output)
    info = {"artifact": str(path), "bytes": path.stat().st_size, "target": module.target,
            "cached": module.graph is None, "seconds": round(seconds, 3),
            "inputs": [spec_json(t) for t in module.inputs],
            "outputs": [spec_json(t) for t in module.outputs]}
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        how = "loaded from the compile cache" if info["cached"] else "compiled"
        print(f"{how} {args.model} for target {module.target} in {seconds * 1e3:.1f} ms; wrote {path} "
              f"({info['bytes']} bytes): {module}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    for path in tensoregg.extract(args.artifact, args.output):
        print(path)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from tensoregg.targets.llvm import objcache

    if args.action == "clear":
        print(f"removed {cache.clear()} entries from {cache.cache_dir()}")
        print(f"removed {objcache.clear()} kernel objects from {objcache.cache_dir()}")
    else:
        print(cache.cache_dir())
        print(objcache.cache_dir())
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    report = tensoregg.tune(args.models, target=args.target, minutes=args.minutes, records=args.records,
                            input_shapes=parse_shapes(args.input_shape), trials=args.trials,
                            seconds=args.seconds, timeout=args.timeout, seed=args.seed, cluster=args.cluster,
                            check_models=not args.no_model_check)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    return 0


def cmd_records(args: argparse.Namespace) -> int:
    from tensoregg.tuning.records import Records

    with Records(args.records) as db:
        if args.action == "path":
            print(db.path)
        elif args.action == "export":
            if args.file in (None, "-"):
                db.export_jsonl(sys.stdout)
            else:
                with open(args.file, "w") as f:
                    print(f"exported {db.export_jsonl(f)} records from {db.path} to {args.file}")
        else:
            if args.file in (None, "-"):
                count = db.import_jsonl(sys.stdin)
            else:
                with open(args.file) as f:
                    count = db.import_jsonl(f)
            print(f"imported {count} records into {db.path}")
    return 0


def cmd_print(args: argparse.Namespace) -> int:
    from tensoregg.api import to_graph

    shapes = parse_shapes(args.input_shape)
    if args.optimized:
        print(tensoregg.explain(args.model, args.target, input_shapes=shapes).after)
    else:
        print(to_graph(args.model, shapes))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from tensoregg import drawing
    from tensoregg.api import to_graph

    families = [f for f in args.families.split(",") if f] if args.families is not None else None
    shapes = parse_shapes(args.input_shape)
    if args.egraph:
        dot = drawing.egraph_dot(to_graph(args.model, shapes), args.target, args.egraph, families)
        if args.graphviz:
            print(f"wrote {drawing.write(dot, args.graphviz)}")
        else:
            print(dot, end="")
        return 0
    explanation = tensoregg.explain(args.model, args.target, input_shapes=shapes, rule_families=families)
    print(json.dumps(explanation.to_dict(), indent=1) if args.json else explanation)
    if args.graphviz:
        title = f"{Path(args.model).name} for {explanation.target}: {len(explanation.after.nodes)} nodes"
        path = drawing.write(drawing.graph_dot(explanation.after, title), args.graphviz)
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
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


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from tensoregg.serve import ModelServer, serve
    except ImportError as exc:
        raise TensoreggError(f"serve needs the serve extra ({exc}): pip install 'tensoregg[serve]'") from exc
    server = ModelServer(args.artifact, name=args.name, workers=args.workers, max_batch=args.max_batch,
                         max_delay_ms=args.max_delay_ms, threads=args.threads)
    print(f"serving {server.name} ({server.modules[0]}) on http://{args.host}:{args.port}"
          f"/v1/models/{server.name}:predict", flush=True)
    serve(server, args.host, args.port)
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from tensoregg.rules import RULESETS

    families: list[dict[str, Any]] = [{"family": f.name, "doc": f.doc.strip(),
                 "rules": [{"name": r.name, "law": r.law, "checked": r.example is not None} for r in f.rules]}
                for f in RULESETS.values()]
    if args.json:
        print(json.dumps(families, indent=1))
        return 0
    for f in families:
        summary = " ".join(f["doc"].split()).split(". ")[0]
        print(f"{f['family']} ({len(f['rules'])} rules): {summary}")
        width = max((len(r["name"]) for r in f["rules"]), default=0)
        for r in f["rules"]:
            print(f"  {r['name']:<{width}}  {r['law']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tensoregg.verify import families_in, verify

    verdicts = verify(families_in(args.rules), args.examples)
    if args.json:
        print(json.dumps([asdict(v) for v in verdicts], indent=1))
    else:
        for v in verdicts:
            print(f"{'ok  ' if v.problem is None else 'FAIL'} {v.family}/{v.rule}: {v.law}"
                  + (f"\n     {v.problem}" if v.problem else ""))
        failed = sum(v.problem is not None for v in verdicts)
        print(f"{len(verdicts) - failed} passed, {failed} failed")
    return 1 if any(v.problem for v in verdicts) else 0


def cmd_soak(args: argparse.Namespace) -> int:
    from tensoregg.testing.soak import main as soak

    return soak(args.options, prog="tensoregg soak")


VALIDATE_HELP = ("translation validation: run the optimized program against the imported one on random "
                 "inputs (reference interpreter) and refuse it if they differ")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tensoregg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    target_help = "default: $TENSOREGG_TARGET or llvm"
    run = sub.add_parser("run", help="run a model (compiled first) or an artifact on given or seeded "
                                     "random inputs")
    run.add_argument("model", help="an ONNX model or an artifact (.tegg)")
    run.add_argument("--target", "-t", default=None, choices=available(), help=target_help)
    run.add_argument("--check", action="store_true", help="compare outputs with onnx.reference/onnxruntime")
    run.add_argument("--repeat", type=int, default=0, help="time this many extra runs")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                     help="an input's value (repeatable; the others are seeded random data)")
    run.add_argument("--output", "-o", metavar="DIR", help="write output k to DIR/k.npy")
    run.add_argument("--validate", action="store_true", help=VALIDATE_HELP)
    run.set_defaults(fn=cmd_run)
    timing = sub.add_parser("bench", help="time a model's (or an artifact's) runs: median and quartiles, "
                                          "optionally against onnxruntime")
    timing.add_argument("model", help="an ONNX model or an artifact (.tegg)")
    timing.add_argument("--target", "-t", default=None, choices=available(), help=target_help)
    timing.add_argument("--vs", choices=["onnxruntime"], help="also time onnxruntime on the same inputs")
    timing.add_argument("--threads", type=int, help="threads per run, both sides (default: every CPU)")
    timing.add_argument("--runs", type=int, help="timed runs (default: about --seconds of them)")
    timing.add_argument("--seconds", type=float, default=2.0)
    timing.add_argument("--seed", type=int, default=0)
    timing.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    timing.add_argument("--json", action="store_true", help="print the figures as JSON")
    timing.set_defaults(fn=cmd_bench)
    prof = sub.add_parser("profile", help="time each kernel of an llvm model or artifact: fused ops, shape, "
                                          "ms, share, GFLOP/s, share of a core's peak")
    prof.add_argument("model", help="an ONNX model or an artifact (.tegg)")
    prof.add_argument("--target", "-t", default=None, choices=available(), help=target_help)
    prof.add_argument("--runs", type=int, default=20, help="runs to take the median of (default 20)")
    prof.add_argument("--seed", type=int, default=0)
    prof.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    prof.add_argument("--json", action="store_true", help="print the table as JSON")
    prof.set_defaults(fn=cmd_profile)
    build = sub.add_parser("compile", help="compile a model and save it as an artifact")
    build.add_argument("model")
    build.add_argument("--target", "-t", default=None, choices=available(), help=target_help)
    build.add_argument("--output", "-o", required=True, metavar="OUT.tegg", help="the artifact to write")
    build.add_argument("--json", action="store_true", help="print what was written as JSON")
    build.add_argument("--validate", action="store_true", help=VALIDATE_HELP)
    build.set_defaults(fn=cmd_compile)
    show = sub.add_parser("print", help="import a model and print its Graph (as imported, or --optimized)")
    show.add_argument("model")
    show.add_argument("--optimized", action="store_true", help="the Graph the target's optimizer extracts")
    show.add_argument("--target", "-t", default=None, choices=available(), help=target_help)
    show.set_defaults(fn=cmd_print)
    why = sub.add_parser("explain", help="optimize a model and show phases, limits hit, e-graph sizes, "
                                          "rules fired, cost before/after and the extracted graph")
    why.add_argument("model")
    why.add_argument("--target", "-t", default=None, choices=available(), help=target_help)
    why.add_argument("--families", metavar="A,B,...", help="rule families to run (default: the target's)")
    why.add_argument("--json", action="store_true", help="print the explanation as JSON")
    why.add_argument("--graphviz", metavar="OUT.svg", help="draw the extracted graph (fused kernels boxed, "
                                                           "schedules): .svg/.png/.pdf by dot, or .dot")
    why.add_argument("--egraph", metavar="NODE", help="draw the e-classes around NODE after saturation "
                                                      "instead (to --graphviz, else DOT on stdout)")
    why.set_defaults(fn=cmd_explain)
    targets = sub.add_parser("targets", help="list the registered targets and whether each runs here")
    targets.add_argument("--json", action="store_true", help="print the list as JSON")
    targets.set_defaults(fn=cmd_targets)
    unpack = sub.add_parser("extract", help="write an artifact's files (library, tensoregg.h, weights.npy, "
                                            "manifest) into a directory")
    unpack.add_argument("artifact")
    unpack.add_argument("--output", "-o", required=True, metavar="DIR")
    unpack.set_defaults(fn=cmd_extract)
    store = sub.add_parser("cache", help="the compile cache and the kernels' object code: `clear` them, or "
                                         "print their `dir`s")
    store.add_argument("action", choices=["clear", "dir"])
    store.set_defaults(fn=cmd_cache)
    tuning = sub.add_parser("tune", help="measure the schedules of models' kernels and store the best in the "
                                         "tuning records, which compile then uses")
    tuning.add_argument("models", nargs="+", metavar="MODEL",
                        help="ONNX models (a kernel they share is tuned once)")
    tuning.add_argument("--target", "-t", default=None, choices=available(), help=target_help)
    tuning.add_argument("--minutes", type=float, default=10.0, help="time budget (default 10)")
    tuning.add_argument("--trials", type=int, default=32, help="schedules measured per kernel at most")
    tuning.add_argument("--seconds", type=float, default=0.2, help="timed calls per schedule, in seconds")
    tuning.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a schedule may take (compile and calls) before its worker is killed")
    tuning.add_argument("--seed", type=int, default=0)
    tuning.add_argument("--cluster", metavar="ADDRESS", default=None,
                        help="measure on the machines of the Ray cluster at ADDRESS (host:port, or `auto`), "
                             "one schedule at a time on each; needs pip install 'tensoregg[cluster]'")
    tuning.add_argument("--no-model-check", action="store_true",
                        help="skip the end's check (each model timed whole, untuned and tuned)")
    tuning.add_argument("--json", action="store_true", help="print the report as JSON")
    tuning.set_defaults(fn=cmd_tune)
    notes = sub.add_parser("records", help="the tuning records: `export` or `import` them as JSON lines "
                                           "(FILE or - for stdout/stdin), or print their `path`")
    notes.add_argument("action", choices=["export", "import", "path"])
    notes.add_argument("file", nargs="?", help="the JSON lines file (default -)")
    notes.set_defaults(fn=cmd_records)
    for p in (tuning, notes, run, timing, prof, build):
        p.add_argument("--records", metavar="PATH",
                       help="the tuning records database (default: $TENSOREGG_RECORDS, else in the user "
                            "cache directory)")
    listing = sub.add_parser("rules", help="list the registered rewrite rules by family, with their laws")
    listing.add_argument("--json", action="store_true", help="print the rules as JSON")
    listing.set_defaults(fn=cmd_rules)
    check = sub.add_parser("verify", help="check a rule module's families as tensoregg's own rules are "
                                          "checked (names, laws, examples, soundness on random inputs)")
    check.add_argument("rules", metavar="RULES.py")
    check.add_argument("--examples", type=int, default=10, help="random instances per rule (default 10)")
    check.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    check.set_defaults(fn=cmd_verify)
    host = sub.add_parser("serve", help="serve an artifact over HTTP (predict, healthz, Prometheus metrics)")
    host.add_argument("artifact")
    host.add_argument("--host", default="127.0.0.1")
    host.add_argument("--port", type=int, default=8000)
    host.add_argument("--name", help="the model's name in /v1/models/NAME:predict (default: the file's stem)")
    host.add_argument("--workers", type=int, default=1,
                      help="runs in flight at once (a copy of the model each)")
    host.add_argument("--threads", type=int, help="threads per run (default: the CPUs shared by the workers)")
    host.add_argument("--max-batch", type=int, default=1,
                      help="batch requests up to B rows (the artifact compiled for batch B)")
    host.add_argument("--max-delay-ms", type=float, default=2.0,
                      help="how long a batch waits for more requests (default 2)")
    host.set_defaults(fn=cmd_serve)
    fuzz = sub.add_parser("soak", add_help=False,
                          help="the differential fuzzer's soak: random graphs on every target that runs here "
                               "vs the reference and onnxruntime (the test extra; `tensoregg soak --help`)")
    fuzz.set_defaults(fn=cmd_soak)
    for p in (run, timing, prof, build, show, why, tuning):
        p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...",
                       help="fix a symbolic input shape (repeatable); D1 may be a name (a symbolic batch)")
    for p in (run, timing, prof):
        p.add_argument("--dim-range", action="append", default=[], metavar="NAME=LOW:HIGH",
                       help="the batch sizes a symbolic batch NAME takes (default: any, a row at a time)")
    for p in (run, timing, prof, build):
        p.add_argument("--no-cache", action="store_true", help="compile without the compile cache")
    args, options = parser.parse_known_args(argv)
    if args.command == "soak":  # its options are the soak module's own
        args.options = options
    elif options:
        parser.error(f"unrecognized arguments: {' '.join(options)}")
    try:
        with progress.shown():
            return int(args.fn(args))
    except TensoreggError as e:
        print(f"tensoregg: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
