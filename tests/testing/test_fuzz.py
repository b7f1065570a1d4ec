"""The deep differential fuzzer: its graphs, its checks, its minimizer and the lowering's template
counter it reports; the ``ci`` profile's fixed seeds run here (the soak: ``python -m
tensoregg.testing.soak``)."""

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings

from tensoregg.errors import CrossRunError
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import OPS, Graph, Node, TensorType, run_graph
from tensoregg.targets.llvm import NativeModel
from tensoregg.testing import differential
from tensoregg.testing.differential import (
    PROFILES,
    Profile,
    check,
    fails_like,
    minimize,
    mismatch,
    runnable,
    save_reproducer,
)
from tensoregg.testing.fuzz import DTYPES, EXACT, MAX_NODES, MIN_NODES, SENSITIVE, cases, random_case
from tensoregg.testing.soak import Soak, soak

F32 = np.dtype(np.float32)


def test_graphs_are_deep_typed_and_varied():
    drawn = [random_case(seed) for seed in range(60)]
    assert all(MIN_NODES <= len(c.graph.nodes) <= MAX_NODES for c in drawn)
    assert np.mean([len(c.graph.nodes) for c in drawn]) >= 10
    ops = Counter(op for c in drawn for op in c.ops)
    assert {"Concat", "Split", "Slice", "Gather", "MatMul", "Conv"} <= set(ops)
    assert len(ops) >= 60  # drawn from the whole registry, not a hand-picked list
    dtypes = {t.dtype for c in drawn for t in c.graph.types.values()}
    assert set(DTYPES) <= dtypes
    assert {c.large for c in drawn} == {"", "matmul", "conv", "wide", "int8"}
    again = random_case(7)
    assert str(again.graph) == str(drawn[7].graph)  # a seed is a reproducer
    assert all(np.array_equal(again.feeds[n], drawn[7].feeds[n]) for n in again.feeds)


def test_ops_that_amplify_rounding_read_only_exact_values():
    """The first soak's mismatches were Reciprocal of a MatMul's near-zero sums (rounding amplified,
    not a wrong answer): an op in SENSITIVE never reads a float value that was rounded on the way."""
    for seed in range(40):
        graph = random_case(seed).graph
        rounded: set[str] = set()
        for node in graph.nodes:
            read = rounded & set(node.inputs)
            assert not (read and node.op in SENSITIVE), f"seed {seed}: {node.op} reads {read}"
            if read or node.op not in EXACT:
                rounded.update(o for o in node.outputs if o and graph.types[o].dtype.kind == "f")


def test_integer_powers_have_nonnegative_exponents():
    """0 to a negative integer power is undefined (tensoregg: 0, onnxruntime: INT_MIN; seed 1084):
    the integer Pows of the first 300 seeds (some must have one) have constant exponents >= 0."""
    pows = 0
    for seed in range(300):
        graph = random_case(seed).graph
        for n in graph.nodes:
            if n.op == "Pow" and graph.types[n.inputs[0]].dtype.kind == "i":
                assert (graph.initializers[n.inputs[1]] >= 0).all(), seed
                pows += 1
    assert pows


@settings(max_examples=5)
@given(cases(max_nodes=8, large=0.0))
def test_the_strategy_draws_graphs_the_reference_runs(case):
    assert len(run_graph(case.graph, case.feeds)) == len(case.graph.outputs)


def test_mismatch_is_dtype_aware_and_scaled_by_depth():
    want = np.array([1.0, 1000.0], np.float32)
    assert mismatch(want + np.float32(1e-3), want, 1, "o") is None  # 1e-6 of the largest value
    assert mismatch(want + np.float32(1.0), want, 1, "o") is not None
    assert mismatch(want.astype(np.float16), want.astype(np.float16) * np.float16(1.2), 1, "o") is not None
    assert mismatch(want.astype(np.float16) * np.float16(1.1), want.astype(np.float16), 16, "o") is None
    assert mismatch(np.array([3], np.int32), np.array([4], np.int32), 30, "o") is not None
    assert mismatch(np.array([3], np.int64), np.array([3], np.int32), 1, "o") is not None


