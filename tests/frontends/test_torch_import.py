"""PyTorch frontend: torch.export's core ATen graph -> IR, checked against torch eager."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensoregg  # noqa: E402
from tensoregg.errors import InvalidModel, ParameterError, ShapeError, UnsupportedOperator  # noqa: E402
from tensoregg.frontends import aten  # noqa: E402
from tensoregg.frontends.torch import import_torch  # noqa: E402
from tensoregg.ir import run_graph  # noqa: E402

nn = torch.nn
F = torch.nn.functional


class Fn(nn.Module):
    """A function as a module (its parameters, if any, in ``inner``)."""

    def __init__(self, fn, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.fn, self.inner = fn, inner or nn.Identity()

    def forward(self, x, *rest):
        return self.fn(self.inner, x, *rest)


def _seq(*layers):
    return Fn(lambda m, x: m(x), nn.Sequential(*layers))


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)))


class FusedKernels(nn.Module):
    """nn.TransformerEncoderLayer's and nn.MultiheadAttention's fused inference kernels, called as their
    fast paths call them in eval mode under no_grad (torch.export traces the slow path instead)."""

    def __init__(self) -> None:
        super().__init__()
        self.post = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
        self.pre = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=True,
                                              activation="gelu")

    def forward(self, x):
        out = [torch._transformer_encoder_layer_fwd(
            x, 8, 2, m.self_attn.in_proj_weight, m.self_attn.in_proj_bias, m.self_attn.out_proj.weight,
            m.self_attn.out_proj.bias, m is self.pre, m.norm_first, m.norm1.eps, m.norm1.weight, m.norm1.bias,
            m.norm2.weight, m.norm2.bias, m.linear1.weight, m.linear1.bias, m.linear2.weight, m.linear2.bias)
            for m in (self.post, self.pre)]
        a = self.post.self_attn
        attended, _ = torch._native_multi_head_attention(
            x, x, x, 8, 2, a.in_proj_weight, a.in_proj_bias, a.out_proj.weight, a.out_proj.bias,
            need_weights=False)
        return out[0] + out[1] + attended


CASES = {
    "conv-bn-relu-pool": (_seq(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), nn.BatchNorm2d(8),
                               nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(1)),
                          (_x(2, 4, 12, 12),)),
    "conv-dilated-nobias-avgpool": (_seq(nn.Conv2d(3, 4, 3, dilation=2, bias=False), nn.AvgPool2d(2),
                                         nn.AdaptiveAvgPool2d(2)), (_x(1, 3, 12, 12),)),
    "linear-gelu-layernorm": (_seq(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4)),
                              (_x(3, 8),)),
    "elementwise": (Fn(lambda m, x: F.hardswish(x) + F.hardsigmoid(x) + F.leaky_relu(x, 0.2) + x.sigmoid()
                       + x.tanh() + F.relu6(x) + x.clamp(min=0) + x.abs().sqrt() + (x.abs() + 1).rsqrt()
                       + ((x * 2 - 1) / 3 + 0.5) ** 2 - x.neg().exp()), (_x(4, 5),)),
    "compare-where": (Fn(lambda m, x, y: torch.where((x > y) & (x != 0), x, y) + (x <= y).float()
                         + ((x > 0) | ~(y < 0)).to(torch.float32)), (_x(3, 4), _x(1, 4))),
    "reductions-made-tensors": (Fn(lambda m, x: (x > 0).sum(-1, keepdim=True) + F.layer_norm(x, (5,))
                                   + x.softmax(-1) + x.log_softmax(1) + x.mean(1, keepdim=True)
                                   + x.sum(-1, keepdim=True) + x.amax(-1, keepdim=True)
                                   + torch.full((3, 5), 1.5) + torch.zeros_like(x) + torch.arange(5)),
                                (_x(2, 3, 5),)),
    "shapes": (Fn(lambda m, x: torch.cat([x.permute(0, 2, 1)[:, 1:3],
                                          x.transpose(1, 2)[:, :1].expand(2, 3, 4),
                                          x.reshape(2, 3, 4).unsqueeze(1).squeeze(1)[:, 0].unsqueeze(1),
                                          F.pad(x[:, 1:2, :2], (1, 1)),
                                          torch.split(x.transpose(1, 2), [2, 1], 1)[0]], 1)),
               (_x(2, 4, 3),)),
    "fused-attention-kernels": (FusedKernels(), (_x(2, 5, 8),)),
    "conv-transpose-groupnorm-upsample": (
        Fn(lambda m, x: m[0](x) + F.interpolate(m[1](x), scale_factor=2)
           + F.interpolate(x, scale_factor=2, mode="bilinear")
           + F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=True),
           nn.Sequential(nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1),
                         nn.GroupNorm(2, 4))),
        (_x(2, 4, 6, 6),)),
    "more-math": (Fn(lambda m, x, i: (x.argmax(1, keepdim=True) + x.argmin() + x.max(1, keepdim=True).indices
                                      + x.min(-1, keepdim=True)[1] + torch.remainder(i, 3)
                                      + torch.gather(i, 1, i % 4)).float().sum(-1)
                     + x.max(2).values + x.cumsum(2).sum(-1) + x.flip(2, 0).sum(-1)
                     + x.var(1, keepdim=True).sum(-1) + x.std(2) + x.prod(2) + torch.tril(x).sum(-1)
                     + (x.abs().log1p() + x.expm1() + x.sign() + (x * 3).round() + x.isnan().float()
                        + x.isinf().float() + torch.fmod(x, 0.7) + torch.remainder(x, 0.7)
                        + torch.pow(2.0, x)).sum(-1) + x.repeat(1, 2, 1)[:, 2:6].sum(-1)),
                  (_x(2, 4, 5), torch.randint(0, 4, (2, 4, 5), generator=torch.Generator().manual_seed(0)))),
    "embedding-int": (Fn(lambda m, i: m(i) * (i.to(torch.int32) + 1).unsqueeze(-1) + (i >= 1.5).unsqueeze(-1)
                         + (i.to(torch.int32) < i).unsqueeze(-1), nn.Embedding(10, 3)),
                      (torch.tensor([[1, 2, 9], [0, 0, 4]]),)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_matches_eager(name):
    module, inputs = CASES[name]
    module.eval()
    graph = import_torch(module, inputs)
    (got,) = run_graph(graph, {n: x.numpy() for n, x in zip(graph.inputs, inputs)})
    with torch.no_grad():
        want = module(*inputs).numpy()
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_state_dict_names_are_initializer_names():
    module = _seq(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    graph = import_torch(module, (_x(1, 3, 8, 8),))
    assert list(graph.inputs) == ["x"]
    names = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
    assert names == set(graph.initializers)
    weight = module.inner[0].weight.detach().numpy()
    np.testing.assert_array_equal(graph.initializers["inner.0.weight"], weight)


def test_linear_on_a_permuted_batch_broadcasts_its_weight():
    # F.linear on non-contiguous 3-d input decomposes to expand(weight, [B, K, N]) + bmm
    module, x = Fn(lambda m, x: m(x.transpose(0, 1)), nn.Linear(6, 5)).eval(), _x(3, 4, 6)
    graph = import_torch(module, (x,))
    assert "Expand" not in [n.op for n in graph.nodes]
    assert max(v.size for v in graph.initializers.values()) == 30
    (got,) = run_graph(graph, {"x": x.numpy()})
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_compile_runs_a_module_natively():
    module = _seq(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = _x(3, 8)
    compiled = tensoregg.compile(module, "llvm", example_inputs=(x,))
    assert compiled.input_names == ["x"]
    (got,) = compiled.run(x.numpy())
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-5, atol=1e-5)


class ReluPlusOne(nn.Module):
    def forward(self, x):
        return torch.relu(x + 1)  # the line the error names


def test_unsupported_op_names_it_and_its_source_line(monkeypatch):
    monkeypatch.delitem(aten.ATEN, "aten.relu.default")
    with pytest.raises(UnsupportedOperator, match=r"'aten\.relu\.default'.*test_torch_import\.py:\d+ in "
                                                  r"forward: return torch\.relu\(x \+ 1\)"):
        import_torch(ReluPlusOne(), (_x(2, 2),))


def test_exported_program_compiles_and_symbolic_dims_are_refused():
    module, x = _seq(nn.Linear(4, 3)).eval(), _x(2, 4)
    (got,) = tensoregg.compile(torch.export.export(module, (x,)), "ref").run(x.numpy())
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-6)
    dynamic = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    with pytest.raises(ShapeError, match="input 'x' has symbolic dims"):
        import_torch(dynamic)


def test_training_mode_and_bad_arguments_are_refused():
    module = _seq(nn.BatchNorm1d(3))
    with pytest.raises(UnsupportedOperator, match="eval"):
        import_torch(module.train(), (_x(4, 3),))
    with pytest.raises(InvalidModel, match="example_inputs"):
        tensoregg.compile(module.eval(), "ref")
    with pytest.raises(ParameterError, match="input_shapes"):
        tensoregg.compile(module, "ref", example_inputs=(_x(4, 3),), input_shapes={"x": [4, 3]})
    with pytest.raises(ParameterError, match="example_inputs"):
        tensoregg.compile("model.onnx", "ref", example_inputs=(_x(4, 3),))
