"""The interpreter on hand-built kernels: what each statement means, integer semantics, which loops it
vectorizes, and the errors it raises (out-of-range accesses, races, unknown calls)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensoregg.errors import CompileError, GuardViolation, UnsupportedOperator
from tensoregg.ir import OPS, Graph, Node, TensorType
from tensoregg.ir.compute import INDEX, Buffer, Call, Var, call, const
from tensoregg.ir.loops import For, Kernel, Local, Store, statements
from tensoregg.ir.lower import lower_node
from tensoregg.targets.interp.analysis import plan_kernel
from tensoregg.targets.interp.executor import KernelExecutor
from tensoregg.testing import arrays

F32 = np.dtype(np.float32)


def idx(n):
    return const(n, INDEX)


def run(kernel, *data, readonly=()):
    """Run ``kernel`` on ``data`` (one array per param, written in place)."""
    executor = KernelExecutor(kernel, f"kernel {kernel.name}", {}, {id(kernel.params[k]) for k in readonly})
    executor.run([a.reshape(-1) for a in data])


def copy_kernel(n_x, n_y, stop, kind="parallel"):
    """y[i] = x[i] for i < stop."""
    x, y, i = Buffer("x", F32, (n_x,)), Buffer("y", F32, (n_y,)), Var("i")
    return Kernel("copy", [x, y], [For(i, idx(0), idx(stop), [Store(y, (i,), x[i])], kind)], [y])


@pytest.mark.parametrize("kind", ["parallel", "serial"])
def test_a_loop_copies(kind):
    x = np.arange(5, dtype=F32)
    y = np.zeros(5, F32)
    run(copy_kernel(5, 5, 5, kind), x, y)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("kind", ["parallel", "serial"])
def test_an_out_of_range_store_names_the_kernel_and_buffer(kind):
    x, y = np.arange(6, dtype=F32), np.zeros(5, F32)
    message = r"kernel copy: store of y out of range: index on axis 0 5 not in \[0, 5\)"
    with pytest.raises(GuardViolation, match=message):
        run(copy_kernel(6, 5, 6, kind), x, y)


def test_an_out_of_range_load_names_the_kernel_and_buffer():
    with pytest.raises(GuardViolation, match=r"kernel copy: load of x out of range"):
        run(copy_kernel(4, 5, 5), np.zeros(4, F32), np.zeros(5, F32))


def test_a_serial_loop_that_reads_what_it_wrote_runs_in_order():
    """y[i] = y[max(i - 1, 0)] + x[i]: a prefix sum, which a vectorized loop would get wrong; its
    store past the end is caught."""
    x, y, i = Buffer("x", F32, (6,)), Buffer("y", F32, (5,)), Var("i")

    def kernel(stop):
        body = [Store(y, (i,), call("add", y[call("max", i - idx(1), idx(0))], x[i]))]
        return Kernel("scan", [x, y], [For(i, idx(0), idx(stop), body)], [y])
    assert not plan_kernel(kernel(5), {}).vectorized
    data, out = np.arange(1, 7, dtype=F32), np.zeros(5, F32)
    run(kernel(5), data, out)
    np.testing.assert_array_equal(out, [1, 3, 6, 10, 15])
    with pytest.raises(GuardViolation, match="kernel scan: store of y"):
        run(kernel(6), data, np.zeros(5, F32))


def test_every_axis_is_checked_and_a_flat_index_against_the_whole_buffer():
    x, y, i, j = Buffer("x", F32, (8,)), Buffer("y", F32, (2, 3)), Var("i"), Var("j")
    rows = For(j, idx(0), idx(1), [For(i, idx(0), idx(4), [Store(y, (j, i), x[i])])])
    per_axis = Kernel("axes", [x, y], [rows])
    with pytest.raises(GuardViolation, match=r"store of y out of range: index on axis 1 3 not in \[0, 3\)"):
        run(per_axis, np.zeros(8, F32), np.zeros((2, 3), F32))

    def flat(stop):
        return Kernel("flat", [x, y], [For(i, idx(0), idx(stop), [Store(y, (idx(0), i), x[i])], "parallel")])
    out = np.zeros((2, 3), F32)
    run(flat(6), np.arange(8, dtype=F32), out)
    np.testing.assert_array_equal(out.reshape(-1), np.arange(6))
    with pytest.raises(GuardViolation, match=r"store of y out of range: flat index 6 not in \[0, 6\)"):
        run(flat(7), np.arange(8, dtype=F32), out)


def test_lanes_outside_a_ragged_loop_may_lie_outside_the_buffer():
    """for parallel j < 2: for i < min(3, 5 - 3j): y[3j + i] = x[3j + i]: the lanes (j=1, i=2) do not
    run, and index element 5 of 5."""
    x, y, i, j = Buffer("x", F32, (5,)), Buffer("y", F32, (5,)), Var("i"), Var("j")
    at = j * idx(3) + i
    inner = For(i, idx(0), call("min", idx(3), idx(5) - j * idx(3)), [Store(y, (at,), x[at])])
    kernel = Kernel("ragged", [x, y], [For(j, idx(0), idx(2), [inner], "parallel")])
    assert {id(inner)} <= plan_kernel(kernel, {}).vectorized
    data, out = np.arange(1, 6, dtype=F32), np.zeros(5, F32)
    run(kernel, data, out)
    np.testing.assert_array_equal(out, data)


def test_data_dependent_indices_are_checked():
    x, pos, y, i = Buffer("x", F32, (4,)), Buffer("pos", INDEX, (3,)), Buffer("y", F32, (3,)), Var("i")
    kernel = Kernel("gather", [x, pos, y], [For(i, idx(0), idx(3), [Store(y, (i,), x[pos[i]])], "parallel")])
    out = np.zeros(3, F32)
    run(kernel, np.arange(10, 14, dtype=F32), np.array([3, 0, 2]), out)
    np.testing.assert_array_equal(out, [13, 10, 12])
    with pytest.raises(GuardViolation, match="load of x out of range: index on axis 0 -1"):
        run(kernel, np.arange(4, dtype=F32), np.array([3, -1, 2]), out)


def test_each_lane_has_its_own_local_and_fused_loops_unpack():
    """for parallel p = (a < 2, b < 3): local t[2]: t[0] = x[p]; t[1] = 2 t[0]; y[a, b] = t[1]."""
    x, y, t = Buffer("x", F32, (6,)), Buffer("y", F32, (2, 3)), Buffer("t", F32, (2,))
    p, a, b = Var("p"), Var("a"), Var("b")
    body = [Store(t, (idx(0),), x[p]), Store(t, (idx(1),), call("mul", t[idx(0)], const(2, F32))),
            Store(y, (a, b), t[idx(1)])]
    kernel = Kernel("fused", [x, y], [For(p, idx(0), idx(6), [Local(t, body)], "parallel", ((a, 2), (b, 3)))])
    out = np.zeros((2, 3), F32)
    run(kernel, np.arange(6, dtype=F32), out)
    np.testing.assert_array_equal(out.reshape(-1), 2 * np.arange(6))


def test_a_variable_bound_by_several_loops():
    """One Var bound by loops over different ranges, vectorized and serial, re-entered: each loop
    sees its own binding (no value cached under another loop's binding is reused)."""
    x, y, z = Buffer("x", F32, (4,)), Buffer("y", F32, (4,)), Buffer("z", F32, (1,))
    i, t = Var("i"), Var("t")
    read = x[i]  # one Load object, in a vectorized loop and in a serial one
    body = [For(i, idx(0), idx(4), [Store(y, (i,), call("add", read, x[t]))]),
            For(i, idx(0), idx(4), [Store(z, (idx(0),), call("add", z[idx(0)], read))]),
            For(i, idx(0), idx(2), [Store(y, (i,), x[i + idx(1)])])]
    kernel = Kernel("rebind", [x, y, z], [For(t, idx(0), idx(2), body)])
    assert len(plan_kernel(kernel, {}).vectorized) == 2
    data, out, total = np.array([1, 2, 4, 8], F32), np.zeros(4, F32), np.zeros(1, F32)
    run(kernel, data, out, total)
    np.testing.assert_array_equal(out, [2, 4, 6, 10])
    assert total[0] == 30


def test_lanes_storing_different_values_into_one_element_are_a_race():
    x, y, i = Buffer("x", F32, (4,)), Buffer("y", F32, (1,)), Var("i")
    kernel = Kernel("race", [x, y], [For(i, idx(0), idx(4), [Store(y, (idx(0),), x[i])], "parallel")])
    out = np.zeros(1, F32)
    run(kernel, np.full(4, 7, F32), out)  # the same value from every lane: no race
    assert out[0] == 7
    with pytest.raises(CompileError, match="kernel race: iterations of a parallel loop store different"):
        run(kernel, np.arange(4, dtype=F32), out)


def test_unknown_calls_and_writes_to_constants_are_refused():
    x, y, i = Buffer("x", F32, (2,)), Buffer("y", F32, (2,)), Var("i")
    odd = Kernel("odd", [x, y], [For(i, idx(0), idx(2), [Store(y, (i,), Call("frobnicate", (x[i],), F32))])])
    with pytest.raises(UnsupportedOperator, match=r"call frobnicate.*kernel odd"):
        run(odd, np.zeros(2, F32), np.zeros(2, F32))
    ints = Buffer("n", np.dtype(np.int32), (2,))
    squares = For(i, idx(0), idx(2), [Store(ints, (i,), call("pow", ints[i], ints[i]))])
    power = Kernel("pow", [ints], [squares], [ints])
    with pytest.raises(UnsupportedOperator, match=r"call pow.*int32.*kernel pow"):
        run(power, np.zeros(2, np.int32))
    with pytest.raises(CompileError, match="kernel copy: stores into y, a graph input or constant"):
        run(copy_kernel(2, 2, 2), np.zeros(2, F32), np.zeros(2, F32), readonly=[1])


def test_row_form_reductions_vectorize_the_row_and_keep_the_reduction_in_order():
    """A MatMul's kernel: the parallel loop and the row loops vectorize, the k loop runs in order."""
    graph = Graph({"a": TensorType(F32, (3, 70)), "b": TensorType(F32, (70, 130))}, {},
                  [Node("MatMul", ("a", "b"), ("y",))], ["y"])
    kernel = lower_node(OPS[("", "MatMul")], graph.nodes[0], graph.types, {}).kernel
    plan = plan_kernel(kernel, {})
    loops = [s for s in statements(kernel.body) if isinstance(s, For)]
    serial = [s for s in loops if id(s) not in plan.vectorized]
    assert len(serial) == 1 and serial[0].stop.value == 70  # the reduction over k
    stores = [s for s in statements(kernel.body) if isinstance(s, Store)]
    assert all(id(s) in plan.proven for s in stores)


INTS = [np.int8, np.uint8, np.int32, np.uint32, np.int64]


def c_reference(fn, a, b, dtype):
    """``fn`` on Python ints as the native code computes it (see interp's numerics)."""
    bits, signed = np.dtype(dtype).itemsize * 8, np.dtype(dtype).kind == "i"

    def wrap(v):
        v &= (1 << bits) - 1
        return v - (1 << bits) if signed and v >> (bits - 1) else v
    if fn in ("div", "rem"):
        if b == 0 or (signed and b == -1):
            return 0 if fn == "rem" or b == 0 else wrap(-a)
        q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        return wrap(q) if fn == "div" else wrap(a - q * b)
    amount = b & ((1 << bits) - 1)
    if amount >= bits:
        return 0
    unsigned = a & ((1 << bits) - 1)
    return wrap(unsigned << amount if fn == "shl" else unsigned >> amount)


@given(st.sampled_from(INTS), st.sampled_from(["div", "rem", "shl", "shr"]), st.data())
def test_integer_division_and_shifts_are_cs_with_numpys_guards(dtype, fn, data):
    a = data.draw(arrays(dtype, (16,)))
    b = data.draw(arrays(dtype, (16,)))
    if fn in ("shl", "shr"):
        b[:8] = np.arange(8).astype(dtype) * (np.dtype(dtype).itemsize * 2)
    else:
        b[:2] = [0, -1 if np.dtype(dtype).kind == "i" else 1]
    x, y, z, i = (Buffer("a", np.dtype(dtype), (16,)), Buffer("b", np.dtype(dtype), (16,)),
                  Buffer("z", np.dtype(dtype), (16,)), Var("i"))
    kernel = Kernel(fn, [x, y, z], [For(i, idx(0), idx(16), [Store(z, (i,), call(fn, x[i], y[i]))])])
    out = np.zeros(16, dtype)
    run(kernel, a, b, out)
    want = [c_reference(fn, int(p), int(q), dtype) for p, q in zip(a, b)]
    np.testing.assert_array_equal(out.astype(object), np.array(want, dtype=object))
