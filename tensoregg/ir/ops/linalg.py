"""Linear algebra: MatMul (numpy semantics), Gemm, the quantized MatMulInteger and QLinearMatMul,
Einsum and Det."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tensoregg.errors import UnsupportedOperator
from tensoregg.ir.registry import Attr, InferCtx, Upgrade, op
from tensoregg.ir.shapes import broadcast_shapes, given, same_dtype
from tensoregg.ir.types import TensorType

Shape = tuple[int, ...]


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name.startswith(("bfloat", "float"))


def _wide(x: np.ndarray) -> np.ndarray:
    """Floats narrower than float32 (float16, bfloat16) computed in float32."""
    return x.astype(np.float32) if _is_float(x.dtype) and x.dtype.itemsize < 4 else x


# ---- MatMul and its quantized forms -----------------------------------------------------------

def _matmul_shape(ctx: InferCtx, a: Shape, b: Shape) -> Shape:
    """numpy.matmul's result shape: 1-D operands are promoted to matrices, batch dims broadcast."""
    if not a or not b:
        ctx.fail(f"matmul operands must be at least 1-D, got shapes {list(a)} and {list(b)}")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        ctx.fail(f"inner dimensions differ: {list(a)} @ {list(b)}")
    rows = (a2[-2],) if len(a) > 1 else ()
    cols = (b2[-1],) if len(b) > 1 else ()
    return broadcast_shapes(ctx, [a2[:-2], b2[:-2]]) + rows + cols


def _matmul_rule(ctx: InferCtx) -> TensorType:
    dtype = same_dtype(ctx, given(ctx))
    return TensorType(dtype, _matmul_shape(ctx, ctx.shape(0), ctx.shape(1)))


@op("MatMul", "A B", "Y", shape=_matmul_rule)
def matmul(attrs, a, b):
    """numpy.matmul(A, B)."""
    return np.asarray(np.matmul(_wide(a), _wide(b))).astype(a.dtype)


def _quantized(ctx: InferCtx, i: int) -> np.dtype:
    """Input ``i``'s dtype, which must be int8 or uint8 (float8 forms are not supported)."""
    dtype = ctx.dtype(i)
    if dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
        return dtype
    if _is_float(dtype) and dtype.itemsize == 1:
        raise UnsupportedOperator(ctx.op, node=ctx.node, detail=f"float8 input {i} ({dtype})")
    ctx.fail(f"input {i} must be int8 or uint8, got {ctx.type(i)}")


def _check_quant_param(ctx: InferCtx, i: int, of: int, per_row: bool, dtype: np.dtype | None = None) -> None:
    """Input ``i`` (a zero point or scale of input ``of``) is per tensor, or per row (per column if not
    ``per_row``) as a vector or in ``of``'s rank with the contracted axis of size 1."""
    shape, data = ctx.shape(i), ctx.shape(of)
    if dtype is not None and ctx.dtype(i) != dtype:
        ctx.fail(f"input {i} must have dtype {dtype}, like input {of}, got {ctx.type(i)}")
    if int(np.prod(shape)) == 1:
        return
    if len(data) == 1:
        ctx.fail(f"input {i} must have one element: input {of} is a vector")
    line = data[-2] if per_row else data[-1]
    expected = (*data[:-1], 1) if per_row else (*data[:-2], 1, data[-1])
    if shape != (line,) and shape != expected:
        ctx.fail(f"input {i} of shape {list(shape)} is neither a scalar, [{line}] nor {list(expected)}")


def _lined_up(param: np.ndarray, x: np.ndarray, per_row: bool) -> np.ndarray:
    """A per-tensor, per-row (of a left operand) or per-column (of a right one) parameter broadcast to
    ``x``'s shape with the contracted axis of size 1, so it broadcasts against ``x`` and matmuls
    with its partner into the product's shape."""
    if x.ndim == 1:
        return param.reshape(1)
    if per_row:
        return np.broadcast_to(param.reshape(-1, 1) if param.ndim == 1 else param, (*x.shape[:-1], 1))
    return np.broadcast_to(param, (*x.shape[:-2], 1, x.shape[-1]))


