"""Placement on the accelerator and the CPU beside it: a model mixing ops the accelerator runs and
ops it lacks runs bit-exactly with the reference, the placement shown by ``explain``; raising the
link's transfer cost moves a kernel between CPU ops onto the CPU."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper

import tensoregg
from tensoregg.api import to_graph
from tensoregg.cli import main
from tensoregg.errors import UnsupportedOperator
from tensoregg.ir import run_graph
from tensoregg.targets.accel import register_accel
from tensoregg.targets.accel.driver import SimulatorDriver
from tensoregg.targets.accel.machines import VTA
from tensoregg.targets.accel.mixed import MixedProgram
from tensoregg.targets.accel.placement import place

RNG = np.random.default_rng(15)
I8, F32 = TensorProto.INT8, TensorProto.FLOAT


def _model(nodes: list, inits: dict[str, np.ndarray], x: tuple, y: tuple) -> ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*x)],
                              [helper.make_tensor_value_info(*y)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def mixed(seed: int = 0) -> ModelProto:
    """QLinearConv -> DequantizeLinear -> Relu -> Softmax -> QuantizeLinear -> Reshape -> QLinearMatMul:
    int8 products the accelerator runs around float ops it lacks (weights drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    inits = {"xs": np.array(0.05, np.float32), "xz": np.array(-3, np.int8),
             "w1": rng.integers(-127, 128, (64, 16, 3, 3), dtype=np.int8),
             "ws": (rng.random(64) * 0.01 + 0.002).astype(np.float32), "wz": np.zeros(64, np.int8),
             "cs": np.array(0.2, np.float32), "cz": np.array(4, np.int8),
             "qs": np.array(1 / 256, np.float32), "qz": np.array(-128, np.int8), "rows": np.array([64, 64]),
             "w2": rng.integers(-127, 128, (64, 128), dtype=np.int8), "w2s": np.array(0.003, np.float32),
             "w2z": np.array(0, np.int8), "ys": np.array(0.1, np.float32), "yz": np.array(1, np.int8)}
    conv = ["x", "xs", "xz", "w1", "ws", "wz", "cs", "cz"]
    nodes = [helper.make_node("QLinearConv", conv, ["c"], pads=[1] * 4),
             helper.make_node("DequantizeLinear", ["c", "cs", "cz"], ["cf"]),
             helper.make_node("Relu", ["cf"], ["r"]),
             helper.make_node("Softmax", ["r"], ["p"], axis=1),
             helper.make_node("QuantizeLinear", ["p", "qs", "qz"], ["q"]),
             helper.make_node("Reshape", ["q", "rows"], ["q2"]),
             helper.make_node("QLinearMatMul", ["q2", "qs", "qz", "w2", "w2s", "w2z", "ys", "yz"], ["y"])]
    return _model(nodes, inits, ("x", I8, [1, 16, 8, 8]), ("y", I8, [64, 128]))


def sandwich(seed: int = 0) -> ModelProto:
    """QuantizeLinear -> QLinearMatMul -> DequantizeLinear: one product between two CPU ops."""
    inits = {"s": np.array(0.02, np.float32), "z": np.array(0, np.int8),
             "w": np.random.default_rng(seed).integers(-127, 128, (256, 256), dtype=np.int8),
             "ws": np.array(0.004, np.float32), "ys": np.array(0.3, np.float32), "yz": np.array(-2, np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("QLinearMatMul", ["q", "s", "z", "w", "ws", "z", "ys", "yz"], ["p"]),
             helper.make_node("DequantizeLinear", ["p", "ys", "yz"], ["y"])]
    return _model(nodes, inits, ("x", F32, [64, 256]), ("y", F32, [64, 256]))


class CountingDriver(SimulatorDriver):
    """The simulator's driver, counting the bytes copied each way."""

    def __init__(self) -> None:
        super().__init__()
        self.copied = {"in": 0, "out": 0}

    def copy_in(self, name: str, value: np.ndarray) -> None:
        self.copied["in"] += value.nbytes
        super().copy_in(name, value)

    def copy_out(self, name: str) -> np.ndarray:
        value = super().copy_out(name)
        self.copied["out"] += value.nbytes
        return value


def test_a_mixed_model_runs_placed_bit_exact_and_explain_shows_the_placement(capsys, tmp_path) -> None:
    model = mixed()
    x = RNG.integers(-128, 128, (1, 16, 8, 8)).astype(np.int8)
    module = tensoregg.compile(model, "accel")
    program = module.program
    placed = {n.op: devices for n, devices in zip(module.graph.nodes, program.placement.devices)}
    assert placed["QLinearConv"] == placed["QLinearMatMul"] == ("accel",)
    assert {placed[op] for op in ("DequantizeLinear", "Relu", "Softmax", "QuantizeLinear")} == {("cpu",)}
    assert [s.device for s in program.segments] == ["accel", "llvm", "accel"]
    program.driver = CountingDriver()
    (y,) = module.run(x)
    np.testing.assert_array_equal(y, tensoregg.compile(model, "ref").run(x)[0])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(y.astype(int) - session.run(None, {"x": x})[0]).max() <= 1  # softmax's last bit may differ
    moved = {(t.value, t.to): t.nbytes for t in program.transfers}
    assert moved == {("x", "accel"): 1024, ("c", "cpu"): 4096, ("q2", "accel"): 4096, ("y", "cpu"): 8192}
    assert program.driver.copied == {"in": 1024 + 4096, "out": 4096 + 8192}
    assert len(program.stats) == 2 and all(s.cycles > 0 for s in program.stats)
    report = program.report()
    assert "QLinearConv %c: accel (estimated on each device: cpu" in report and "simulated" in report
    assert "Softmax %p: cpu (llvm)" in report and "%q2 -> accel 4096 B" in report
    path = tmp_path / "mixed.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["explain", str(path), "-t", "accel"]) == 0
    text = capsys.readouterr().out
    assert "placement (ilp optimal" in text and "QLinearMatMul %y: accel" in text
    assert "instructions alu" in text and "Relu %r: cpu (llvm)" in text and "%c -> cpu 4096 B" in text


def test_raising_the_transfer_cost_moves_a_kernel_between_cpu_ops_to_the_cpu() -> None:
    model = sandwich()
    x = (RNG.standard_normal((64, 256)) * 2).astype(np.float32)
    expected = tensoregg.compile(model, "ref").run(x)[0]
    slow = replace(VTA, name="accel-slow-link", link_latency_s=2e-3)
    register_accel(slow, replace=True)
    for target, where in (("accel", ("accel",)), (slow.name, ("cpu",))):
        module = tensoregg.compile(model, target)
        placed = dict(zip((n.op for n in module.graph.nodes), module.program.placement.devices))
        assert placed == {"QuantizeLinear": ("cpu",), "QLinearMatMul": where, "DequantizeLinear": ("cpu",)}
        np.testing.assert_array_equal(module.run(x)[0], expected)


def test_a_value_moved_once_is_paid_once() -> None:
    """Two products read one quantized value: placement moves it once (DAG cost), and the run too."""
    model = sandwich()
    inputs = ["q", "s", "z", "w", "ws", "z", "ys", "yz"]
    model.graph.node.append(helper.make_node("QLinearMatMul", inputs, ["p2"]))
    model.graph.output.append(helper.make_tensor_value_info("p2", I8, [64, 256]))
    module = tensoregg.compile(model, "accel")
    program = module.program
    assert isinstance(program, MixedProgram)
    assert [t.value for t in program.placement.transfers if t.to == "accel"] == ["q"]
    x = (RNG.standard_normal((64, 256)) * 2).astype(np.float32)
    for got, want in zip(module.run(x), tensoregg.compile(model, "ref").run(x)):
        np.testing.assert_array_equal(got, want)
    assert [t.value for t in program.transfers if t.to == "accel"] == ["q"]


@pytest.mark.parametrize("latency", [20e-6, 2e-3])
def test_placement_is_the_cheapest(latency: float) -> None:
    """The extracted placement costs no more than putting every node the accelerator can run there,
    or none."""
    graph = to_graph(sandwich())
    config = replace(VTA, link_latency_s=latency)
    best = place(graph, config)
    matmul = 1  # QuantizeLinear, QLinearMatMul, DequantizeLinear
    cpu, accel = best.costs[matmul]["cpu"], best.costs[matmul]["accel"]
    moved = sum(config.transfer_seconds(graph.types[v].size * graph.types[v].dtype.itemsize)
                for v in ("q", "p"))
    others = best.costs[0]["cpu"] + best.costs[2]["cpu"]
    assert best.seconds == pytest.approx(others + min(cpu, accel + moved))
    assert best.devices[matmul] == (("accel",) if accel + moved < cpu else ("cpu",))


def test_a_node_placed_on_both_devices_runs_on_both() -> None:
    """Where computing a value twice is cheaper than moving it, a node runs on both devices: each
    side reads its own copy."""
    graph = to_graph(sandwich())
    placement = place(graph, VTA)
    placement.devices[1] = ("accel", "cpu")
    program = MixedProgram(graph, VTA, placement)
    assert [s.device for s in program.segments] == ["llvm", "accel", "llvm"]
    x = (RNG.standard_normal((64, 256)) * 2).astype(np.float32)
    np.testing.assert_array_equal(program.run({"x": x})[0], run_graph(graph, {"x": x})[0])
    assert [(t.value, t.to) for t in program.transfers] == [("q", "accel")] and len(program.stats) == 1


def test_a_product_the_accelerator_cannot_take_runs_on_the_cpu() -> None:
    """Per-row scales of A (QLinearMatMul allows them) the accelerator's requantization lacks: the
    node goes to the CPU rather than failing to lower; with no CPU beside, UnsupportedOperator."""
    inits = {"as": np.full(64, 0.02, np.float32), "z": np.array(0, np.int8),
             "w": np.random.default_rng(1).integers(-127, 128, (256, 256), dtype=np.int8),
             "ws": np.array(0.004, np.float32), "ys": np.array(0.3, np.float32)}
    node = helper.make_node("QLinearMatMul", ["a", "as", "z", "w", "ws", "z", "ys", "z"], ["y"])
    graph = to_graph(_model([node], inits, ("a", I8, [64, 256]), ("y", I8, [64, 256])))
    assert place(graph, VTA).devices == [("cpu",)]
    with pytest.raises(UnsupportedOperator, match=r"QLinearMatMul.*neither the accelerator"):
        place(graph, replace(VTA, cpu_targets=()))
