"""ml_dtypes' types on the llvm target (tensoregg.targets.llvm.formats): the conversions against
ml_dtypes, exhaustively for the 8-bit formats' bit patterns and on a dense float32 sample; casts,
arithmetic, BitCast and (de)quantization compiled natively against the reference interpreter, bit
for bit (any NaN equals any NaN where the reference's NaN is not ml_dtypes' own)."""

import ctypes
import itertools

import llvmlite.ir as ir
import ml_dtypes as md
import numpy as np
import pytest
from onnx import helper

import tensoregg.targets.llvm.codegen  # noqa: F401  (opaque pointers before llvmlite.ir is used)
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.targets.llvm import NativeModel
from tensoregg.targets.llvm.formats import FORMATS, SmallFloat, decode, encode
from tensoregg.targets.llvm.jit import JitModule
from tensoregg.testing import in_child, single_op_model

FLOAT_FORMATS = [d for d, f in FORMATS.items() if isinstance(f, SmallFloat)]
INT_FORMATS = [d for d in FORMATS if d not in FLOAT_FORMATS]
NATIVE = [np.dtype(t) for t in (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                 np.int64, np.uint64, np.float16, np.float32, np.float64)]
F32 = np.dtype(np.float32)
I64, PTR = ir.IntType(64), ir.PointerType()


def code(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def bits_type(dtype: np.dtype) -> np.dtype:
    return np.dtype(f"u{np.dtype(dtype).itemsize}")


def mapper(build, src: ir.Type, dst: ir.Type):
    """A native ``f(x, out_dtype)``: ``out[i] = build(module, builder, x[i])`` over an array."""
    module = ir.Module("map")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64]), "map")
    x_ptr, out_ptr, n = fn.args
    entry, loop, done = (fn.append_basic_block(x) for x in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", n, ir.Constant(I64, 0)), loop, done)
    b.position_at_end(loop)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    value = build(module, b, b.load(b.gep(x_ptr, [i], source_etype=src), typ=src))
    b.store(value, b.gep(out_ptr, [i], source_etype=dst))
    step = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(step, loop)
    b.cbranch(b.icmp_signed("<", step, n), loop, done)
    b.position_at_end(done)
    b.ret_void()
    jit = JitModule(module)
    cfunc = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(jit.address("map"))

    def run(x: np.ndarray, out_dtype) -> np.ndarray:
        x = np.ascontiguousarray(x)
        out = np.empty(x.shape, out_dtype)
        cfunc(x.ctypes.data, out.ctypes.data, x.size)
        run.jit = jit  # type: ignore[attr-defined]  (the code lives as long as this function)
        return out
    return run


def float32_sample() -> np.ndarray:
    """Every sign, exponent and top 11 mantissa bits, with low bits that make ties, values just
    above and below them, subnormals, infinities and NaNs."""
    high = np.arange(1 << 20, dtype=np.uint32) << 12
    low = np.array([0, 1, 0x7FF, 0x800, 0xFFF], np.uint32)
    return (high[:, None] | low[None, :]).reshape(-1).view(np.float32)


def every_pattern(dtype: np.dtype) -> np.ndarray:
    """Every value of a byte (two for bfloat16), read as ``dtype``."""
    return np.arange(1 << (8 * dtype.itemsize)).astype(bits_type(dtype)).view(dtype)


def same(got: np.ndarray, want: np.ndarray, nan_bits: bool = True) -> np.ndarray:
    """Where ``got`` and ``want`` agree bit for bit (or, without ``nan_bits``, are both NaN: NaN
    payloads are ml_dtypes' own only in its types)."""
    g, w = got.view(bits_type(got.dtype)), want.view(bits_type(want.dtype))
    equal = g == w
    if not nan_bits and got.dtype not in INT_FORMATS and got.dtype.kind not in "biu":
        equal |= np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))
    return equal


def assert_same(got: np.ndarray, want: np.ndarray, where: str, nan_bits: bool = True,
                inputs: np.ndarray | None = None) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, where
    ok = same(got, want, nan_bits)
    if not ok.all():
        bad = np.flatnonzero(~ok)[:5]
        shown = [(inputs.reshape(-1)[k] if inputs is not None else k, got.reshape(-1)[k], want.reshape(-1)[k])
                 for k in bad]
        raise AssertionError(f"{where}: {(~ok).sum()} of {ok.size} differ, e.g. (input, got, want) {shown}")


# ---- the conversion functions against ml_dtypes ------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_FORMATS, ids=str)
def test_decode_every_bit_pattern(dtype):
    fmt = FORMATS[dtype]
    run = mapper(lambda m, b, x: b.call(decode(m, dtype.name, fmt), [x]), fmt.storage, ir.FloatType())
    x = every_pattern(dtype)  # for the 6- and 4-bit types, bytes with their unused bits set too
    want = x.astype(np.float32)
    got = run(x.view(bits_type(dtype)), np.float32)
    both_nan = np.isnan(got) & np.isnan(want) & (np.signbit(got) == np.signbit(want))
    assert ((got.view(np.uint32) == want.view(np.uint32)) | both_nan).all()


