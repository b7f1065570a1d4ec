"""The llvm target's shape, indexing, Resize and Einsum definitions against the reference interpreter,
on the forms the op tests do not reach (each case must compile: an unsupported lowering fails here)."""

import itertools

import numpy as np
import pytest

from tensoregg.errors import IndexOutOfRange, UnsupportedOperator
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.types import TensorType
from tensoregg.targets.llvm import NativeModel
from tensoregg.testing import GUARD_BYTES, check_native, single_op_model

F16, F32, F64, I32, I64, U8 = np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8
RNG = np.random.default_rng(0)


def native(op, inputs, attrs=None, *, n_outputs=1, constant=(), opset=None):
    """Compile the one-op model for llvm and compare it with the reference interpreter."""
    model = single_op_model(op, inputs, attrs, n_outputs=n_outputs, constant=constant, opset=opset)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if a is not None and i not in constant}
    graph = import_onnx(model)
    assert [n.op for n in graph.nodes] == [op]
    assert check_native(graph, feeds, require=True)


def unfolded(op, inputs, attrs=None, constant=()):
    """As ``native``, for a node whose inputs are all constants (the importer would fold it)."""
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    given = [(i, n, a) for i, (n, a) in enumerate(zip(names, inputs)) if a is not None]
    feeds = {n: a for i, n, a in given if i not in constant}
    inits = {n: a for i, n, a in given if i in constant}
    graph = Graph({n: TensorType.of(a) for n, a in feeds.items()}, inits,
                  [Node(op, tuple(names), ("out",), attrs or {})], ["out"])
    assert check_native(graph, feeds, require=True)


def rand(*shape, dtype=F32):
    return RNG.uniform(-3, 3, shape).astype(dtype)


def ints(*values):
    return np.array(values, I64)


# ---- reshaping, reordering, joining, cutting ------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [((2, 3, 4), (4, 6)), ((6, 4), (2, 3, 4)), ((2, 3, 4), (3, 8)),
                                     ((1, 6, 1), (2, 1, 3)), ((), (1, 1)), ((1,), ()),
                                     ((0, 3), (3, 0)), ((2, 2, 3, 5), (4, 15)), ((12,), (2, 3, 2))])
def test_reshape_groups(src, dst):
    native("Reshape", [rand(*src), np.array(dst, I64)], {"allowzero": 1}, constant=(1,))


@pytest.mark.parametrize("perm", list(itertools.permutations(range(4)))[::5])
def test_transpose_4d(perm):
    native("Transpose", [rand(2, 3, 4, 5)], {"perm": list(perm)})


def test_concat_and_split():
    parts = [rand(2, 3, 4), rand(2, 0, 4), rand(2, 1, 4), rand(2, 5, 4)]
    native("Concat", parts, {"axis": 1})
    native("Concat", [p.astype(I32) for p in parts], {"axis": -2})
    native("Concat", [rand(3, 2) > 0, rand(3, 1) > 0], {"axis": 1})
    native("Split", [rand(7, 3), ints(2, 0, 4, 1)], {"axis": 0}, n_outputs=4, constant=(1,))
    native("Split", [rand(3, 7)], {"axis": -1, "num_outputs": 3}, n_outputs=3)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([-1, 10], [-100, -10], [0, 2], [-2, -3]), ([1, 0], [1000, 3], [1, 2], [2, 1]),
    ([100], [-100], [-1], [-1]), ([0, 1, 2], [4, 3, 9], None, None)])
def test_slice_forms(starts, ends, axes, steps):
    x = rand(5, 4, 9)
    inputs = [x, ints(*starts), ints(*ends), None if axes is None else ints(*axes),
              None if steps is None else ints(*steps)]
    native("Slice", inputs, constant=(1, 2, 3, 4))


def test_expand_tile():
    native("Expand", [rand(3, 1), ints(2, 1, 3, 4)], constant=(1,))
    native("Tile", [rand(2, 1, 3), ints(3, 4, 1)], constant=(1,))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [[7, 0, 9, 2], [-1, 3, 2, -2], [0, 5, 0, 11], [2, -1, 0, 4]])
def test_pad_modes(mode, pads):
    native("Pad", [rand(4, 3), ints(*pads)], {"mode": mode}, constant=(1,))
    native("Pad", [rand(2, 4, 3).astype(I32), ints(pads[0], pads[2]), None, ints(-1)], {"mode": mode},
           constant=(1, 3))


