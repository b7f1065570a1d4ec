"""The differential fuzzer's soak: ``python -m tensoregg.testing.soak --cases N --minutes M``.

Runs the seeds of a profile (``tensoregg.testing.differential.PROFILES``) one by one in a worker
process, each with a time limit (generated code that crashes or hangs fails its case, not the
soak), until the cases or the minutes run out. Prints the cases tried, each failure with a minimized
reproducer saved as an .onnx file (its inputs beside it as .npz), and the share of graphs in which
each target used each kernel template. ``--json`` writes the same as a JSON file, every minute and
at the end; with ``--resume`` a soak goes on from that file's tally (the seeds after the last it ran,
its counts added to), so that a long soak can run in pieces, each piece's version noted in it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from tensoregg.testing.differential import (
    PROFILES,
    Finding,
    Profile,
    check,
    fails_like,
    minimize,
    runnable,
    save_reproducer,
)
from tensoregg.testing.fuzz import random_case
from tensoregg.version import __version__

CASE_SECONDS = 300
"""A case that takes longer than this (compiles and runs on every target) is run once more, with
``RETRY_SECONDS``; past that too it fails as a hang."""
RETRY_SECONDS = 1200
"""The second limit: a soak at low priority beside other work can be starved past the first (seed
101107, 20 CPU seconds, took over 300 s beside a test run)."""
HANG = "hang (time limit)"
CHECKPOINT_SECONDS = 60.0
"""How often a soak hands its tally to its checkpoint (``--json``: writes it)."""


@dataclass
class Soak:
    """A soak's tally: cases tried, failures (seed, finding, reproducer), per target the graphs it
    ran and in how many each template appeared, the ops the graphs held, the seconds spent."""

    tried: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    ran: Counter[str] = field(default_factory=Counter)
    templates: dict[str, Counter[str]] = field(default_factory=dict)
    unsupported: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    """``target: reason`` of each refusal (an op or dtype without a lowering)."""
    ops: Counter[str] = field(default_factory=Counter)
    large: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    next_seed: int = 0
    """One past the highest seed tried: where a resumed soak starts."""
    pieces: list[dict[str, Any]] = field(default_factory=list)
    """Each run that added to this tally: its profile, targets, tensoregg version, first seed, cases."""

    def add(self, seed: int, outcome: dict[str, Any]) -> None:
        self.tried += 1
        self.next_seed = max(self.next_seed, seed + 1)
        if self.pieces:
            self.pieces[-1]["cases"] += 1
        self.ops.update(outcome.get("ops", ()))
        self.large[outcome.get("large") or "none"] += 1
        for target, used in outcome.get("templates", {}).items():
            self.ran[target] += 1
            self.templates.setdefault(target, Counter()).update(used)
        for target, why in outcome.get("unsupported", {}).items():
            self.unsupported[target] += 1
            self.refusals[f"{target}: {why[:160]}"] += 1
        for f in outcome.get("findings", []):
            self.failures.append({"seed": seed, **f})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Soak:
        """The tally ``vars(tally)`` was, read back from JSON."""
        counters = {"ran", "unsupported", "refusals", "ops", "large"}
        fields: dict[str, Any] = {k: Counter(v) if k in counters else v for k, v in data.items()}
        fields["templates"] = {t: Counter(c) for t, c in data.get("templates", {}).items()}
        return cls(**fields)

    def save(self, path: Path) -> None:
        """Write the tally to ``path`` as JSON (replacing it at once: a reader never sees half)."""
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(vars(self), indent=1))
        partial.replace(path)

    def report(self) -> str:
        """The tally as text."""
        rate = self.tried / (self.seconds / 60) if self.seconds else 0.0
        lines = [f"cases tried: {self.tried} in {self.seconds / 60:.1f} min ({rate:.1f} graphs/minute)"
                 + (f", in {len(self.pieces)} runs" if len(self.pieces) > 1 else ""),
                 f"large kernels: {dict(self.large)}",
                 f"failures: {len(self.failures)}"]
        for f in sorted(self.failures, key=lambda f: f["seed"]):
            lines.append(f"  seed {f['seed']}: {f['target']} ({f['threads']} threads) {f['kind']}: "
                         f"{f['detail'][:300]}")
            if f.get("reproducer"):
                lines.append(f"    reproducer ({f['nodes'][1]} of {f['nodes'][0]} nodes): {f['reproducer']}")
        lines.append(f"refused (unsupported) by target: {dict(self.unsupported)}; most often:")
        lines += [f"  {n} x {why}" for why, n in self.refusals.most_common(8)]
        for target, used in sorted(self.templates.items()):
            n = self.ran[target]
            shares = ", ".join(f"{t} {c / n:.1%}" for t, c in sorted(used.items(), key=lambda kv: -kv[1]))
            lines.append(f"templates on {target} ({n} graphs): {shares or 'none'}")
        lines.append(f"ops drawn: {len(self.ops)}")
        return "\n".join(lines)


def outcome(seed: int, profile: Profile, targets: Sequence[str], out: Path | None) -> dict[str, Any]:
    """Run case ``seed``: its findings (each minimized and saved under ``out``), templates, ops."""
    case = random_case(seed, large=profile.large, max_nodes=profile.max_nodes)
    result = check(case, targets, profile.threads, onnxruntime=profile.onnxruntime)
    findings = []
    for k, f in enumerate(result.findings):
        entry: dict[str, Any] = asdict(f)
        if out is not None:
            small = minimize(case.graph, fails_like(f, case.feeds, onnxruntime=profile.onnxruntime))
            path = out / f"seed{seed}-{f.target}-{f.threads}t-{k}.onnx"
            entry["reproducer"] = save_reproducer(small, case.feeds, str(path))
            entry["nodes"] = [len(case.graph.nodes), len(small.nodes)]
        findings.append(entry)
    return {"findings": findings, "templates": {t: sorted(u) for t, u in result.templates.items()},
            "unsupported": result.unsupported, "ops": sorted(case.ops), "large": case.large}


def _work(tasks: Any, results: Any, profile: Profile, targets: Sequence[str], out: Path | None) -> None:
    """The worker process: runs each seed it is sent until it is sent None."""
    warnings.simplefilter("ignore", RuntimeWarning)  # numpy's, on the reference's inf and NaN values
    for seed in iter(tasks.get, None):
        try:
            data = outcome(seed, profile, targets, out)
        except Exception as exc:  # a fuzzer bug: reported as a finding, the soak goes on
            data = {"findings": [asdict(Finding("fuzzer", 1, "error", f"{type(exc).__name__}: {exc}"))]}
        results.put(data)


class Worker:
    """A worker process that runs cases one at a time (``outcome``), started by spawning: forked from
    a process that has compiled, onnxruntime's first use deadlocks (threads of the parent's native
    libraries held locks at the fork). A case that crashes the worker or outlives ``timeout`` is a
    finding of kind ``crash``, and the next case gets a new worker."""

    def __init__(self, profile: Profile, targets: Sequence[str], out: Path | None) -> None:
        self.args = (profile, list(targets), out)
        self.process: Any = None

    def run(self, seed: int, timeout: float = CASE_SECONDS) -> dict[str, Any]:
        if self.process is None:
            ctx = multiprocessing.get_context("spawn")
            self.tasks, self.results = ctx.Queue(), ctx.Queue()
            self.process = ctx.Process(target=_work, args=(self.tasks, self.results, *self.args), daemon=True)
            self.process.start()
        process = self.process  # ``close`` may run meanwhile, from another thread
        self.tasks.put(seed)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return dict(self.results.get(timeout=1))
            except queue.Empty:
                if not process.is_alive():
                    break
        died = not process.is_alive()
        why = f"the worker died (exit status {process.exitcode})" if died else HANG
        self.close()
        return {"findings": [asdict(Finding(",".join(self.args[1]), 1, "crash", why))]}

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.join()


def soak(profile: Profile, *, cases: int, minutes: float, out: Path | None, first: int = 0,
         echo: bool = True, jobs: int = 1, tally: Soak | None = None,
         checkpoint: Callable[[Soak], None] | None = None) -> Soak:
    """Run seeds ``first``.. until ``cases`` are tried or ``minutes`` have passed, ``jobs`` at a time
    (each in its own worker process), adding to ``tally`` (default: a new one); ``checkpoint`` is
    called with the tally every ``CHECKPOINT_SECONDS`` after a case ends."""
    targets = runnable(profile.targets)
    tally = Soak() if tally is None else tally
    if cases <= 0:  # a finished tally, resumed to print it: no run to note
        return tally
    tally.pieces.append({"profile": profile.name, "targets": targets, "version": source_version(),
                         "first": first, "cases": 0, "jobs": jobs})
    before = tally.seconds
    start = last_checkpoint = time.monotonic()
    seeds = iter(range(first, first + cases))
    lock, stop = threading.Lock(), threading.Event()

    def drive(worker: Worker) -> None:
        while not stop.is_set():
            with lock:
                seed = next(seeds, None) if time.monotonic() - start <= minutes * 60 else None
            if seed is None:
                return
            found = worker.run(seed)
            if not stop.is_set() and any(f["detail"] == HANG for f in found.get("findings", [])):
                found = worker.run(seed, RETRY_SECONDS)
            if stop.is_set():  # the worker was killed under it
                return
            nonlocal last_checkpoint
            with lock:
                tally.add(seed, found)
                tally.seconds = before + time.monotonic() - start
                if checkpoint is not None and time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS:
                    checkpoint(tally)
                    last_checkpoint = time.monotonic()
            if echo and found.get("findings"):
                print(f"seed {seed}: {len(found['findings'])} finding(s)", file=sys.stderr, flush=True)

    workers = [Worker(profile, targets, out) for _ in range(max(1, jobs))]
    threads = [threading.Thread(target=drive, args=(w,), daemon=True) for w in workers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except KeyboardInterrupt:  # interrupted (or SIGTERM, see main): the tally so far
        stop.set()
    finally:
        for w in workers:
            w.close()
    tally.seconds = before + time.monotonic() - start
    return tally


def source_version() -> str:
    """tensoregg's version, and the commit of the checkout it runs from where it is one."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__} ({commit})"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None, prog: str = "python -m tensoregg.testing.soak") -> int:
    """The command (also ``tensoregg soak``): prints the tally; exit status 1 if anything failed."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--cases", type=int, default=PROFILES["soak"].cases,
                        help="cases in all (with --resume, the tally's count in)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="soak")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at a time (one worker process each)")
    parser.add_argument("--targets", help="comma-separated targets instead of the profile's")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"),
                        help="where reproducers are saved")
    parser.add_argument("--json", type=Path, help="also write the tally here (every minute and at the end)")
    parser.add_argument("--resume", action="store_true",
                        help="add to the tally in --json (where it exists), from the seed after its last")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    profile = PROFILES[args.profile]
    if args.targets:
        profile = replace(profile, targets=tuple(args.targets.split(",")))
    if args.resume and not args.json:
        parser.error("--resume needs --json (the tally to add to)")
    tally, first = Soak(), args.first
    if args.resume and args.json.exists():
        try:
            tally = Soak.from_json(json.loads(args.json.read_text()))
        except (ValueError, TypeError) as exc:
            parser.error(f"--resume: {args.json} is not a soak's tally ({exc})")
        first = max(first, tally.next_seed)
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` stops a soak: it still reports
    save = None if args.json is None else partial(Soak.save, path=args.json)
    tally = soak(profile, cases=max(0, args.cases - tally.tried), minutes=args.minutes, out=args.out,
                 first=first, jobs=args.jobs, tally=tally, checkpoint=save)
    print(tally.report())
    if args.json:
        tally.save(args.json)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
