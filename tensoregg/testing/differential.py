"""The deep differential fuzzer: each random graph (``tensoregg.testing.fuzz``) compiled for every
target that runs here, at each thread count, and compared with the reference interpreter on the
unoptimized graph and with onnxruntime; a failing graph cut down to a small reproducer.

A ``Profile`` says how much to run: ``ci`` (a fixed handful of seeds in the default test run) and
``soak`` (``python -m tensoregg.testing.soak``, the cross CPU targets under qemu too). ``check``
runs one case and says what it found (``Finding``) and which kernel templates each target's lowering
used for it (``tensoregg.ir.program.LoopProgram.templates``, the graph's fused and Winograd ops, and
whether the native code ran on the thread team).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensoregg.api import compile as compile_model
from tensoregg.errors import UnsupportedOperator
from tensoregg.ir import Graph, run_graph
from tensoregg.ir.ops.fused import DOMAIN
from tensoregg.targets import registration
from tensoregg.targets.accel import CONFIGS
from tensoregg.targets.accel.lower import LOWERED_OPS
from tensoregg.testing import NATIVE_SLACK, assert_same, tolerance
from tensoregg.testing.fuzz import Case


@dataclass(frozen=True)
class Profile:
    """How much a fuzzing run does: the seeds ``first``..``first + cases - 1``, the targets (those
    that run on this machine), the thread counts of the targets that have threads, the share of
    graphs built around a large kernel, and whether onnxruntime is compared too."""

    name: str
    cases: int
    targets: tuple[str, ...]
    threads: tuple[int, ...] = (1, 2)
    large: float = 0.2
    onnxruntime: bool = True
    first: int = 0
    max_nodes: int = 30


PEER = "onnxruntime"
"""The ``target`` of a finding against onnxruntime (a peer the compiled targets are compared with)."""

PROFILES = {
    "ci": Profile("ci", cases=5, targets=("llvm", "interp", "ref", "accel-alone", "accel-small-alone"),
                  large=0.4, first=18, max_nodes=12),
    "soak": Profile("soak", cases=10_000, large=0.35, targets=("llvm", "interp", "ref", "accel-alone",
                                                               "accel-small-alone", "aarch64", "riscv64")),
}


ONLY_OPS = {name: LOWERED_OPS for name, config in CONFIGS.items() if not config.cpu_targets}
"""Targets that lower only a few ops and have no fallback (the accelerators alone): a graph with any
other op is not compiled for them (it would be refused, after a whole optimization)."""


TOOL_BUGS = {"qemu-riscv64 before 8.1 asserts on some vector instructions (qemu issue 1441)":
             r"qemu-riscv64: .*decode_save_opc: Assertion"}
"""Failures of the tools a target runs on (the emulators), not of tensoregg: such a run counts as
refused, with the reason; pattern searched for in the error's text."""


def tool_bug(exc: Exception) -> str | None:
    """The ``TOOL_BUGS`` entry ``exc`` is, if any."""
    return next((bug for bug, pattern in TOOL_BUGS.items() if re.search(pattern, str(exc))), None)


def runnable(targets: Sequence[str]) -> list[str]:
    """The ``targets`` that can run on this machine."""
    return [t for t in targets if registration(t).unavailable() is None]


@dataclass
class Finding:
    """A wrong answer (``mismatch``) or an exception (``error``) of one target at one thread count;
    ``target`` is ``onnxruntime`` where onnxruntime and the reference disagree."""

    target: str
    threads: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.target} ({self.threads} thread{'s' * (self.threads > 1)}): {self.kind}: {self.detail}"


@dataclass
class Result:
    """What ``check`` found for one case: the findings, and the templates each target used."""

    findings: list[Finding] = field(default_factory=list)
    templates: dict[str, set[str]] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    """Targets that refused the graph (an op or dtype without a lowering), with the reason (the node's
    name left out)."""


def depths(graph: Graph) -> dict[str, int]:
    """Each value's depth: the most nodes on a path from a graph input or constant to it."""
    depth: dict[str, int] = {}
    for node in graph.nodes:
        d = 1 + max((depth.get(n, 0) for n in node.inputs if n), default=0)
        depth.update((o, d) for o in node.outputs if o)
    return depth


def mismatch(got: np.ndarray, want: np.ndarray, depth: int, where: str) -> str | None:
    """Why ``got`` is not ``want`` (None if it is): dtype and shape exactly, integers exactly, floats
    within the dtype's tolerance times ``NATIVE_SLACK`` times the square root of the value's depth
    (rounding differences accumulate along the path), absolute error relative to the largest value."""
    rtol, atol = tolerance(want.dtype)
    slack = NATIVE_SLACK * math.sqrt(max(depth, 1))
    finite = np.abs(want[np.isfinite(want)]) if want.dtype.kind == "f" else np.zeros(0)
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    try:
        assert_same(np.asarray(got), want, where, rtol * slack, atol * slack * scale)
    except AssertionError as exc:
        return str(exc).strip()[:2000]
    return None