def _chain() -> tuple[Graph, dict[str, np.ndarray]]:
    x = TensorType(F32, (2, 3))
    nodes = [Node("Abs", ("x",), ("a",)), Node("Neg", ("a",), ("b",)), Node("Relu", ("b",), ("c",)),
             Node("Sigmoid", ("c",), ("d",)), Node("Exp", ("d",), ("e",))]
    feeds = {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)}
    return Graph({"x": x}, {}, nodes, ["e"]), feeds


def test_the_minimizer_keeps_the_node_at_fault():
    graph, _ = _chain()
    small = minimize(graph, lambda g: any(n.op == "Relu" for n in g.nodes))
    assert [n.op for n in small.nodes] == ["Relu"]


def test_a_wrong_answer_is_found_and_cut_down(monkeypatch):
    """A target that gets Relu wrong (Relu computed as Abs): the check reports the mismatch and the
    minimizer cuts the graph to the Relu."""
    real = differential.compile_model

    def wrong_relu(graph, target):
        bad = Graph(graph.inputs, graph.initializers,
                    [Node("Abs", n.inputs, n.outputs) if n.op == "Relu" else n for n in graph.nodes],
                    graph.outputs)
        return real(bad, target)

    monkeypatch.setattr(differential, "compile_model", wrong_relu)
    graph, feeds = _chain()
    found = check(differential.Case(0, graph, feeds), ["ref"], onnxruntime=False).findings
    assert [(f.target, f.kind) for f in found] == [("ref", "mismatch")]
    small = minimize(graph, fails_like(found[0], feeds, onnxruntime=False))
    assert "Relu" in {n.op for n in small.nodes} and len(small.nodes) < len(graph.nodes)


def test_reproducers_import_back(tmp_path):
    case = random_case(3)
    path = save_reproducer(case.graph, case.feeds, str(tmp_path / "case.onnx"))
    back = import_onnx(path)
    saved = np.load(str(tmp_path / "case.npz"))
    for got, want in zip(run_graph(back, dict(saved)), run_graph(case.graph, case.feeds)):
        assert mismatch(got, want, 1, "reimported") is None


def test_the_lowering_counts_the_templates_it_uses():
    def model(side: int, **options) -> NativeModel:
        rng = np.random.default_rng(0)
        weights = {"w": rng.standard_normal((side, side)).astype(np.float32), "b": np.ones(side, np.float32)}
        nodes = [Node("MatMul", ("x", "w"), ("y",)), Node("Add", ("y", "b"), ("z",)),
                 Node("Relu", ("z",), ("r",))]
        return NativeModel(Graph({"x": TensorType(F32, (side, side))}, weights, nodes, ["r"]), **options)

    big = model(256).program.templates
    assert {"gemm-tiled", "pack-a-rows", "pack-b-prepacked", "fused-producers"} <= set(big)
    assert big["gemm-tiled"] == 1 and "gemm-untiled" not in big
    assert model(4).program.templates == Counter({"gemm-untiled": 1, "fused-producers": 1})
    assert model(256, schedule=False).program.templates == Counter({"fused-producers": 1})


def test_the_ci_profile_finds_nothing():
    """The ``ci`` profile's seeds on every target that runs here (onnxruntime too), at 1 and 2 threads;
    they reach Winograd, a tiled GEMM with a split and an epilogue, and the accelerator."""
    ci = PROFILES["ci"]
    targets = runnable(ci.targets)
    reached: set[str] = set()
    for seed in range(ci.first, ci.first + ci.cases):
        case = random_case(seed, large=ci.large, max_nodes=ci.max_nodes)
        result = check(case, targets, ci.threads, onnxruntime=ci.onnxruntime)
        reached.update(f"{target}:{t}" for target, used in result.templates.items() for t in used)
        found = "\n".join(map(str, result.findings))
        assert not result.findings, f"seed {seed}:\n{found}\n{case.graph}"
    assert {"llvm:op-WinogradInput", "llvm:gemm-split", "llvm:gemm-epilogue",
            "accel-alone:kernel-ConvKernel"} <= reached


def test_onnxruntime_refusals_give_the_reason_without_names():
    graph = Graph({"x0": TensorType(np.dtype(np.int64), (3,))}, {}, [Node("Relu", ("x0",), ("v0",))], ["v0"])
    found = check(differential.Case(0, graph, {"x0": np.arange(3)}), []).unsupported
    assert found == {"onnxruntime": "NOT_IMPLEMENTED : Could not find an implementation for Relu(14) "
                                    "node with name '_'"}