def test_pad_constant_value_at_run_time():
    native("Pad", [rand(2, 3), ints(1, 2, 0, 1), np.array(7.5, F32)], constant=(1,))


def test_center_crop_pad():
    native("CenterCropPad", [rand(5, 4, 3), ints(2, 7, 3)], constant=(1,))
    native("CenterCropPad", [rand(5, 4, 3), ints(6)], {"axes": [0]}, constant=(1,))


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_space(mode):
    native("DepthToSpace", [rand(2, 18, 2, 3)], {"blocksize": 3, "mode": mode})
    native("SpaceToDepth", [rand(2, 2, 6, 9)], {"blocksize": 3, "mode": mode})


def test_reverse_sequence():
    native("ReverseSequence", [rand(4, 3, 2), ints(0, 4, 1)], {"batch_axis": 1, "time_axis": 0})
    native("ReverseSequence", [rand(3, 5), np.array([5, 2, 1], I32)], {"batch_axis": 0, "time_axis": 1})


def test_values_of_the_index():
    unfolded("Range", [np.array(2.5, F32), np.array(-4, F32), np.array(-0.75, F32)], constant=(0, 1, 2))
    unfolded("Range", [np.array(-3, I32), np.array(20, I32), np.array(4, I32)], constant=(0, 1, 2))
    unfolded("ConstantOfShape", [ints(2, 3)], {"value": np.array([7], I32)}, constant=(0,))
    unfolded("EyeLike", [rand(3, 5)], {"k": -1})
    unfolded("EyeLike", [rand(4, 2)], {"k": 1, "dtype": 7})
    unfolded("Shape", [rand(2, 3, 4)], {"start": 1})
    unfolded("Size", [rand(2, 3, 4)])
    for k in (-1, 0, 2):
        native("Trilu", [rand(2, 4, 5), np.array(k, I64)], {"upper": 0}, constant=(1,))
        native("Trilu", [rand(4, 5), np.array(k, I64)], constant=(1,))


# ---- gathers and scatters ------------------------------------------------------------------------------

def test_gathers():
    x = rand(4, 5, 3)
    native("Gather", [x, np.array([[0, -1], [3, -4]], I32)], {"axis": 1})
    native("Gather", [x, np.array(-2, I64)], {"axis": 0})
    native("GatherElements", [x, RNG.integers(-3, 3, (4, 5, 2))], {"axis": -1})
    native("GatherElements", [x, RNG.integers(-5, 5, (4, 7, 3))], {"axis": 1})
    native("GatherND", [x, RNG.integers(-3, 3, (2, 3, 2))])
    native("GatherND", [x, RNG.integers(0, 3, (4, 1))], {"batch_dims": 1})
    native("GatherND", [x, RNG.integers(0, 3, (4, 5, 6, 1))], {"batch_dims": 2})


OUT_OF_RANGE = [("Gather", [rand(4, 5), np.array([[9, -9]], I64)], {"axis": 1}),
                ("GatherElements", [rand(4, 5), np.full((4, 5), 99, I64)], {"axis": 0}),
                ("GatherND", [rand(4, 5), np.array([[-50, 70]], I64)], {}),
                ("ScatterElements", [rand(4, 5), np.full((1, 5), -5, I64), rand(1, 5)], {"axis": 0}),
                ("ScatterND", [rand(4, 5), np.array([[4]], I64), rand(1, 5)], {})]


