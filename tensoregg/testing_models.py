"""Model builders for tests and benchmarks: ONNX models shaped like real exporters' output, with
seeded random weights (no framework needed to build them)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 17


class _Builder:
    """Collects nodes and initializers; every method returns the name of the value it defines."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def random(self, name: str, shape: tuple[int, ...], scale: float, mean: float = 0.0) -> str:
        return self.const(name, (mean + scale * self.rng.standard_normal(shape)).astype(np.float32))

    def node(self, op: str, inputs: Sequence[str], name: str, output: str = "", **attrs: Any) -> str:
        """A node called ``name`` whose output is ``output`` (default: its name)."""
        output = output or name
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attrs))
        return output

    def linear(self, prefix: str, value: str, n_in: int, n_out: int) -> str:
        """``nn.Linear`` on a 3-D input as PyTorch exports it: MatMul by the (folded) transposed
        weight, then Add(bias, product)."""
        weight = self.random(f"{prefix}.weight", (n_in, n_out), 1.0 / math.sqrt(n_in))
        bias = self.random(f"{prefix}.bias", (n_out,), 0.1)
        product = self.node("MatMul", [value, weight], f"/{prefix}/MatMul")
        return self.node("Add", [bias, product], f"/{prefix}/Add")

    def layer_norm(self, prefix: str, value: str, width: int, output: str = "") -> str:
        scale = self.random(f"{prefix}.weight", (width,), 0.1, mean=1.0)
        bias = self.random(f"{prefix}.bias", (width,), 0.1)
        return self.node("LayerNormalization", [value, scale, bias], f"/{prefix}/LayerNormalization",
                         output, axis=-1, epsilon=1e-5)


def encoder_layer(seq: int = 16, d_model: int = 64, heads: int = 4, ffn: int = 128, seed: int = 0,
                  batch: int = 1) -> onnx.ModelProto:
    """A transformer encoder layer (opset 17, float32) laid out as ``torch.onnx.export`` emits
    ``nn.TransformerEncoderLayer(d_model, heads, ffn, batch_first=True)`` in eval mode (post-norm,
    ReLU, dropout gone): input ``x`` and output ``y`` of shape [batch, seq, d_model].

    Linear layers on 3-D inputs are MatMul by the transposed weight (folded into an initializer)
    plus Add(bias, .); heads are Reshape to [batch, seq, heads, d_head] and Transpose; scores are
    Q K^T scaled by 1/sqrt(d_head) (one Mul), Softmax on the last axis, times V, transposed and
    reshaped back, then the output projection, residual Add, LayerNormalization, the ReLU FFN,
    residual Add and LayerNormalization. One deliberate difference: PyTorch's
    ``nn.MultiheadAttention`` packs Q/K/V into one ``in_proj_weight``, so its export has a single
    [d_model, 3 d_model] MatMul; here Q, K and V are three MatMul+Add projections, as models with
    separate q/k/v ``nn.Linear`` layers (BERT-style) export them, which is what the ``parallel``
    rules merge. Written without torch (not a dependency): the structure is transcribed, not traced.
    """
    if d_model % heads:
        raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
    d_head = d_model // heads
    b = _Builder(seed)
    split_heads = b.const("split_heads_shape", np.array([batch, seq, heads, d_head], np.int64))
    merge_heads = b.const("merge_heads_shape", np.array([batch, seq, d_model], np.int64))
    scale = b.const("attn_scale", np.array(1.0 / math.sqrt(d_head), np.float32))

    def project(name: str, perm: list[int]) -> str:
        flat = b.linear(f"self_attn.{name}_proj", "x", d_model, d_model)
        shaped = b.node("Reshape", [flat, split_heads], f"/self_attn/{name}/Reshape")
        return b.node("Transpose", [shaped], f"/self_attn/{name}/Transpose", perm=perm)

    q = project("q", [0, 2, 1, 3])
    k_t = project("k", [0, 2, 3, 1])
    v = project("v", [0, 2, 1, 3])
    scores = b.node("Mul", [b.node("MatMul", [q, k_t], "/self_attn/MatMul"), scale], "/self_attn/Mul")
    probs = b.node("Softmax", [scores], "/self_attn/Softmax", axis=-1)
    context = b.node("MatMul", [probs, v], "/self_attn/MatMul_1")
    context = b.node("Transpose", [context], "/self_attn/Transpose", perm=[0, 2, 1, 3])
    context = b.node("Reshape", [context, merge_heads], "/self_attn/Reshape")
    attended = b.linear("self_attn.out_proj", context, d_model, d_model)
    hidden = b.layer_norm("norm1", b.node("Add", ["x", attended], "/Add"), d_model)
    inner = b.node("Relu", [b.linear("linear1", hidden, d_model, ffn)], "/Relu")
    out = b.linear("linear2", inner, ffn, d_model)
    b.layer_norm("norm2", b.node("Add", [hidden, out], "/Add_1"), d_model, output="y")
    shape = [batch, seq, d_model]
    return _finish(b, "encoder_layer", [_float("x", shape)], [_float("y", shape)])