def _centered(x: np.ndarray, zero_point: np.ndarray | None, per_row: bool) -> np.ndarray:
    """x - zero_point in int32."""
    if zero_point is None:
        return x.astype(np.int32)
    return x.astype(np.int32) - _lined_up(zero_point, x, per_row).astype(np.int32)


def _matmul_integer_shape(ctx: InferCtx) -> TensorType:
    for i, per_row in ((0, True), (1, False)):
        dtype = _quantized(ctx, i)
        if ctx.has(i + 2):
            _check_quant_param(ctx, i + 2, i, per_row, dtype)
    return TensorType(np.dtype(np.int32), _matmul_shape(ctx, ctx.shape(0), ctx.shape(1)))


@op("MatMulInteger", "A B a_zero_point? b_zero_point?", "Y", shape=_matmul_integer_shape)
def matmul_integer(attrs, a, b, a_zero_point=None, b_zero_point=None):
    """(A - a_zero_point) @ (B - b_zero_point) in int32; zero points per tensor, per row of A or per
    column of B."""
    return np.matmul(_centered(a, a_zero_point, True), _centered(b, b_zero_point, False))


def _qlinear_matmul_shape(ctx: InferCtx) -> TensorType:
    scales = {ctx.dtype(i) for i in (1, 4, 6)}
    if len(scales) != 1 or not _is_float(scales.pop()):
        ctx.fail("a_scale, b_scale and y_scale must share one float dtype")
    for data, per_row in ((0, True), (3, False)):
        dtype = _quantized(ctx, data)
        _check_quant_param(ctx, data + 1, data, per_row)
        _check_quant_param(ctx, data + 2, data, per_row, dtype)
    out = _matmul_shape(ctx, ctx.shape(0), ctx.shape(3))
    _quantized(ctx, 7)
    if int(np.prod(ctx.shape(6))) != 1 or int(np.prod(ctx.shape(7))) != 1:
        ctx.fail("y_scale and y_zero_point must be per tensor (one element)")
    return TensorType(ctx.dtype(7), out)


@op("QLinearMatMul", "a a_scale a_zero_point b b_scale b_zero_point y_scale y_zero_point", "y",
    shape=_qlinear_matmul_shape)
