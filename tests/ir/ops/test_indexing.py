import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensoregg.errors import InvalidModel, ShapeError
from tensoregg.testing import arrays, check_op, shapes

F32, I64 = np.float32, np.int64


def f32(x):
    return np.array(x, F32)


def i64(x):
    return np.array(x, I64)


@st.composite
def axis_of(draw, rank):
    return draw(st.integers(-rank, rank - 1))


@st.composite
def index_arrays(draw, shape, dim, dtype=None):
    """Indices into a dim of size ``dim``, negative ones included."""
    dtype = dtype or draw(st.sampled_from([np.int32, np.int64]))
    return draw(arrays(dtype, shape, low=-dim, high=dim - 1))


# --- Gather family ------------------------------------------------------------------------------

def test_gather_by_hand():
    data = f32([[1, 2], [3, 4], [5, 6]])
    check_op("Gather", [data, i64([[0, -1], [1, 2]])], expected=[f32([[[1, 2], [5, 6]], [[3, 4], [5, 6]]])])
    check_op("Gather", [data, i64(-1)], {"axis": 1}, expected=[f32([2, 4, 6])])


@given(shapes(1, 3), st.data())
def test_gather_matches_onnx(shape, data):
    axis = data.draw(axis_of(len(shape)))
    indices = data.draw(index_arrays(data.draw(shapes(0, 2)), shape[axis]))
    check_op("Gather", [data.draw(arrays(F32, shape)), indices], {"axis": axis})


def test_gather_elements_by_hand():
    data = f32([[1, 2], [3, 4]])
    check_op("GatherElements", [data, i64([[0, 0], [1, -2]])], {"axis": -1}, expected=[f32([[1, 1], [4, 3]])])


@given(shapes(1, 3), st.data())
def test_gather_elements_matches_onnx(shape, data):
    axis = data.draw(st.integers(0, len(shape) - 1))  # onnx's reference mishandles negative axes
    ishape = list(shape)
    ishape[axis] = data.draw(st.integers(1, 4))
    indices = data.draw(index_arrays(tuple(ishape), shape[axis]))
    check_op("GatherElements", [data.draw(arrays(F32, shape)), indices], {"axis": axis})


def test_gather_nd_by_hand():
    data = i64([[[0, 1], [2, 3]], [[4, 5], [6, 7]]])
    check_op("GatherND", [data, i64([[0, 1], [1, 0]])], expected=[i64([[2, 3], [4, 5]])])
    check_op("GatherND", [data, i64([[1], [0]])], {"batch_dims": 1}, expected=[i64([[2, 3], [4, 5]])])


@given(st.integers(0, 1), shapes(1, 3, max_side=3), st.data())
def test_gather_nd_matches_onnx(batch_dims, tail, data):
    shape = data.draw(shapes(batch_dims, batch_dims, max_side=3)) + tail
    m = data.draw(st.integers(1, len(tail)))
    index_shape = shape[:batch_dims] + data.draw(shapes(0, 2, max_side=3))
    dims = shape[batch_dims:batch_dims + m]
    columns = [data.draw(arrays(I64, index_shape, low=-d, high=d - 1)) for d in dims]
    check_op("GatherND", [data.draw(arrays(F32, shape)), np.stack(columns, -1)], {"batch_dims": batch_dims})


# --- Scatter family -----------------------------------------------------------------------------

@pytest.mark.parametrize("reduction,want", [
    ("none", [[1, 7, 3]]), ("add", [[1, 9, 3]]), ("mul", [[1, 14, 3]]),
    ("max", [[1, 7, 3]]), ("min", [[1, 2, 3]])])
def test_scatter_elements_by_hand(reduction, want):
    data, updates = f32([[1, 2, 3]]), f32([[7]])
    check_op("ScatterElements", [data, i64([[-2]]), updates], {"axis": 1, "reduction": reduction},
             expected=[f32(want)])


def test_scatter_elements_bad_reduction():
    with pytest.raises(InvalidModel, match="reduction"):
        check_op("ScatterElements", [f32([1]), i64([0]), f32([2])], {"reduction": "mean"})


def test_scatter_is_scatter_elements_at_opset_9():
    check_op("Scatter", [f32([[0, 0], [0, 0]]), i64([[1, 0]]), f32([[5, 6]])], opset=9,
             expected=[f32([[0, 6], [5, 0]])])


@given(shapes(1, 3), st.sampled_from(["none", "add", "mul", "max", "min"]), st.data())
def test_scatter_elements_matches_onnx(shape, reduction, data):
    axis = data.draw(axis_of(len(shape)))
    ishape = list(shape)
    ishape[axis] = data.draw(st.integers(1, shape[axis]))
    if reduction == "none":  # one permutation along the axis: no index is written twice
        perm = np.array(data.draw(st.permutations(range(shape[axis]))))[:ishape[axis]]
        expand = [1] * len(shape)
        expand[axis] = ishape[axis]
        indices = np.broadcast_to(perm.reshape(expand), ishape).astype(I64)
    else:
        indices = data.draw(index_arrays(tuple(ishape), shape[axis], I64))
    updates = data.draw(arrays(F32, tuple(ishape)))
    check_op("ScatterElements", [data.draw(arrays(F32, shape)), indices, updates],
             {"axis": axis, "reduction": reduction}, opset=18)