def templates_of(module: Any, threads: int) -> set[str]:
    """The kernel templates a compiled module used: its loop program's (where the target lowers to
    one), ``kernel-<class>`` for the kernels of a program made of kernel objects, not loops (the
    accelerator's), ``op-<name>`` for the fused and Winograd ops its optimized graph holds, and
    ``thread-team`` where its native code ran on more than one thread."""
    found = {f"op-{n.op}" for n in module.graph.nodes if n.domain == DOMAIN}
    program = getattr(module.program, "program", None)
    found.update(program.templates if program is not None and hasattr(program, "templates") else ())
    if program is None:
        found.update(f"kernel-{type(k).__name__}" for k in getattr(module.program, "kernels", ()))
    executor = getattr(module.program, "executor", None)
    if executor is not None and getattr(executor, "parallel", False) and threads > 1:
        found.add("thread-team")
    return found


def check(case: Case, targets: Sequence[str], threads: Sequence[int] = (1, 2), *,
          onnxruntime: bool = True) -> Result:
    """Compile ``case`` for each of ``targets`` (optimized, as users compile) and run it at each of
    ``threads`` (once where the target has no threads); compare every output with the reference
    interpreter's on the unoptimized graph, and onnxruntime's too with ``onnxruntime``."""
    graph, feeds = case.graph, case.feeds
    want = run_graph(graph, feeds)
    depth = depths(graph)
    result = Result()

    def compare(target: str, n: int, got: Sequence[np.ndarray]) -> None:
        for name, g, w in zip(graph.outputs, got, want):
            why = mismatch(g, w, depth.get(name, 1), f"output {name}")
            if why is not None:
                result.findings.append(Finding(target, n, "mismatch", why))
                return

    for target in targets:
        if target in ONLY_OPS and not case.ops <= ONLY_OPS[target]:
            result.unsupported[target] = "ops it does not lower (not compiled)"
            continue
        try:
            module = compile_model(graph, target)
        except UnsupportedOperator as exc:
            result.unsupported[target] = re.sub(r", node '[^']*'", "", str(exc))  # the same for every node
            continue
        except Exception as exc:  # everything else the compiler raises is a finding
            why = f"compile: {type(exc).__name__}: {exc}"
            result.findings.append(Finding(target, 1, "error", why[:2000]))
            continue
        used = result.templates.setdefault(target, set())
        for n in threads if hasattr(module.program, "num_threads") else (1,):
            if hasattr(module.program, "num_threads"):
                module.num_threads = n
            try:
                got = module.run(**feeds)
            except Exception as exc:
                bug = tool_bug(exc)
                if bug is not None:
                    result.unsupported[target] = bug
                    break
                why = f"run: {type(exc).__name__}: {exc}"
                result.findings.append(Finding(target, n, "error", why[:2000]))
                continue
            used.update(templates_of(module, n))
            compare(target, n, got)
    if onnxruntime:
        got_ort = _onnxruntime(graph, feeds, result)
        if got_ort is not None:
            compare(PEER, 1, [w if peer_deviates(graph, g, w) else g for g, w in zip(got_ort, want)])
    return result


def peer_deviates(graph: Graph, got: np.ndarray, want: np.ndarray) -> bool:
    """Whether onnxruntime's output ``got`` is one of its known deviations from the reference's
    ``want``, not compared: onnxruntime's max and pools skip NaN (soak seed 6010); its
    ReduceLogSumExp at opset 28 exponentiates before subtracting the maximum, so that it overflows
    to inf (1.32: from exp(89) in float32; soak seed 100914) where the reference is finite; and its
    integer ReduceProd saturates where it overflows (ONNX leaves that undefined; numpy and tensoregg
    wrap; seed 101520)."""
    if got.shape != want.shape:
        return False
    if want.dtype.kind in "iu":
        return any(n.op == "ReduceProd" and graph.types[n.inputs[0]].dtype.kind in "iu" for n in graph.nodes)
    if want.dtype.kind != "f":
        return False
    if np.isnan(want).any():
        return True
    overflowed = np.isinf(got) & np.isfinite(want)
    return bool(overflowed.any()) and any(n.op == "ReduceLogSumExp" for n in graph.nodes)


def _onnxruntime(graph: Graph, feeds: dict[str, np.ndarray], result: Result) -> list[np.ndarray] | None:
    """onnxruntime's outputs, or None with the reason it refused the graph in ``result``."""
    try:
        return run_onnxruntime(graph, feeds)
    except Exception as exc:  # onnxruntime's errors have no common base class
        result.unsupported[PEER] = _ort_reason(str(exc))
        return None


