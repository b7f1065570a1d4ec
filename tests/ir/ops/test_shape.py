
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

from tensoregg.errors import InvalidModel, ShapeError, UnsupportedOperator
from tensoregg.frontends.onnx import import_onnx
from tensoregg.testing import arrays, check_op, shapes, single_op_model

f32, i32, i64 = np.float32, np.int32, np.int64


def a(values, dtype=f32):
    return np.array(values, dtype)


def ints(values):
    return np.array(values, i64)


X = np.arange(24, dtype=f32).reshape(2, 3, 4)
M = a([[1, 2, 3], [4, 5, 6], [7, 8, 9]])

# ---- hand-computed values ------------------------------------------------------------------------
# (op, inputs, attrs, constant input indices, expected outputs)

BY_HAND = [
    ("Reshape", [X, ints([4, 0, -1])], {}, (1,), [X.reshape(4, 3, 2)]),
    ("Reshape", [np.zeros((0, 3), f32), ints([3, 0])], {"allowzero": 1}, (1,), [np.zeros((3, 0), f32)]),
    ("Reshape", [np.zeros((0, 3), f32), ints([-1, 3])], {}, (1,), [np.zeros((0, 3), f32)]),
    ("Flatten", [X], {"axis": 0}, (), [X.reshape(1, 24)]),
    ("Flatten", [X], {"axis": -1}, (), [X.reshape(6, 4)]),
    ("Transpose", [a([[1, 2, 3]])], {}, (), [a([[1], [2], [3]])]),
    ("Transpose", [X], {"perm": [1, 2, 0]}, (), [X.transpose(1, 2, 0)]),
    ("Concat", [a([[1, 2]]), a([[3, 4], [5, 6]]), np.zeros((0, 2), f32)], {"axis": -2}, (),
     [a([[1, 2], [3, 4], [5, 6]])]),
    ("Split", [a([1, 2, 3, 4, 5]), ints([2, 0, 3])], {}, (1,), [a([1, 2]), a([]), a([3, 4, 5])]),
    ("Split", [a([1, 2, 3, 4, 5])], {"num_outputs": 2}, (), [a([1, 2, 3]), a([4, 5])]),
    ("Split", [a([[1, 2], [3, 4]])], {"axis": 1, "num_outputs": 2}, (), [a([[1], [3]]), a([[2], [4]])]),
    ("Slice", [a([0, 1, 2, 3, 4]), ints([1]), ints([100])], {}, (1, 2), [a([1, 2, 3, 4])]),
    ("Slice", [a([0, 1, 2, 3, 4]), ints([-1]), ints([-100]), ints([0]), ints([-2])], {}, (1, 2, 3, 4),
     [a([4, 2, 0])]),
    ("Slice", [a([0, 1, 2, 3, 4]), ints([3]), ints([1])], {}, (1, 2), [a([])]),
    ("Slice", [M, ints([2**63 - 1]), ints([-(2**63)]), ints([-1]), ints([-1])], {}, (1, 2, 3, 4),
     [M[:, ::-1]]),
    ("Squeeze", [np.zeros((1, 2, 1), f32)], {}, (), [np.zeros(2, f32)]),
    ("Squeeze", [np.zeros((1, 2, 1), f32), ints([-1])], {}, (1,), [np.zeros((1, 2), f32)]),
    ("Unsqueeze", [a([1, 2]), ints([2, 0])], {}, (1,), [a([[[1], [2]]])]),
    ("Expand", [a([[1], [2]]), ints([2, 1, 3])], {}, (1,), [np.broadcast_to(a([[1], [2]]), (2, 2, 3))]),
    ("Tile", [a([[1, 2]]), ints([2, 2])], {}, (1,), [a([[1, 2, 1, 2], [1, 2, 1, 2]])]),
    ("Pad", [a([[1, 2]]), ints([0, 1, 1, 0]), a(9)], {}, (1,), [a([[9, 1, 2], [9, 9, 9]])]),
    ("Pad", [a([1, 2, 3]), ints([2, 1])], {"mode": "reflect"}, (1,), [a([3, 2, 1, 2, 3, 2])]),
    ("Pad", [a([1, 2, 3]), ints([2, 1])], {"mode": "edge"}, (1,), [a([1, 1, 1, 2, 3, 3])]),
    ("Pad", [a([1, 2, 3]), ints([2, 1])], {"mode": "wrap"}, (1,), [a([2, 3, 1, 2, 3, 1])]),
    ("Pad", [a([1, 2, 3, 4]), ints([-1, 1])], {}, (1,), [a([2, 3, 4, 0])]),  # negative pads crop
    ("Pad", [a([[1, 2]]), ints([1, 1]), None, ints([-1])], {}, (1, 3), [a([[0, 1, 2, 0]])]),
    ("Pad", [a([["a"]], object), ints([0, 1, 0, 0])], {}, (1,), [a([["", "a"]], object)]),
    ("Shape", [X], {}, (), [ints([2, 3, 4])]),
    ("Shape", [X], {"start": -2, "end": 10}, (), [ints([3, 4])]),
    ("Shape", [X], {"start": -9, "end": -5}, (), [ints([])]),  # clamped to [0, rank]
    ("Shape", [X], {"start": 2, "end": 1}, (), [ints([])]),
    ("Size", [X], {}, (), [np.array(24, i64)]),
    ("Constant", [], {"value_float": 1.5}, (), [np.array(1.5, f32)]),
    ("Constant", [], {"value_ints": [1, 2]}, (), [ints([1, 2])]),
    ("Constant", [], {"value_strings": ["a", "bc"]}, (), [a(["a", "bc"], object)]),
    ("Constant", [], {"value": helper.make_tensor("v", TensorProto.INT32, [2], [3, 4])}, (),
     [a([3, 4], i32)]),
    ("ConstantOfShape", [ints([2, 1])], {}, (0,), [np.zeros((2, 1), f32)]),
    ("ConstantOfShape", [ints([])], {"value": helper.make_tensor("v", TensorProto.INT32, [1], [7])}, (0,),
     [np.array(7, i32)]),
    ("ConstantOfShape", [ints([0, 3])], {}, (0,), [np.zeros((0, 3), f32)]),
    ("DepthToSpace", [np.arange(8, dtype=f32).reshape(1, 8, 1, 1)], {"blocksize": 2}, (),
     [a([[[[0, 2], [4, 6]], [[1, 3], [5, 7]]]])]),
    ("DepthToSpace", [np.arange(8, dtype=f32).reshape(1, 8, 1, 1)], {"blocksize": 2, "mode": "CRD"}, (),
     [a([[[[0, 1], [2, 3]], [[4, 5], [6, 7]]]])]),
    ("SpaceToDepth", [a([[[[0, 2], [4, 6]], [[1, 3], [5, 7]]]])], {"blocksize": 2}, (),
     [np.arange(8, dtype=f32).reshape(1, 8, 1, 1)]),
    ("SpaceToDepth", [a([[[[0, 1], [2, 3]], [[4, 5], [6, 7]]]])], {"blocksize": 2, "mode": "CRD"}, (),
     [np.arange(8, dtype=f32).reshape(1, 8, 1, 1)]),
    ("EyeLike", [np.zeros((2, 3), i32)], {"k": 1}, (), [a([[0, 1, 0], [0, 0, 1]], i32)]),
    ("EyeLike", [np.zeros((2, 2), i32)], {"dtype": TensorProto.DOUBLE}, (), [np.eye(2)]),
    ("Range", [a(3, i32), a(9, i32), a(3, i32)], {}, (0, 1, 2), [a([3, 6], i32)]),
    ("Range", [a(10), a(4), a(-2)], {}, (0, 1, 2), [a([10, 8, 6])]),
    ("Range", [a(1), a(1), a(1)], {}, (0, 1, 2), [a([])]),
    ("Trilu", [M], {}, (), [a([[1, 2, 3], [0, 5, 6], [0, 0, 9]])]),
    ("Trilu", [M, np.array(-1, i64)], {"upper": 0}, (1,), [a([[0, 0, 0], [4, 0, 0], [7, 8, 0]])]),
    ("CenterCropPad", [a([[1, 2, 3, 4]]), ints([3, 2])], {}, (1,), [a([[0, 0], [2, 3], [0, 0]])]),
    ("CenterCropPad", [a([[1, 2, 3]]), ints([2])], {"axes": [-1]}, (1,), [a([[1, 2]])]),
    ("ReverseSequence", [a([[0, 1, 2], [3, 4, 5]]), ints([1, 3])], {"batch_axis": 0, "time_axis": 1}, (),
     [a([[0, 1, 2], [5, 4, 3]])]),
]