def test_an_emulator_bug_is_a_refusal_not_a_finding(monkeypatch):
    """qemu-riscv64 7.2 (Debian 12) aborts on some vector code (soak seeds 3031, 3034): qemu's bug."""
    class Crashing:
        program = None

        def run(self, **feeds):
            raise CrossRunError("target 'riscv64': `qemu-riscv64 model` was killed by SIGSEGV; stderr: qemu-"
                                "riscv64: ../../target/riscv/translate.c:213: decode_save_opc: Assertion "
                                "`ctx->insn_start != NULL' failed.")

    monkeypatch.setattr(differential, "compile_model", lambda graph, target: Crashing())
    graph, feeds = _chain()
    result = check(differential.Case(0, graph, feeds), ["riscv64"], onnxruntime=False)
    assert not result.findings and "qemu issue 1441" in result.unsupported["riscv64"]


def test_outputs_with_nan_are_not_compared_with_onnxruntime():
    """onnxruntime's GlobalMaxPool skips NaN where tensoregg propagates it (soak seed 6010)."""
    f32 = TensorType(F32, (1, 2, 2, 1))
    graph = Graph({"x0": f32}, {}, [Node("Atanh", ("x0",), ("v0",)), Node("GlobalMaxPool", ("v0",), ("v1",))],
                  ["v1"])
    feeds = {"x0": np.array([0.5, 2.0, 0.1, 0.2], np.float32).reshape(1, 2, 2, 1)}
    assert not check(differential.Case(0, graph, feeds), []).findings


def test_onnxruntimes_overflowing_log_sum_exp_is_not_compared_but_is_checked_as_a_deviation():
    """onnxruntime 1.32's ReduceLogSumExp at opset 28 gives inf for log(sum(exp(1092))) (soak seed
    100914); the targets are still compared with the reference, and a graph without the op is not
    excused."""
    f32 = TensorType(F32, (1, 3))
    feeds = {"x0": np.full((1, 3), 1092.0, np.float32)}
    graph = Graph({"x0": f32}, {}, [Node("ReduceLogSumExp", ("x0",), ("v0",), {"keepdims": 0})], ["v0"])
    result = check(differential.Case(0, graph, feeds), ["ref"])
    assert not result.findings
    want = run_graph(graph, feeds)[0]
    assert np.isfinite(want).all() and abs(float(want) - (1092 + np.log(3))) < 1e-2
    assert differential.peer_deviates(graph, np.array(np.inf, np.float32), want)
    relu = Graph({"x0": f32}, {}, [Node("Relu", ("x0",), ("v0",))], ["v0"])
    assert not differential.peer_deviates(relu, np.full((1, 3), np.inf, np.float32), feeds["x0"])


def test_onnxruntimes_saturating_integer_product_is_not_compared():
    """ONNX leaves integer overflow undefined: onnxruntime's int32 ReduceProd of 1e5 * 1e5 * 3 * -7
    gives INT_MIN where numpy and tensoregg wrap (soak seed 101520)."""
    i32 = np.dtype(np.int32)
    graph = Graph({"x0": TensorType(i32, (4,))}, {}, [Node("ReduceProd", ("x0",), ("v0",), {"keepdims": 0})],
                  ["v0"])
    feeds = {"x0": np.array([100000, 100000, 3, -7], np.int32)}
    assert not check(differential.Case(0, graph, feeds), ["llvm", "ref"]).findings
    want = run_graph(graph, feeds)[0]
    assert int(want) == np.prod(feeds["x0"], dtype=np.int32)
    assert differential.peer_deviates(graph, np.array(-2**31, np.int32), want)
    relu = Graph({"x0": TensorType(i32, (4,))}, {}, [Node("Relu", ("x0",), ("v0",))], ["v0"])
    assert not differential.peer_deviates(relu, feeds["x0"] + 1, feeds["x0"])


def test_graphs_with_ops_the_accelerator_lacks_are_not_compiled_for_it():
    result = check(random_case(21, large=0.4, max_nodes=12), ["accel-alone"], onnxruntime=False)
    assert result.unsupported == {"accel-alone": "ops it does not lower (not compiled)"}
    assert not result.findings