def run_onnxruntime(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``graph`` run by onnxruntime on one thread, with its optimizations off (so that it computes
    each op as written)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    session = ort.InferenceSession(to_onnx(graph).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def _ort_reason(message: str) -> str:
    """Why onnxruntime refused a graph, with the fuzzer's value names (and so node names) blanked:
    the same text for the same cause in every graph."""
    first = message.splitlines()[0] if message else ""
    first = re.sub(r"\[ONNXRuntimeError\] : \d+ : |This is an invalid model\. ", "", first)
    return re.sub(r"\b[vcx]\d+(_\d+)?\b", "_", first)[:140]


def to_onnx(graph: Graph) -> onnx.ModelProto:
    """``graph`` as an ONNX model at the current opset (tensoregg's internal ops in their domain)."""
    def attribute(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return numpy_helper.from_array(value)
        return list(value) if isinstance(value, tuple) else value

    def info(name: str) -> onnx.ValueInfoProto:
        t = graph.types[name]
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(t.dtype), t.shape)

    nodes = [helper.make_node(n.op, list(n.inputs), list(n.outputs), name=n.label, domain=n.domain or None,
                              **{k: attribute(v) for k, v in n.attrs.items() if v is not None})
             for n in graph.nodes]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in graph.initializers.items()]
    body = helper.make_graph(nodes, graph.name, [info(n) for n in graph.inputs],
                             [info(n) for n in graph.outputs], inits)
    opsets = [helper.make_opsetid("", onnx.defs.onnx_opset_version())]
    if any(n.domain for n in graph.nodes):
        opsets.append(helper.make_opsetid(DOMAIN, 1))
    model = helper.make_model(body, opset_imports=opsets, producer_name="tensoregg.testing.differential")
    model.ir_version = min(model.ir_version, 10)
    return model


def fails_like(finding: Finding, feeds: dict[str, np.ndarray], *, onnxruntime: bool = True
               ) -> Callable[[Graph], bool]:
    """A predicate: whether a graph still shows ``finding`` (same target, thread count and kind)."""
    def still(graph: Graph) -> bool:
        case = Case(-1, graph, {n: feeds[n] for n in graph.inputs})
        if finding.target == PEER:
            result = check(case, [], onnxruntime=True)
        else:
            result = check(case, [finding.target], (finding.threads,), onnxruntime=False)
        return any(f.target == finding.target and f.kind == finding.kind for f in result.findings)
    return still


def minimize(graph: Graph, fails: Callable[[Graph], bool], *, budget: int = 40) -> Graph:
    """A smaller graph that still ``fails``: first the shortest prefix whose single output fails
    (each value as the only output, the nodes it needs), then each node bypassed in turn (its output
    replaced by an input of the same type), at most ``budget`` tries in all."""
    tries = 0

    def attempt(candidate: Graph | None) -> bool:
        nonlocal tries
        if candidate is None or tries >= budget:
            return False
        tries += 1
        try:
            return fails(candidate)
        except Exception:
            return False

    best = graph
    for node in graph.nodes:
        for out in (o for o in node.outputs if o):
            if attempt(_cut(graph, [out])):
                best = _cut(graph, [out]) or best
                break
        else:
            continue
        break
    changed = True
    while changed and tries < budget:
        changed = False
        for k in range(len(best.nodes)):
            smaller = _bypass(best, k)
            if attempt(smaller):
                assert smaller is not None
                best, changed = smaller, True
                break
    return best


def _cut(graph: Graph, outputs: list[str]) -> Graph | None:
    """The part of ``graph`` that ``outputs`` need."""
    needed, nodes = set(outputs), []
    for node in reversed(graph.nodes):
        if needed & set(node.outputs):
            nodes.append(node)
            needed.update(n for n in node.inputs if n)
    try:
        return Graph({n: t for n, t in graph.inputs.items() if n in needed},
                     {n: v for n, v in graph.initializers.items() if n in needed}, nodes[::-1], outputs,
                     name=graph.name)
    except Exception:
        return None


def _bypass(graph: Graph, k: int) -> Graph | None:
    """``graph`` without node ``k``: its one output replaced by an input of that node of the same
    type; None where no input fits."""
    node = graph.nodes[k]
    outs = [o for o in node.outputs if o]
    if len(outs) != 1:
        return None
    same = [n for n in node.inputs if n and graph.types[n] == graph.types[outs[0]]]
    if not same:
        return None
    rename = {outs[0]: same[0]}
    nodes = [type(n)(n.op, tuple(rename.get(i, i) for i in n.inputs), n.outputs, n.attrs, n.name, n.domain)
             for j, n in enumerate(graph.nodes) if j != k]
    outputs = list(dict.fromkeys(rename.get(o, o) for o in graph.outputs))
    return _cut(Graph(graph.inputs, graph.initializers, nodes, outputs, name=graph.name), outputs) \
        if not set(outputs) & set(graph.inputs) else None


def save_reproducer(graph: Graph, feeds: dict[str, np.ndarray], path: str) -> str:
    """Write ``graph`` as ``path`` (an .onnx file) and its inputs beside it (``.npz``); returns the path."""
    onnx.save(to_onnx(graph), path)
    arrays: dict[str, Any] = {n: feeds[n] for n in graph.inputs}
    np.savez(path.removesuffix(".onnx") + ".npz", **arrays)
    return path


__all__ = ["PROFILES", "Finding", "Profile", "Result", "check", "minimize", "save_reproducer", "to_onnx"]