@pytest.mark.parametrize("op,inputs,attrs", OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_out_of_range_indices_raise_naming_the_node(op, inputs, attrs):
    """Out-of-range indices are an error in ONNX (its reference and onnxruntime raise): the code reads
    only inside the data (guard mode checks writes; reads are clamped) and the run raises, in guard
    mode and in a plain run; valid indices then run as before (the fault was cleared)."""
    feeds = {f"in{i}": a for i, a in enumerate(inputs)}
    graph = import_onnx(single_op_model(op, inputs, attrs))
    for model in (NativeModel(graph, guard=GUARD_BYTES), NativeModel(graph)):
        with pytest.raises(IndexOutOfRange, match=f"{op} node 'out0'"):
            model.run(feeds)
        fine = {**feeds, "in1": np.zeros_like(inputs[1])}
        np.testing.assert_array_equal(model.run(fine)[0], run_graph(graph, fine)[0])
    with pytest.raises(IndexOutOfRange, match=f"{op} node 'out0'"):
        run_graph(graph, feeds)


def test_out_of_range_index_on_threads_names_the_first_faulting_node():
    """A gather large enough to run on the thread team: every thread stops after the faulting node."""
    x = rand(1 << 12, 1 << 10)
    idx = np.arange(1 << 12, dtype=I64)
    model = single_op_model("GatherElements", [x, np.broadcast_to(idx[:, None], x.shape).copy()], {"axis": 0})
    graph = import_onnx(model)
    native = NativeModel(graph)
    native.num_threads = 2
    good = np.broadcast_to(idx[:, None], x.shape).copy()
    bad = good.copy()
    bad[-1, -1] = 1 << 12
    for _ in range(3):
        with pytest.raises(IndexOutOfRange, match="GatherElements node"):
            native.run({"in0": x, "in1": bad})
        np.testing.assert_array_equal(native.run({"in0": x, "in1": good})[0], x)


def test_one_hot_out_of_range_is_all_off():
    """OneHot's out-of-range index is no error in ONNX: every position takes the off value."""
    model = single_op_model("OneHot", [np.array([7, -9], I64), np.array(3, I64), rand(2)], {}, constant=(1,))
    assert check_native(import_onnx(model), {"in0": np.array([7, -9], I64), "in2": rand(2)}, require=True)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatters(reduction):
    data = rand(4, 5, 3)
    dup = np.array([[[1, 1, -1], [0, 3, 3]]], I64)  # duplicates and a negative index, along axis 0
    native("ScatterElements", [data, dup, rand(1, 2, 3)], {"axis": 0, "reduction": reduction})
    updates = RNG.integers(-9, 9, (3, 4, 2)).astype(I32)
    native("ScatterElements", [data.astype(I32), RNG.integers(-5, 5, (3, 4, 2)), updates],
           {"axis": 1, "reduction": reduction})
    native("ScatterND", [data, np.array([[1, 2], [1, 2], [-1, 0]], I64), rand(3, 3)],
           {"reduction": reduction})
    native("ScatterND", [data, np.array([[[2], [0]], [[2], [-4]]], I64), rand(2, 2, 5, 3)],
           {"reduction": reduction})


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode):
    cache, update = rand(3, 2, 6, 4), rand(3, 2, 3, 4)
    starts = np.array([0, 3, 5 if mode == "circular" else 2], I64)
    native("TensorScatter", [cache, update, starts], {"axis": 2, "mode": mode})
    native("TensorScatter", [cache, update], {"axis": -2, "mode": mode})


def test_one_hot_and_compress():
    for axis in (0, 1, -1):
        native("OneHot", [np.array([[1, -1, 4], [0, 2, -5]], I64), np.array(5, I64), np.array([2, 9], I32)],
               {"axis": axis}, constant=(1,))
    native("OneHot", [np.array([1.7, -1.2, 3.0], F32), np.array([4.0], F32), rand(2)], constant=(1,))
    cond = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1], bool)
    native("Compress", [rand(10, 3), cond], {"axis": 0}, constant=(1,))
    native("Compress", [rand(2, 4), cond[:7]], constant=(1,))
    native("Compress", [rand(2, 12), cond], {"axis": -1}, constant=(1,))


# ---- Resize --------------------------------------------------------------------------------------------

COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
          "tf_crop_and_resize"]