def test_scatter_nd_by_hand():
    data = f32([1, 2, 3, 4])
    check_op("ScatterND", [data, i64([[3], [1]]), f32([9, 10])], expected=[f32([1, 10, 3, 9])])
    check_op("ScatterND", [data, i64([[1], [1]]), f32([9, 10])], {"reduction": "add"},
             expected=[f32([1, 21, 3, 4])])


@given(shapes(1, 3, max_side=3), st.sampled_from(["none", "add", "mul", "max", "min"]), st.data())
def test_scatter_nd_matches_onnx(shape, reduction, data):
    k = data.draw(st.integers(1, len(shape)))
    slots = int(np.prod(shape[:k]))
    flat = data.draw(st.lists(st.integers(0, slots - 1), min_size=1, max_size=4, unique=reduction == "none"))
    indices = np.stack(np.unravel_index(flat, shape[:k]), -1).astype(I64)
    updates = data.draw(arrays(F32, (len(flat), *shape[k:])))
    check_op("ScatterND", [data.draw(arrays(F32, shape)), indices, updates], {"reduction": reduction},
             opset=18)


def test_tensor_scatter_by_hand():
    cache = np.zeros((2, 3, 1), F32)
    update = f32([[[1], [2]], [[3], [4]]])
    check_op("TensorScatter", [cache, update, i64([1, 2])], {"axis": 1, "mode": "circular"},
             expected=[f32([[[0], [1], [2]], [[4], [0], [3]]])])


@given(st.integers(1, 2), shapes(0, 2, max_side=3), st.integers(1, 5), st.booleans(), st.data())
def test_tensor_scatter_matches_onnx(batch, inner, length, circular, data):
    seq = data.draw(st.integers(1, length))
    cache = data.draw(arrays(F32, (batch, length, *inner)))
    update = data.draw(arrays(F32, (batch, seq, *inner)))
    high = length - 1 if circular else length - seq
    write = None if data.draw(st.booleans()) else data.draw(arrays(I64, (batch,), low=0, high=high))
    check_op("TensorScatter", [cache, update, write],
             {"axis": 1 if data.draw(st.booleans()) else 1 - len(inner) - 2,
              "mode": "circular" if circular else "linear"})


# --- OneHot, TopK, ArgMax/ArgMin ----------------------------------------------------------------

def test_one_hot_by_hand():
    check_op("OneHot", [i64([0, -1, 3]), i64(3), f32([0, 5])], constant=(1,),
             expected=[f32([[5, 0, 0], [0, 0, 5], [0, 0, 0]])])
    check_op("OneHot", [f32([1.0]), f32(2), np.array([2, 7], np.int32)], {"axis": 0}, constant=(1,),
             expected=[np.array([[2], [7]], np.int32)])


@given(shapes(0, 2), st.integers(1, 5), st.data())
def test_one_hot_matches_onnx(shape, depth, data):
    indices = data.draw(arrays(I64, shape, low=-depth - 1, high=depth))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check_op("OneHot", [indices, i64(depth), data.draw(arrays(F32, (2,)))], {"axis": axis}, constant=(1,))


def test_top_k_by_hand():
    x = f32([[1, 3, 3, 2], [4, 4, 0, 4]])
    check_op("TopK", [x, i64([2])], n_outputs=2, constant=(1,),
             expected=[f32([[3, 3], [4, 4]]), i64([[1, 2], [0, 1]])])
    check_op("TopK", [x, i64([3])], {"largest": 0}, n_outputs=2, constant=(1,),
             expected=[f32([[1, 2, 3], [0, 4, 4]]), i64([[0, 3, 1], [2, 0, 1]])])


def test_top_k_opset_1_attribute():
    check_op("TopK", [f32([1, 3, 2])], {"k": 2}, n_outputs=2, opset=1, expected=[f32([3, 2]), i64([1, 2])])


def test_top_k_needs_constant_k():
    with pytest.raises(ShapeError, match="compile-time constant"):
        check_op("TopK", [f32([1, 3, 2]), i64([2])], n_outputs=2)


@given(shapes(1, 3), st.booleans(), st.data())
def test_top_k_matches_onnx(shape, largest, data):
    axis = data.draw(axis_of(len(shape)))
    k = data.draw(st.integers(0, shape[axis]))
    x = data.draw(arrays(F32, shape, low=-3, high=3)).round()  # ties
    check_op("TopK", [x, i64([k])], {"axis": axis, "largest": int(largest)}, n_outputs=2, constant=(1,))


@pytest.mark.parametrize("op,last,want", [("ArgMax", 0, [1, 0]), ("ArgMax", 1, [2, 0]),
                                          ("ArgMin", 0, [0, 1]), ("ArgMin", 1, [0, 2])])