@pytest.mark.parametrize("op,inputs,attrs,constant,want", BY_HAND,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(BY_HAND)])
def test_by_hand(op, inputs, attrs, constant, want):
    check_op(op, inputs, attrs, constant=constant, n_outputs=len(want), expected=want)


# ---- older opset forms ---------------------------------------------------------------------------

OLD_FORMS = [
    ("Reshape", [X], {"shape": [4, -1]}, 4, 1, [X.reshape(4, 6)]),
    ("Slice", [M], {"starts": [1, -1], "ends": [3, 0], "axes": [1, 0]}, 9, 1, [M[:0, 1:3]]),
    ("Slice", [M], {"starts": [1], "ends": [3]}, 1, 1, [M[1:3]]),
    ("Squeeze", [np.zeros((1, 2, 1), f32)], {"axes": [0]}, 11, 1, [np.zeros((2, 1), f32)]),
    ("Unsqueeze", [a([1, 2])], {"axes": [0]}, 11, 1, [a([[1, 2]])]),
    ("Split", [a([1, 2, 3])], {"split": [1, 2]}, 11, 2, [a([1]), a([2, 3])]),
    ("Pad", [a([1, 2])], {"pads": [1, 0], "value": 5.0}, 2, 1, [a([5, 1, 2])]),
    ("Pad", [a([1, 2])], {"paddings": [0, 2], "mode": "edge"}, 1, 1, [a([1, 2, 2, 2])]),
    ("Concat", [a([[1]]), a([[2]])], {}, 1, 1, [a([[1, 2]])]),
]