def _finish(b: _Builder, name: str, inputs: list[onnx.ValueInfoProto],
            outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    graph = helper.make_graph(b.nodes, name, inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tensoregg.testing_models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _float(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape))


def _gemm(b: _Builder, prefix: str, value: str, n_in: int, n_out: int, output: str = "") -> str:
    """``nn.Linear`` on a 2-D input as PyTorch exports it: Gemm with the [out, in] weight, transB=1."""
    weight = b.random(f"{prefix}.weight", (n_out, n_in), 1.0 / math.sqrt(n_in))
    bias = b.random(f"{prefix}.bias", (n_out,), 0.1)
    return b.node("Gemm", [value, weight, bias], f"/{prefix}/Gemm", output, alpha=1.0, beta=1.0, transB=1)


def mlp(batch: int = 64, sizes: Sequence[int] = (784, 512, 512, 10), seed: int = 0) -> onnx.ModelProto:
    """A multilayer perceptron (opset 17, float32) as ``torch.onnx.export`` emits
    ``nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)``: each Linear a Gemm (transB=1) with a
    bias, ReLU between them; input ``x`` [batch, sizes[0]], output ``y`` [batch, sizes[-1]]."""
    b = _Builder(seed)
    value = "x"
    layers = list(itertools.pairwise(sizes))
    for k, (n_in, n_out) in enumerate(layers):
        last = k == len(layers) - 1
        value = _gemm(b, f"layers.{2 * k}", value, n_in, n_out, output="y" if last else "")
        if not last:
            value = b.node("Relu", [value], f"/layers.{2 * k + 1}/Relu")
    return _finish(b, "mlp", [_float("x", [batch, sizes[0]])], [_float("y", [batch, sizes[-1]])])


def _conv_bn(b: _Builder, prefix: str, bn: str, value: str, c_in: int, c_out: int, kernel: int,
             stride: int = 1) -> str:
    """Conv (no bias, He-scaled weight, 'same' padding) then BatchNormalization in eval mode with
    running statistics that are not the identity."""
    weight = b.random(f"{prefix}.weight", (c_out, c_in, kernel, kernel), math.sqrt(2.0 / (c_in * kernel**2)))
    pad = kernel // 2
    conv = b.node("Conv", [value, weight], f"/{prefix}/Conv", kernel_shape=[kernel, kernel],
                  strides=[stride, stride], pads=[pad] * 4, dilations=[1, 1], group=1)
    gamma = b.random(f"{bn}.weight", (c_out,), 0.1, mean=1.0)
    beta = b.random(f"{bn}.bias", (c_out,), 0.1)
    mean = b.random(f"{bn}.running_mean", (c_out,), 0.1)
    var = b.const(f"{bn}.running_var", b.rng.uniform(0.5, 2.0, c_out).astype(np.float32))
    return b.node("BatchNormalization", [conv, gamma, beta, mean, var], f"/{bn}/BatchNormalization",
                  epsilon=1e-5, momentum=0.9)


def _basic_block(b: _Builder, prefix: str, value: str, c_in: int, c_out: int, stride: int) -> str:
    """torchvision's ``BasicBlock``: conv3x3-BN-ReLU-conv3x3-BN, plus the identity or (when the
    shape changes) a 1x1 strided conv + BN downsample, Add, ReLU."""
    hidden = _conv_bn(b, f"{prefix}.conv1", f"{prefix}.bn1", value, c_in, c_out, 3, stride)
    hidden = b.node("Relu", [hidden], f"/{prefix}/relu/Relu")
    hidden = _conv_bn(b, f"{prefix}.conv2", f"{prefix}.bn2", hidden, c_out, c_out, 3)
    if stride != 1 or c_in != c_out:
        value = _conv_bn(b, f"{prefix}.downsample.0", f"{prefix}.downsample.1", value, c_in, c_out, 1, stride)
    added = b.node("Add", [hidden, value], f"/{prefix}/Add")
    return b.node("Relu", [added], f"/{prefix}/relu_1/Relu")


def small_resnet(widths: Sequence[int] = (64, 128, 256, 512), blocks: int = 1, classes: int = 1000,
                 batch: int = 1, size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """A ResNet-18-style network (opset 17, float32) in torchvision's layout and ``torch.onnx``'s
    naming: conv7x7/2 + BN + ReLU + maxpool3x3/2, then ``blocks`` BasicBlocks per stage of
    ``widths`` (the first stage at stride 1, the others opening with a stride-2 block and a 1x1
    downsample conv), GlobalAveragePool, Flatten, Gemm. ResNet-18 is ``blocks=2``; the default has
    one block per stage (about 1.8 GFLOP at 224x224). Input ``x`` [batch, 3, size, size], output
    ``y`` [batch, classes].

    BatchNormalization stays a node of its own (as ``torch.onnx.export(...,
    training=TrainingMode.PRESERVE)`` or other exporters leave it; PyTorch's default eval export
    would fold it into the convs), with seeded running means and variances that are not 0 and 1.
    """
    b = _Builder(seed)
    value = _conv_bn(b, "conv1", "bn1", "x", 3, widths[0], 7, stride=2)
    value = b.node("Relu", [value], "/relu/Relu")
    value = b.node("MaxPool", [value], "/maxpool/MaxPool", kernel_shape=[3, 3], strides=[2, 2],
                   pads=[1, 1, 1, 1], ceil_mode=0, dilations=[1, 1])
    c_in = widths[0]
    for stage, width in enumerate(widths, start=1):
        for k in range(blocks):
            stride = 2 if stage > 1 and k == 0 else 1
            value = _basic_block(b, f"layer{stage}.{k}", value, c_in, width, stride)
            c_in = width
    value = b.node("GlobalAveragePool", [value], "/avgpool/GlobalAveragePool")
    value = b.node("Flatten", [value], "/Flatten", axis=1)
    _gemm(b, "fc", value, c_in, classes, output="y")
    return _finish(b, "small_resnet", [_float("x", [batch, 3, size, size])], [_float("y", [batch, classes])])


def symbolic_batch(model: onnx.ModelProto | str, name: str = "N") -> onnx.ModelProto:
    """A copy of ``model`` (or the model at that path) whose inputs' and outputs' dimension 0 is the
    symbolic ``name``, so that it compiles for any batch (``input_shapes``), e.g. for serving batches."""
    copy = onnx.ModelProto()
    copy.CopyFrom(onnx.load(model) if isinstance(model, str) else model)
    weights = {t.name for t in copy.graph.initializer}
    for value in [*copy.graph.input, *copy.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and value.name not in weights:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = name
    return copy
