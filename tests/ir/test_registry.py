"""The operator registry itself: complete entries, and every op covered by its family's tests."""

import re
from pathlib import Path

import pytest

from tensoregg.ir import OPS, Attr
from tensoregg.ir.registry import ATTR_KINDS, parse_params

TESTS = Path(__file__).resolve().parent / "ops"


def test_required_ops_are_registered():
    required = """Conv ConvTranspose Gemm MatMul BatchNormalization Relu LeakyRelu PRelu Clip Sigmoid Tanh Erf
    Gelu HardSigmoid HardSwish Softplus Elu Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Reciprocal Sum Max Min
    Mean MaxPool AveragePool GlobalAveragePool GlobalMaxPool LRN Softmax LogSoftmax LayerNormalization
    InstanceNormalization ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL2 Reshape Flatten
    Transpose Concat Split Slice Gather Squeeze Unsqueeze Expand Tile Pad Resize Shape Constant
    ConstantOfShape Identity Dropout Cast Where Equal Less Greater Not And Or ArgMax TopK Range Einsum
    Attention RMSNormalization CastLike Mod Trilu ArgMin QuantizeLinear DequantizeLinear GatherElements
    GatherND ScatterElements ScatterND OneHot CumSum DepthToSpace SpaceToDepth""".split()
    missing = [op for op in required if ("", op) not in OPS]
    assert not missing, f"not registered: {missing}"


@pytest.mark.parametrize("key", sorted(OPS), ids=lambda k: k[1])
def test_entry_is_complete(key):
    opdef = OPS[key]
    assert opdef.doc, f"{opdef.name}: the reference function needs a one-line docstring"
    assert all(isinstance(a, Attr) and a.kind in ATTR_KINDS for a in opdef.attrs.values())
    assert all(0 <= i < len(opdef.inputs) or opdef.inputs[-1].variadic for i in opdef.static_inputs)
    assert all(0 <= i < len(opdef.inputs) for i in opdef.bounded_inputs)


@pytest.mark.parametrize("key", sorted(OPS), ids=lambda k: k[1])
def test_every_op_has_a_hand_check_and_a_random_check(key):
    """Each op's name appears in an ``expected=`` check and in a hypothesis-driven test."""
    name = key[1]
    sources = {p.name: p.read_text() for p in TESTS.glob("test_*.py")}
    quoted = re.compile(rf"[\"']{re.escape(name)}[\"']")
    files = [text for text in sources.values() if quoted.search(text)]
    assert files, f"{name} is not named in any tests/ir/ops/test_*.py"
    assert any("expected=" in t for t in files), f"{name}: no hand-computed check"
    assert any("@given" in t for t in files), f"{name}: no hypothesis check"


def test_param_spec_parsing():
    x, b, rest = parse_params("X B? Rest*")
    assert (x.optional, b.optional, rest.variadic) == (False, True, True)
    with pytest.raises(ValueError):
        parse_params("A* B")