@pytest.mark.parametrize("op,inputs,attrs,opset,n_outputs,want", OLD_FORMS,
                         ids=[f"{case[0]}-{case[3]}" for case in OLD_FORMS])
def test_old_opsets(op, inputs, attrs, opset, n_outputs, want):
    check_op(op, inputs, attrs, opset=opset, n_outputs=n_outputs, expected=want)


def test_split_equal_parts_before_opset_18():
    check_op("Split", [a([1, 2, 3, 4])], opset=13, n_outputs=2, expected=[a([1, 2]), a([3, 4])])


def test_tile_1_is_unsupported():
    with pytest.raises(UnsupportedOperator, match="Tile-1"):
        import_onnx(single_op_model("Tile", [X, np.array(2, i64), np.array(0, i64)], constant=(1, 2),
                                    opset=5))


# ---- errors --------------------------------------------------------------------------------------

ERRORS = [
    ("Reshape", [X, ints([5, -1])], {}, (1,), ShapeError, "cannot reshape"),
    ("Reshape", [X, ints([-1, -1])], {}, (1,), ShapeError, "one -1"),
    ("Reshape", [X, ints([0, -1])], {"allowzero": 1}, (1,), ShapeError, "both 0 and -1"),
    ("Reshape", [X, ints([2, -1])], {}, (), ShapeError, "compile-time constant"),
    ("Transpose", [X], {"perm": [0, 0, 1]}, (), ShapeError, "repeated axes"),
    ("Concat", [X, X[0]], {"axis": 0}, (), ShapeError, "agree on every dim"),
    ("Split", [a([1, 2, 3])], {}, (), ShapeError, "exactly one"),
    ("Split", [a([1, 2, 3]), ints([1, 1])], {}, (1,), ShapeError, "summing to"),
    ("Split", [a(1)], {"num_outputs": 1}, (), ShapeError, "out of range"),
    ("Pad", [a(1), ints([1, 1]), None, ints([0])], {}, (1, 3), ShapeError, "out of range"),
    ("Slice", [X, ints([0]), ints([1]), ints([0]), ints([0])], {}, (1, 2, 3, 4), ShapeError, "nonzero"),
    ("Squeeze", [X, ints([0])], {}, (1,), ShapeError, "must be 1"),
    ("Expand", [X, ints([2, 3])], {}, (1,), ShapeError, "do not broadcast"),
    ("Pad", [X, ints([0, -4, 0, 0, 0, 0])], {}, (1,), ShapeError, "crop more"),
    ("Pad", [X, ints([0, 0])], {}, (1,), ShapeError, "2 per axis"),
    ("Pad", [X, ints([0] * 6)], {"mode": "mirror"}, (1,), InvalidModel, "mode"),
    ("Constant", [], {}, (), InvalidModel, "exactly one"),
    ("DepthToSpace", [X[None]], {"blocksize": 2}, (), ShapeError, "divisible"),
    ("Range", [a(0), a(1), a(0)], {}, (0, 1, 2), ShapeError, "nonzero"),
    ("ReverseSequence", [X, ints([1])], {}, (), ShapeError, "sequence_lens"),
]