@pytest.mark.parametrize("dtype", FLOAT_FORMATS, ids=str)
def test_encode_dense_float32_sample(dtype):
    fmt = FORMATS[dtype]
    run = mapper(lambda m, b, x: b.call(encode(m, dtype.name, fmt), [x]), ir.FloatType(), fmt.storage)
    x = float32_sample()
    with np.errstate(all="ignore"):
        want = x.astype(dtype)
    assert_same(run(x, bits_type(dtype)).view(dtype), want, f"float32 -> {dtype}", inputs=x)


# ---- casts compiled natively against the reference interpreter --------------------------------------

def sample(dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    if dtype == np.bool_:
        return np.array([False, True])
    if dtype in FORMATS:
        return every_pattern(dtype)
    if dtype == np.float16:
        return np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    if dtype.kind == "f":
        bits = rng.integers(0, 1 << (8 * dtype.itemsize), 1 << 16, dtype=np.uint64).astype(bits_type(dtype))
        scaled = rng.standard_normal(1 << 12) * 10.0 ** rng.integers(-45, 40, 1 << 12)
        special = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, 1.5, -2.5, 100.0, 2.0 ** 31 + 5]
        return np.concatenate([bits.view(dtype), scaled.astype(dtype), np.array(special, dtype)])
    info = np.iinfo(dtype)
    near = [s * 2 ** k + d for k in range(info.bits - 1) for d in (-1, 0, 1) for s in (1, -1)]
    edges = np.array([v for v in near if info.min <= v <= info.max] + [info.min, info.max], dtype=dtype)
    return np.concatenate([edges, rng.integers(info.min, info.max, 1 << 12, dtype=dtype, endpoint=True)])


def cast_graph(x: np.ndarray, targets: list[np.dtype], **attrs) -> Graph:
    """One Cast of input ``x`` to each of ``targets``."""
    nodes = [Node("Cast", ("x",), (f"y{k}",), {"to": code(t), "saturate": 1, "round_mode": "up", **attrs})
             for k, t in enumerate(targets)]
    return Graph({"x": TensorType(x.dtype, x.shape)}, {}, nodes, [n.outputs[0] for n in nodes])


ALL = FLOAT_FORMATS + INT_FORMATS + NATIVE


@pytest.mark.parametrize("src", ALL, ids=str)
def test_casts_from(src):
    """Every supported dtype to every other, native against the reference interpreter bit for bit,
    where the spec leaves the result undefined too (both follow ``tensoregg.ir.ops.casts``' rules).
    In a child process: code that faults (an unresolved libcall) fails the test, not the run."""
    def check():
        x = sample(src, np.random.default_rng(0))
        targets = [t for t in ALL if t != src]
        for saturate in (1, 0):
            graph = cast_graph(x, targets, saturate=saturate)
            got = NativeModel(graph).run({"x": x})
            want = run_graph(graph, {"x": x})
            for dst, g, w in zip(targets, got, want):
                assert_same(g, w, f"{src} -> {dst}, saturate={saturate}", nan_bits=dst in FORMATS, inputs=x)
    in_child(check, f"casts from {src}")


@pytest.mark.parametrize("mode,saturate", list(itertools.product(["up", "down", "nearest"], [1, 0])))
def test_cast_to_e8m0_dense(mode, saturate):
    x = float32_sample()[::7]
    graph = cast_graph(x, [np.dtype(md.float8_e8m0fnu)], saturate=saturate, round_mode=mode)
    got, want = NativeModel(graph).run({"x": x})[0], run_graph(graph, {"x": x})[0]
    assert_same(got, want, f"float32 -> e8m0 ({mode}, saturate={saturate})", inputs=x)


# ---- arithmetic: computed in float32, rounded after each operation ---------------------------------

@pytest.mark.parametrize("dtype", [md.bfloat16, md.float8_e4m3fn, md.float8_e5m2fnuz], ids=str)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Exp", "Sqrt", "Neg"])
def test_arithmetic_rounds_as_ml_dtypes(op, dtype):
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(1)
    n_in = 1 if op in ("Exp", "Sqrt", "Neg") else 2
    xs = [rng.integers(0, 1 << (8 * dtype.itemsize), 1 << 14).astype(bits_type(dtype)).view(dtype)
          for _ in range(n_in)]
    graph = import_onnx(single_op_model(op, xs))
    feeds = {f"in{i}": x for i, x in enumerate(xs)}
    got, want = NativeModel(graph).run(feeds)[0], run_graph(graph, feeds)[0]
    assert_same(got, want, f"{op} on {dtype}", nan_bits=False)


def test_small_int_arithmetic_wraps():
    a, b = np.array([7, -8, 5, -1], md.int4), np.array([1, -1, 5, 7], md.int4)
    for op in ("Add", "Sub", "Mul"):
        graph = import_onnx(single_op_model(op, [a, b]))
        feeds = {"in0": a, "in1": b}
        assert_same(NativeModel(graph).run(feeds)[0], run_graph(graph, feeds)[0], op)


