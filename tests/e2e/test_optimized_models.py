"""What the default rule families do to whole models (structure; the light zoo models' values are
checked against onnxruntime in test_models.py, with optimization on; timings live in
bench/optimize_models.py)."""

from collections import Counter

import tensoregg
from tensoregg.testing import light_model
from tensoregg.testing_models import encoder_layer

from .test_models import against_onnxruntime


def test_resnet50_folds_every_batchnorm_and_fuses_every_conv_epilogue():
    graph = tensoregg.compile(light_model("resnet50"), "ref").graph
    ops = Counter(n.op for n in graph.nodes)
    assert ops["BatchNormalization"] == 0 and ops["Relu"] == 0 and ops["Sum"] == 0
    fused = [n for n in graph.nodes if n.op == "FusedConv"]
    assert len(fused) == 49 and all(n.attrs["activation"] == "Relu" and n.inputs[2] for n in fused)
    assert sum(len(n.inputs) == 4 and bool(n.inputs[3]) for n in fused) == 16  # residual adds
    # the 4 downsampling shortcut Convs keep a plain bias epilogue: their output is a residual input
    residuals = {n.inputs[3] for n in fused if len(n.inputs) == 4}
    plain = [n for n in graph.nodes if n.op == "Conv"]
    assert len(plain) == 4 and all(n.inputs[2] and n.outputs[0] in residuals for n in plain)


def test_encoder_layer_merges_q_k_v_into_one_matmul():
    model = encoder_layer()
    graph = tensoregg.compile(model, "ref").graph
    (x,) = graph.inputs
    on_x = [n for n in graph.nodes if x in n.inputs[:1] and n.op in ("MatMul", "FusedMatMul", "Gemm")]
    assert len(on_x) == 1, [str(n) for n in on_x]
    (qkv,) = on_x
    assert graph.types[qkv.outputs[0]].shape[-1] == 3 * graph.types[x].shape[-1]
    assert [n.op for n in graph.nodes if qkv.outputs[0] in n.inputs] == ["Split"]
    against_onnxruntime(model)