def resize(x, attrs, scales=None, sizes=None, roi=None, roi_constant=True):
    scales = None if scales is None else np.array(scales, F32)
    inputs = [x, roi, scales, None if sizes is None else ints(*sizes)]
    native("Resize", inputs, attrs, constant=(1, 2, 3) if roi_constant else (2, 3))


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("nearest", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
def test_resize_nearest(coord, nearest):
    attrs = {"mode": "nearest", "coordinate_transformation_mode": coord, "nearest_mode": nearest}
    x = rand(2, 3, 5, 7)
    resize(x, attrs, scales=[1, 1, 1.7, 0.6])
    resize(x.astype(I32), attrs, sizes=[3, 3, 1, 11])
    resize(x, {**attrs, "axes": [2, 3]}, sizes=[10, 3], roi=np.array([0.1, 0.3, 0.8, 1.2], F32))
    resize(x, {**attrs, "axes": [3, 2], "extrapolation_value": -1.0}, sizes=[4, 9],
           roi=np.array([-0.1, 0.2, 0.7, 1.3], F32) if coord == "tf_crop_and_resize" else None)


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_interpolating(coord, mode):
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    x = rand(1, 2, 6, 5)
    resize(x, attrs, scales=[1, 1, 0.5, 1.9])
    resize(x, {**attrs, "exclude_outside": 1, "cubic_coeff_a": -0.5}, sizes=[1, 2, 13, 2])
    resize(x.astype(F16), attrs, sizes=[1, 2, 3, 8])
    resize((x * 40 + 100).astype(U8), attrs, scales=[1, 1, 1.5, 0.7])
    resize(x, {**attrs, "axes": [2], "extrapolation_value": 3.0}, sizes=[1],
           roi=np.array([0.2, 0.9], F32) if coord == "tf_crop_and_resize" else None)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_antialias(mode):
    attrs = {"mode": mode, "antialias": 1}
    x = rand(1, 1, 17, 16)
    resize(x, attrs, scales=[1, 1, 0.3, 0.6])
    resize(x, {**attrs, "exclude_outside": 1, "keep_aspect_ratio_policy": "not_larger", "axes": [2, 3]},
           sizes=[5, 9])


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_integers_round_ties_as_the_reference(mode):
    """Weighted sums that land on a .5 tie must round as numpy's (a fused multiply-add would not)."""
    attrs = {"mode": mode, "coordinate_transformation_mode": "half_pixel_symmetric"}
    x = np.zeros((1, 2, 6, 5), U8)
    graph = import_onnx(single_op_model("Resize", [x, None, np.array([1, 1, 1.5, 0.7], F32)], attrs,
                                        constant=(1, 2)))
    model = NativeModel(graph)
    for _ in range(30):
        feeds = {"in0": RNG.integers(0, 256, x.shape).astype(U8)}
        np.testing.assert_array_equal(model.run(feeds)[0], run_graph(graph, feeds)[0])


def test_resize_roi_at_run_time():
    roi = np.array([0, 0, 0.2, 0.1, 1, 1, 0.9, 0.7], F32)
    x = rand(1, 2, 5, 6)
    for mode in ("nearest", "linear"):
        attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize",
                 "extrapolation_value": 5.0}
        resize(x, attrs, sizes=[1, 2, 4, 7], roi=roi, roi_constant=False)
        resize(x, {**attrs, "coordinate_transformation_mode": "half_pixel"}, scales=[1, 1, 2, 0.5], roi=roi,
               roi_constant=False)


# ---- Einsum --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("ii->i", [(4, 4)]),
    ("ii", [(3, 3)]), ("ij->", [(3, 4)]), ("ij->ji", [(3, 4)]), ("i,i", [(5,), (5,)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]), ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("ij,jk", [(3, 4), (4, 2)]), ("i...->...", [(3, 2, 4)]), ("ab...,b->...a", [(2, 3, 4), (3,)]),
    ("i,j->ij", [(3,), (4,)]), ("bij,bkj->bik", [(1, 3, 4), (2, 5, 4)])])
def test_einsum(equation, shapes):
    native("Einsum", [rand(*s) for s in shapes], {"equation": equation})


def test_einsum_dtypes():
    native("Einsum", [rand(3, 4, dtype=F16), rand(4, 2, dtype=F16)], {"equation": "ij,jk->ik"})
    native("Einsum", [RNG.integers(-9, 9, (3, 4)).astype(I32)] * 2, {"equation": "ij,ij->i"})
    native("Einsum", [rand(2, 3, dtype=F64)], {"equation": "ij->j"})


def test_unsupported_forms_say_why():
    model = single_op_model("Einsum", [rand(2, 2) > 0, rand(2, 2) > 0], {"equation": "ij,jk->ik"})
    with pytest.raises(UnsupportedOperator, match="Einsum"):
        NativeModel(import_onnx(model))
    big = np.zeros((512, 512), F32)
    model = single_op_model("ScatterND", [big, np.zeros((1024, 1), I64), np.zeros((1024, 512), F32)])
    with pytest.raises(UnsupportedOperator, match="scatter"):
        NativeModel(import_onnx(model))