@pytest.mark.parametrize("op,inputs,attrs,constant,error,match", ERRORS,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(ERRORS)])
def test_errors(op, inputs, attrs, constant, error, match):
    with pytest.raises(error, match=match):
        import_onnx(single_op_model(op, inputs, attrs, constant=constant))


# ---- against onnx's reference evaluator ----------------------------------------------------------

DTYPES = [f32, np.float16, i64, np.uint8, np.bool_]


def tensor(data, shape, dtypes=DTYPES):
    return data.draw(arrays(data.draw(st.sampled_from(dtypes)), shape))


@given(shape=shapes(), allowzero=st.integers(0, 1), data=st.data())
def test_reshape_flatten_match_onnx(shape, allowzero, data):
    x = tensor(data, shape)
    dims = list(data.draw(st.permutations(shape))) + data.draw(st.lists(st.just(1), max_size=2))
    k = data.draw(st.integers(0, len(dims)))
    target = [*dims[:k], -1] if k < len(dims) else dims
    if not allowzero:
        target = [0 if k < len(shape) and d == shape[k] and data.draw(st.booleans()) else d
                  for k, d in enumerate(target)]
    check_op("Reshape", [x, ints(target)], {"allowzero": allowzero}, constant=(1,))
    check_op("Flatten", [x], {"axis": data.draw(st.integers(-len(shape), len(shape)))})


@given(shape=shapes(), data=st.data())
def test_transpose_squeeze_unsqueeze_match_onnx(shape, data):
    x = tensor(data, shape)
    check_op("Transpose", [x], {"perm": data.draw(st.permutations(range(len(shape))))} if shape else {})
    ones = [k for k, d in enumerate(shape) if d == 1]
    axes = data.draw(st.lists(st.sampled_from(ones), unique=True)) if ones else []
    check_op("Squeeze", [x, ints(axes)] if axes else [x], constant=(1,))
    rank = len(shape) + data.draw(st.integers(1, 2))
    new = data.draw(st.lists(st.integers(-rank, rank - 1), min_size=rank - len(shape),
                             max_size=rank - len(shape), unique_by=lambda v: v % rank))
    check_op("Unsqueeze", [x, ints(new)], constant=(1,))


@given(shape=shapes(min_rank=1), n=st.integers(1, 3), data=st.data())
def test_concat_split_match_onnx(shape, n, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    dtype = data.draw(st.sampled_from(DTYPES))
    parts = []
    for _ in range(n):
        part = list(shape)
        part[axis] = data.draw(st.integers(0, 3))
        parts.append(data.draw(arrays(dtype, part)))
    check_op("Concat", parts, {"axis": axis})
    whole = np.concatenate(parts, axis=axis)
    sizes = [p.shape[axis] for p in parts]
    check_op("Split", [whole, ints(sizes)], {"axis": axis}, constant=(1,), n_outputs=n)
    if whole.shape[axis] >= n:
        check_op("Split", [whole], {"axis": axis, "num_outputs": n}, n_outputs=n)


@given(shape=shapes(min_rank=1), data=st.data())
def test_slice_matches_onnx(shape, data):
    x = tensor(data, shape)
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                              unique_by=lambda v: v % len(shape)))
    bound = st.integers(-7, 7)
    starts, ends = (data.draw(st.lists(bound, min_size=len(axes), max_size=len(axes))) for _ in range(2))
    steps = data.draw(st.lists(st.integers(-3, 3).filter(bool), min_size=len(axes), max_size=len(axes)))
    check_op("Slice", [x, ints(starts), ints(ends), ints(axes), ints(steps)], constant=(1, 2, 3, 4))


@given(shape=shapes(), data=st.data())
def test_expand_tile_match_onnx(shape, data):
    x = tensor(data, shape)
    target = [data.draw(st.sampled_from([1, d])) for d in shape]
    target = data.draw(st.lists(st.integers(1, 3), max_size=2)) + target
    check_op("Expand", [x, ints(target)], constant=(1,))
    repeats = data.draw(st.lists(st.integers(0, 3), min_size=len(shape), max_size=len(shape)))
    check_op("Tile", [x, ints(repeats)], constant=(1,))


@given(shape=shapes(min_rank=1, min_side=2), mode=st.sampled_from(["constant", "reflect", "edge", "wrap"]),
       data=st.data())
