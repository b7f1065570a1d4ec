"""ResNet-18 and MobileNetV2 (tensoregg.testing.torch_models, seeded random weights) quantized by
tensoregg.quantize and compiled with the quantization rules: every Conv becomes a QLinearConv, llvm
agrees with the reference interpreter's int8 semantics, each QLinearConv run on the accelerator's
simulator equals the reference's output bit for bit, the whole model compiled for accel (integer
kernels placed on the accelerator, the rest on the CPU) agrees with the reference, and top-1 agrees
with the float model."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest

import tensoregg
from tensoregg.ir import Graph, run_graph
from tensoregg.ir.target import RULE_FAMILIES

SIZE = 64
"""Input side: 64x64 keeps the reference interpreter's int8 convolutions to seconds."""
FAMILIES = ("quantization", *RULE_FAMILIES)
INTEGER_KERNELS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def exported(name: str) -> onnx.ModelProto:
    """The torchvision model as ONNX (torch.onnx's TorchScript exporter, batch norms folded)."""
    torch = pytest.importorskip("torch")
    from tensoregg.testing.torch_models import MODELS

    module, _ = MODELS[name]()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(1, 3, SIZE, SIZE),), buffer, dynamo=False, opset_version=17)
    return onnx.load_from_string(buffer.getvalue())


def feeds(model: onnx.ModelProto, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    name = model.graph.input[0].name
    return [{name: rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)} for _ in range(n)]


def values(graph: Graph, names: list[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``names``' values when ``graph`` runs on ``feed`` in the reference interpreter."""
    return dict(zip(names, run_graph(Graph(graph.inputs, graph.initializers, graph.nodes, names), feed)))


def accel_matches_reference(graph: Graph, feed: dict[str, np.ndarray]) -> tuple[int, int, float]:
    """Each integer kernel of ``graph`` compiled alone for accel and run on its reference input:
    (kernels, simulated cycles, MACs / (peak MACs x cycles)); asserts bit-exact outputs."""
    kernels = [n for n in graph.nodes if n.op in INTEGER_KERNELS]
    seen = values(graph, [n for k in kernels for n in (k.inputs[0], k.outputs[0])], feed)
    cycles = macs = peak = 0
    for k in kernels:
        x = k.inputs[0]
        alone = Graph({x: graph.types[x]}, {n: graph.initializers[n] for n in k.inputs[1:] if n}, [k],
                      [k.outputs[0]])
        module = tensoregg.compile(alone, "accel", optimize=False)
        np.testing.assert_array_equal(module.run(seen[x])[0], seen[k.outputs[0]], err_msg=k.label)
        for stats in module.program.stats:
            cycles, macs = cycles + stats.cycles, macs + stats.macs
            peak += stats.macs_per_cycle * stats.cycles
    return len(kernels), cycles, macs / peak


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_quantized_model(name: str) -> None:
    model = exported(name)
    quantized = tensoregg.quantize(model, feeds(model, 4, seed=0))
    reference = tensoregg.compile(quantized, "ref", rule_families=FAMILIES)
    ops = [n.op for n in reference.graph.nodes]
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert ops.count("QLinearConv") == convs and "Conv" not in ops
    native = tensoregg.compile(quantized, "llvm", rule_families=FAMILIES)
    float_model = tensoregg.compile(model, "llvm")
    tests = feeds(model, 20, seed=1)
    agree, worst, classes, error = 0, 0.0, set(), 0.0
    for feed in tests:
        (want,), (got,), (exact,) = float_model.run(**feed), native.run(**feed), reference.run(**feed)
        worst = max(worst, float(np.abs(got - exact).max()))
        agree += int(np.argmax(got) == np.argmax(want))
        classes.add(int(np.argmax(want)))
        error = max(error, float(np.linalg.norm(got - want) / np.linalg.norm(want)))
    n_kernels, cycles, utilization = accel_matches_reference(reference.graph, tests[0])
    whole = tensoregg.compile(quantized, "accel")  # integer kernels placed on accel, the rest on the CPU
    (mixed,), (exact,) = whole.run(**tests[0]), reference.run(**tests[0])
    np.testing.assert_allclose(mixed, exact, rtol=0, atol=1e-4)
    on_accel = len(whole.program.stats)
    left = sorted({op for op in ops if op not in INTEGER_KERNELS})
    print(f"\n{name} {SIZE}x{SIZE}: top-1 agreement with float {agree}/{len(tests)} (the float "
          f"model's top-1 takes {len(classes)} classes), logits' relative L2 error at most {error:.3f}; "
          f"llvm vs ref max |diff| {worst:.2e}; {n_kernels} integer kernels bit-exact on accel, "
          f"{cycles} cycles, utilization {utilization:.2f}; the whole model on accel: {on_accel} kernels "
          f"placed on the accelerator, the rest on the CPU; float ops: {', '.join(left)}")
    assert worst <= 1e-4 and agree >= len(tests) // 2