@pytest.mark.slow
def test_the_soak_reports_cases_and_templates(tmp_path):
    tally = soak(Profile("t", cases=3, targets=("llvm", "ref"), large=1.0), cases=3, minutes=5, out=tmp_path,
                 echo=False, jobs=2)
    assert tally.tried == 3 and not tally.failures
    assert tally.ran["llvm"] == 3 and "gemm-tiled" in tally.templates["llvm"]
    assert "cases tried: 3" in tally.report()


def test_a_soak_resumes_from_its_tally_after_the_last_seed(tmp_path):
    from tensoregg.testing.soak import main

    before = Soak()
    before.pieces.append({"profile": "soak", "cases": 0})
    before.add(5, {"templates": {"ref": []}, "ops": ["Add"], "large": ""})
    before.add(6, {"templates": {"ref": ["pool"]}, "ops": ["Add", "Relu"], "large": "conv",
                   "findings": [{"target": "ref", "threads": 1, "kind": "mismatch", "detail": "x"}]})
    before.seconds = 30.0
    path = tmp_path / "tally.json"
    before.save(path)
    assert vars(Soak.from_json(json.loads(path.read_text()))) == vars(before)
    args = ["--resume", "--json", str(path), "--targets", "ref", "--out", str(tmp_path), "--minutes", "5"]
    assert main([*args, "--cases", "2"]) == 1  # already done: no case runs, no run is noted; the old
    # failure stands
    assert main([*args, "--cases", "3"]) == 1
    after = Soak.from_json(json.loads(path.read_text()))
    assert (after.tried, after.next_seed, after.ops["Add"], len(after.failures)) == (3, 8, 2, 1)
    assert [p["cases"] for p in after.pieces] == [2, 1] and after.pieces[-1]["first"] == 7
    assert after.ran["ref"] == 3 and after.seconds > 30.0


def test_tensoregg_soak_is_the_soak_command(capsys):
    from tensoregg.cli import main

    with pytest.raises(SystemExit) as done:
        main(["soak", "--help"])
    assert done.value.code == 0 and "usage: tensoregg soak" in capsys.readouterr().out


def test_drawn_nodes_give_their_first_input_a_type_onnx_allows():
    """Invalid ONNX (an int Sum, an int ReduceLogSum) is refused by onnxruntime, so that such a graph
    would not be compared there: no node of the first 150 seeds' graphs has one."""
    from tensoregg.testing.fuzz import onnx_allows

    drawn = 0
    for seed in range(150):
        graph = random_case(seed).graph
        for node in graph.nodes:
            opdef = OPS[node.domain if node.domain != "ai.onnx" else "", node.op]
            assert onnx_allows(opdef, graph.types[node.inputs[0]].dtype), (seed, node)
            drawn += opdef.name in ("Sum", "ReduceLogSum", "Dropout")
    assert drawn  # float-only ops are drawn, on floats


@pytest.mark.parametrize("hangs, failures", [(1, 0), (2, 1)])
def test_a_case_past_its_time_limit_runs_once_more_before_it_counts_as_a_hang(monkeypatch, hangs, failures):
    """A soak at low priority beside other work can be starved past the limit (seed 101107): the case
    runs again with the longer limit, and fails as a hang only if it outlives that too."""
    from tensoregg.testing import soak as soak_module

    limits = []

    class Starved:
        def __init__(self, *args):
            pass

        def run(self, seed, timeout=soak_module.CASE_SECONDS):
            limits.append(timeout)
            if len(limits) <= hangs:
                hang = {"target": "ref", "threads": 1, "kind": "crash", "detail": soak_module.HANG}
                return {"findings": [hang]}
            return {"templates": {"ref": []}, "ops": ["Add"], "large": ""}

        def close(self):
            pass

    monkeypatch.setattr(soak_module, "Worker", Starved)
    tally = soak(Profile("t", cases=1, targets=("ref",)), cases=1, minutes=5, out=None, echo=False)
    assert tally.tried == 1 and len(tally.failures) == failures
    assert limits == [soak_module.CASE_SECONDS, soak_module.RETRY_SECONDS]