def qlinear_matmul(attrs, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    """saturate(round_half_even((a - a_zp) @ (b - b_zp) * a_scale * b_scale / y_scale) + y_zp), the
    product converted to float32 and multiplied in float32 as onnxruntime does; the scales and zero
    points of a per tensor or per row, of b per tensor or per column."""
    product = np.matmul(_centered(a, a_zero_point, True), _centered(b, b_zero_point, False))
    scale = np.matmul(_lined_up(a_scale, a, True), _lined_up(b_scale, b, False)) / y_scale.reshape(())
    info = np.iinfo(y_zero_point.dtype)
    y = np.rint(product.astype(np.float32) * scale.astype(np.float32))
    y = y + y_zero_point.reshape(()).astype(np.float32)
    return np.clip(y, info.min, info.max).astype(y_zero_point.dtype)


# ---- Gemm -------------------------------------------------------------------------------------

def _gemm_shape(ctx: InferCtx) -> TensorType:
    dtype = same_dtype(ctx, given(ctx))
    a, b = ctx.shape(0), ctx.shape(1)
    if len(a) != 2 or len(b) != 2:
        ctx.fail(f"A and B must be 2-D, got shapes {list(a)} and {list(b)}")
    (m, ka), (kb, n) = a[::-1] if ctx.attrs["transA"] else a, b[::-1] if ctx.attrs["transB"] else b
    if ka != kb:
        ctx.fail(f"inner dimensions differ: A' is {[m, ka]}, B' is {[kb, n]}")
    if ctx.has(2) and broadcast_shapes(ctx, [ctx.shape(2), (m, n)]) != (m, n):
        ctx.fail(f"C of shape {list(ctx.shape(2))} does not broadcast to {[m, n]}")
    return TensorType(dtype, (m, n))


def _gemm_adapt(up: Upgrade) -> None:
    up.attrs.pop("broadcast", None)  # C broadcasts unidirectionally since opset 7; a same-shape C still fits


@op("Gemm", "A B C?", "Y", shape=_gemm_shape, adapt=_gemm_adapt,
    attrs={"alpha": Attr("float", 1.0), "beta": Attr("float", 1.0), "transA": Attr("int", 0),
           "transB": Attr("int", 0)})
def gemm(attrs, a, b, c=None):
    """alpha * A' @ B' + beta * C, where A' and B' are A and B transposed if transA / transB."""
    y = np.matmul(_wide(a.T if attrs["transA"] else a), _wide(b.T if attrs["transB"] else b))
    if attrs["alpha"] != 1.0:
        y = y * attrs["alpha"]
    if c is not None and attrs["beta"] != 0.0:
        y = y + (_wide(c) if attrs["beta"] == 1.0 else _wide(c) * attrs["beta"])
    return y.astype(a.dtype)


# ---- Einsum -----------------------------------------------------------------------------------

def _einsum_term(ctx: InferCtx, term: str, shape: Shape) -> tuple[str, Shape, Shape]:
    """A term's labels, their sizes and the sizes its ellipsis stands for."""
    before, ellipsis, after = term.partition("...")
    labels = before + after
    if not all(ch.isalpha() for ch in labels):
        ctx.fail(f"bad einsum term {term!r}: labels are letters, with at most one '...'")
    n_ellipsis = len(shape) - len(labels)
    if n_ellipsis < 0 or (n_ellipsis and not ellipsis):
        ctx.fail(f"einsum term {term!r} does not fit an operand of shape {list(shape)}")
    end = len(before) + n_ellipsis
    return labels, shape[:len(before)] + shape[end:], shape[len(before):end]


def _einsum_output(ctx: InferCtx, equation: str, shapes: Sequence[Shape]) -> Shape:
    """The result shape of ``equation`` (spaces removed) on operands of ``shapes``."""
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        ctx.fail(f"equation {equation!r} has {len(terms)} operands, node has {len(shapes)} inputs")
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    ellipses = []
    for term, shape in zip(terms, shapes):
        labels, dims, ellipsis = _einsum_term(ctx, term, shape)
        ellipses.append(ellipsis)
        for ch, d in zip(labels, dims):
            counts[ch] = counts.get(ch, 0) + 1
            if sizes.get(ch, 1) not in (1, d) and d != 1:
                ctx.fail(f"label {ch!r} has sizes {sizes[ch]} and {d} in {equation!r}")
            sizes[ch] = max(sizes.get(ch, 1), d)
    batch = broadcast_shapes(ctx, ellipses)
    if not arrow:
        return batch + tuple(sizes[ch] for ch in sorted(counts) if counts[ch] == 1)
    before, dots, after = output.partition("...")
    if any(ch not in sizes for ch in before + after) or len(set(before + after)) != len(before + after):
        ctx.fail(f"output of {equation!r} must use distinct labels of the inputs")
    if batch and not dots:
        ctx.fail(f"output of {equation!r} needs '...' for the dimensions the inputs' '...' stand for")
    return tuple(sizes[ch] for ch in before) + (batch if dots else ()) + tuple(sizes[ch] for ch in after)


def _einsum_shape(ctx: InferCtx) -> TensorType:
    types = given(ctx)
    dtype = same_dtype(ctx, types)
    equation = ctx.attrs["equation"].replace(" ", "")
    return TensorType(dtype, _einsum_output(ctx, equation, [t.shape for t in types]))


@op("Einsum", "Inputs*", "Output", shape=_einsum_shape, attrs={"equation": Attr("string")})
def einsum(attrs, *inputs):
    """numpy.einsum(equation, *Inputs)."""
    equation = attrs["equation"].replace(" ", "")
    return np.asarray(np.einsum(equation, *[_wide(x) for x in inputs], optimize=True)).astype(inputs[0].dtype)


# ---- Det --------------------------------------------------------------------------------------

def _det_shape(ctx: InferCtx) -> TensorType:
    x = ctx.type(0)
    if not _is_float(x.dtype):
        ctx.fail(f"X must be a float tensor, got {x}")
    if x.rank < 2 or x.shape[-1] != x.shape[-2]:
        ctx.fail(f"X must be a batch of square matrices [*, M, M], got {x}")
    return TensorType(x.dtype, x.shape[:-2])


@op("Det", "X", "Y", shape=_det_shape)
def det(attrs, x):
    """The determinant of each square matrix in X's last two dimensions."""
    return np.asarray(np.linalg.det(_wide(x))).astype(x.dtype)