# ---- BitCast and (de)quantization -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_FORMATS + INT_FORMATS, ids=str)
def test_bitcast_keeps_every_bit_pattern(dtype):
    x = every_pattern(dtype)
    if dtype.itemsize == 1 and FORMATS[dtype].bits < 8:
        x = x[:1 << FORMATS[dtype].bits]  # BitCast needs equal bit widths: to the same-width type
        width = FORMATS[dtype].bits
        other = next(t for t in FLOAT_FORMATS + INT_FORMATS if t != dtype and FORMATS[t].bits == width)
    else:
        other = bits_type(dtype)
    for src, dst in ((dtype, other), (other, dtype)):
        data = x.view(src)
        graph = import_onnx(single_op_model("BitCast", [data], {"to": code(dst)}))
        got = NativeModel(graph).run({"in0": data})[0]
        np.testing.assert_array_equal(got.view(np.uint8), data.view(np.uint8), err_msg=f"{src} -> {dst}")


def test_bitcast_native_keeps_nan_payloads():
    x = np.array([0x7F800001, 0xFFC00123, 0x3F800000, 0], np.uint32)
    graph = import_onnx(single_op_model("BitCast", [x], {"to": code(np.float32)}))
    np.testing.assert_array_equal(NativeModel(graph).run({"in0": x})[0].view(np.uint32), x)


@pytest.mark.parametrize("dtype", [md.float8_e4m3fn, md.float8_e5m2, md.float8_e4m3fnuz, md.float4_e2m1fn,
                                   md.int4, md.uint2], ids=str)
@pytest.mark.parametrize("saturate", [1, 0])
def test_quantize_dequantize(dtype, saturate):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(4096) * 10.0 ** rng.integers(-3, 4, 4096),
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e6, -1e6]]).astype(np.float32)
    scale = np.array(0.75, np.float32)
    zero_point = np.zeros((), dtype)
    attrs = {"saturate": saturate} if np.dtype(dtype) not in INT_FORMATS else {}
    graph = import_onnx(single_op_model("QuantizeLinear", [x, scale, zero_point], attrs))
    feeds = {"in0": x, "in1": scale, "in2": zero_point}
    q, want = NativeModel(graph).run(feeds)[0], run_graph(graph, feeds)[0]
    # NaN to an integer is undefined
    keep = np.isfinite(x) if np.dtype(dtype) in INT_FORMATS else np.ones(x.shape, bool)
    assert_same(q[keep], want[keep], f"QuantizeLinear to {dtype}", inputs=x[keep])
    e8m0 = np.array(2.0 ** -3).astype(md.float8_e8m0fnu)
    for out in (np.float32, md.bfloat16):
        graph = import_onnx(single_op_model("DequantizeLinear", [want, e8m0], {"output_dtype": code(out)}))
        feeds = {"in0": want, "in1": e8m0}
        got, expect = NativeModel(graph).run(feeds)[0], run_graph(graph, feeds)[0]
        assert_same(got, expect, f"DequantizeLinear of {dtype} to {np.dtype(out)}", nan_bits=False)


@pytest.mark.parametrize("dtype", [md.float8_e4m3fn, md.float8_e4m3fnuz, md.float8_e5m2fnuz, md.float4_e2m1fn,
                                   md.int4, md.bfloat16], ids=str)
def test_small_shapes(dtype):
    """Rows of a few elements (LLVM's SLP vectorizer, not the loop vectorizer): per-axis
    quantization and casts from every float type."""
    rng = np.random.default_rng(3)
    for shape in [(1, 2), (2, 1), (3, 2), (2, 3), (5,), (1, 1, 7)]:
        x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-2, 3)).astype(np.float32)
        for src in (np.float32, np.float64, np.float16, md.bfloat16):
            graph = import_onnx(single_op_model("Cast", [x.astype(src)], {"to": code(dtype)}))
            feeds = {"in0": x.astype(src)}
            assert_same(NativeModel(graph).run(feeds)[0], run_graph(graph, feeds)[0], f"{src} -> {dtype}")
        if np.dtype(dtype) == md.bfloat16:
            continue
        for axis in range(len(shape)):  # per axis, and blocks of 1 (a scale per element)
            for attrs, s_shape in (({"axis": axis}, shape[axis]), ({"axis": axis, "block_size": 1}, shape)):
                scale = (rng.random(s_shape) + 0.5).astype(np.float32)
                zero_point = np.zeros(s_shape, dtype)
                graph = import_onnx(single_op_model("QuantizeLinear", [x, scale, zero_point], attrs))
                feeds = {"in0": x, "in1": scale, "in2": zero_point}
                assert_same(NativeModel(graph).run(feeds)[0], run_graph(graph, feeds)[0],
                            f"QuantizeLinear {shape} {attrs}")
