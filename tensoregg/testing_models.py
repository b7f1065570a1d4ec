"""Model builders for tests and benchmarks: ONNX models shaped like real exporters' output, with
seeded random weights (no framework needed to build them)."""

from __future__ import annotations

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
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [batch, seq, d_model]) for n in ("x", "y")]
    graph = helper.make_graph(b.nodes, "encoder_layer", io[:1], io[1:], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tensoregg.testing_models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