def test_arg_by_hand(op, last, want):
    x = f32([[1, 3, 3], [5, 0, 0]])
    check_op(op, [x], {"axis": 1, "keepdims": 0, "select_last_index": last}, expected=[i64(want)])


@given(st.sampled_from(["ArgMax", "ArgMin"]), shapes(1, 3), st.booleans(), st.booleans(), st.data())
def test_arg_matches_onnx(op, shape, keepdims, last, data):
    x = data.draw(arrays(np.int32, shape, low=-2, high=2))
    check_op(op, [x], {"axis": data.draw(axis_of(len(shape))), "keepdims": int(keepdims),
                       "select_last_index": int(last)})


# --- CumSum, CumProd ----------------------------------------------------------------------------

@pytest.mark.parametrize("op,exclusive,reverse,want", [
    ("CumSum", 0, 0, [1, 3, 6]), ("CumSum", 1, 0, [0, 1, 3]), ("CumSum", 0, 1, [6, 5, 3]),
    ("CumSum", 1, 1, [5, 3, 0]), ("CumProd", 0, 0, [1, 2, 6]), ("CumProd", 1, 1, [6, 3, 1])])
def test_cumulative_by_hand(op, exclusive, reverse, want):
    check_op(op, [f32([1, 2, 3]), i64(0)], {"exclusive": exclusive, "reverse": reverse}, constant=(1,),
             expected=[f32(want)])


@given(st.sampled_from(["CumSum", "CumProd"]), shapes(1, 3), st.sampled_from([F32, np.int32]),
       st.booleans(), st.booleans(), st.data())
def test_cumulative_matches_onnx(op, shape, dtype, exclusive, reverse, data):
    axis = np.array(data.draw(axis_of(len(shape))), data.draw(st.sampled_from([np.int32, I64])))
    check_op(op, [data.draw(arrays(dtype, shape, low=-2, high=2)), axis],
             {"exclusive": int(exclusive), "reverse": int(reverse)}, constant=(1,))


# --- data-dependent shapes ----------------------------------------------------------------------

def test_non_zero_by_hand():
    check_op("NonZero", [f32([[1, 0], [0, 2]])], constant=(0,), expected=[i64([[0, 1], [0, 1]])])


@given(shapes(1, 3), st.booleans(), st.data())
def test_non_zero_matches_onnx(shape, constant, data):  # a runtime input: typed at its upper bound
    x = data.draw(arrays(np.int32, shape, low=-1, high=1))
    check_op("NonZero", [x], constant=(0,) if constant else ())


def test_compress_by_hand():
    data = f32([[1, 2], [3, 4], [5, 6]])
    check_op("Compress", [data, np.array([False, True], bool)], {"axis": 0}, constant=(1,),
             expected=[f32([[3, 4]])])
    check_op("Compress", [data, np.array([True, False], bool)], {"axis": -1}, constant=(1,),
             expected=[f32([[1], [3], [5]])])


@given(shapes(1, 3), st.booleans(), st.data())
def test_compress_matches_onnx(shape, constant, data):
    axis = data.draw(st.one_of(st.none(), axis_of(len(shape))))
    n = int(np.prod(shape)) if axis is None else shape[axis]
    condition = data.draw(arrays(np.bool_, (data.draw(st.integers(1, n)),)))
    check_op("Compress", [data.draw(arrays(F32, shape)), condition], {} if axis is None else {"axis": axis},
             constant=(1,) if constant else ())


def test_unique_by_hand():
    x = np.array([2, 1, 1, 3, 4, 3], np.int32)
    check_op("Unique", [x], {"sorted": 0}, n_outputs=4, constant=(0,),
             expected=[np.array([2, 1, 3, 4], np.int32), i64([0, 1, 3, 4]), i64([0, 1, 1, 2, 3, 2]),
                       i64([1, 2, 2, 1])])
    x = f32([[1, 0, 0], [1, 0, 0], [2, 3, 4]])
    check_op("Unique", [x], {"axis": 0}, n_outputs=4, constant=(0,),
             expected=[f32([[1, 0, 0], [2, 3, 4]]), i64([0, 2]), i64([0, 0, 1]), i64([2, 1])])
    x = f32([[3, 0, 3], [2, 1, 2]])
    check_op("Unique", [x], {"axis": 1, "sorted": 0}, n_outputs=4, constant=(0,),
             expected=[f32([[3, 0], [2, 1]]), i64([0, 1]), i64([0, 1, 0]), i64([2, 1])])


@given(shapes(1, 3, max_side=4), st.booleans(), st.data())
def test_unique_matches_onnx(shape, sort, data):
    attrs = {"sorted": int(sort)}
    if data.draw(st.booleans()):  # onnx's reference gets unsorted outputs right along axis 0 only
        attrs["axis"] = data.draw(axis_of(len(shape))) if sort else 0
    elif not sort:
        shape = (int(np.prod(shape)),)  # and of flattened X only if X is 1-D
    x = data.draw(arrays(np.int64, shape, low=0, high=2))
    check_op("Unique", [x], attrs, n_outputs=4, constant=(0,) if data.draw(st.booleans()) else ())