def test_pad_matches_onnx(shape, mode, data):
    x = tensor(data, shape, [f32, i64, np.uint8])
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                              unique_by=lambda v: v % len(shape)))
    limit = min(shape) - 1 if mode == "reflect" else 3
    pads = data.draw(st.lists(st.integers(0, limit), min_size=2 * len(axes), max_size=2 * len(axes)))
    value = np.array(data.draw(st.integers(0, 9)), x.dtype) if mode == "constant" else None
    check_op("Pad", [x, ints(pads), value, ints(axes)], {"mode": mode}, constant=(1, 3))


@given(shape=shapes(), data=st.data())
def test_shape_size_match_onnx(shape, data):
    x = tensor(data, shape)
    # onnx's reference does not clamp start/end below -rank (Python slicing wraps them); see BY_HAND
    start = data.draw(st.integers(-len(shape), len(shape) + 2))
    end = data.draw(st.none() | st.integers(-len(shape), len(shape) + 2))
    check_op("Shape", [x], {"start": start} if end is None else {"start": start, "end": end})
    check_op("Size", [x])


@given(dims=shapes(max_rank=3, min_side=0), value=st.integers(-5, 5),
       dtype=st.sampled_from([TensorProto.FLOAT, TensorProto.INT32, TensorProto.BOOL]))
def test_constants_match_onnx(dims, value, dtype):
    filled = helper.make_tensor("v", dtype, [1], [value if dtype != TensorProto.BOOL else bool(value)])
    check_op("ConstantOfShape", [ints(dims)], {"value": filled}, constant=(0,))
    check_op("Constant", [], {"value_ints": [*dims, value]})
    check_op("Constant", [], {"value_float": float(value)})


@given(n=st.integers(1, 2), c=st.integers(1, 3), hw=st.integers(1, 2), b=st.integers(1, 3),
       mode=st.sampled_from(["DCR", "CRD"]), dtype=st.sampled_from([f32, i64]), data=st.data())
def test_depth_space_match_onnx(n, c, hw, b, mode, dtype, data):
    deep = data.draw(arrays(dtype, (n, c * b * b, hw, hw + 1)))
    check_op("DepthToSpace", [deep], {"blocksize": b, "mode": mode})
    check_op("SpaceToDepth", [deep.reshape(n, c, hw * b, (hw + 1) * b)], {"blocksize": b, "mode": mode})


@given(shape=shapes(2, 2), k=st.integers(-4, 4), dtype=st.none() | st.sampled_from(
    [TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL]), data=st.data())
def test_eye_like_trilu_match_onnx(shape, k, dtype, data):
    x = tensor(data, shape, [f32, i32])
    check_op("EyeLike", [x], {"k": k} if dtype is None else {"k": k, "dtype": dtype})
    batched = tensor(data, data.draw(shapes(0, 2)) + shape, [f32, i64])
    check_op("Trilu", [batched, np.array(k, i64)], {"upper": data.draw(st.integers(0, 1))}, constant=(1,))


@given(start=st.integers(-10, 10), limit=st.integers(-10, 10), delta=st.integers(-4, 4).filter(bool),
       dtype=st.sampled_from([f32, np.float64, i32, i64]), scale=st.sampled_from([1.0, 0.25]))
def test_range_matches_onnx(start, limit, delta, dtype, scale):
    if np.dtype(dtype).kind == "f":
        start, limit, delta = start * scale, limit * scale, delta * scale
    check_op("Range", [a(start, dtype), a(limit, dtype), a(delta, dtype)], constant=(0, 1, 2))


@given(shape=shapes(min_rank=1, max_rank=3), data=st.data())
def test_center_crop_pad_matches_onnx(shape, data):
    x = tensor(data, shape, [f32, i64])
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                              unique_by=lambda v: v % len(shape)))
    sizes = data.draw(st.lists(st.integers(0, 7), min_size=len(axes), max_size=len(axes)))
    check_op("CenterCropPad", [x, ints(sizes)], {"axes": axes}, constant=(1,))


@given(shape=shapes(min_rank=2, max_rank=3), batch_axis=st.integers(0, 1), data=st.data())
def test_reverse_sequence_matches_onnx(shape, batch_axis, data):
    x = tensor(data, shape, [f32, i64])
    time_axis = 1 - batch_axis
    lens = data.draw(st.lists(st.integers(0, shape[time_axis]), min_size=shape[batch_axis],
                              max_size=shape[batch_axis]))
    check_op("ReverseSequence", [x, ints(lens)], {"batch_axis": batch_axis, "time_axis": time_axis})
