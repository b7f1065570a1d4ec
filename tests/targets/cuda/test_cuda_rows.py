"""The row-reduction template (``targets/cuda/rows.py``: a warp per output element, lanes striding the
row, a butterfly of warp shuffles): Softmax, LayerNormalization and last-axis reductions in it compute
the reference's result within float32's tolerance under the GPU emulation (race checker on), their
CUDA C run on this CPU (the warp's threads as fibers meeting at each shuffle) gives the emulation's
bits where the C has no fused multiply-add or libm function (the emulation rounds the product of a
``contract`` store and computes ``exp`` with numpy: see ``check``), they build with NVRTC for sm_80
and sm_90 without spills; the cost model keeps short reductions on a thread per element."""

import numpy as np
import pytest

import tensoregg
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.ir.compute import Buffer, call, const, fresh
from tensoregg.ir.compute.expr import idx
from tensoregg.ir.loops import For, Local, Store
from tensoregg.runtime.cuda import EMULATE
from tensoregg.targets.cuda import GPUS
from tensoregg.targets.cuda.codegen import PRELUDE
from tensoregg.targets.cuda.cost import rows_seconds
from tensoregg.targets.cuda.host import check_on_host
from tensoregg.targets.cuda.machines import description
from tensoregg.targets.cuda.nvrtc import nvrtc_missing
from tensoregg.targets.cuda.program import CudaProgram
from tensoregg.targets.cuda.rows import RowStage, lower, row_stage
from tensoregg.testing import single_op_model

H100 = GPUS["sm_90"]
R = np.random.default_rng(3)
needs_nvrtc = pytest.mark.skipif(nvrtc_missing() is not None, reason=str(nvrtc_missing()))


def f(*shape):
    return R.standard_normal(shape).astype(np.float32)


AXIS = np.array([-1])
CASES = [  # op, inputs, attrs, constant inputs, whether the host's bits are the emulation's
    ("ReduceSum", [f(6, 1003), AXIS], {}, (1,), True),
    ("ReduceMax", [f(3, 2, 1003), AXIS], {"keepdims": 0}, (1,), True),
    ("ReduceSum", [f(40, 50, 3), np.array([0, 1])], {}, (1,), True),  # a nest of two axes
    ("Softmax", [f(5, 1003)], {}, (), False),
    ("LayerNormalization", [f(3, 1515), f(1515), f(1515)], {"axis": -1}, (), False),
]


def shuffles(program):
    """The warp shuffles the program's kernels make (the prelude's definition aside)."""
    return program.source.count("te_shfl_xor(") - PRELUDE.count("te_shfl_xor(")


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv(EMULATE, "1")


@needs_nvrtc
@pytest.mark.parametrize("op, inputs, attrs, constant, exact", CASES, ids=[c[0] for c in CASES])
def test_row_reductions_run_a_warp_per_element(op, inputs, attrs, constant, exact):
    graph = import_onnx(single_op_model(op, inputs, attrs, constant=constant))
    program = CudaProgram(graph, description(H100), H100)
    assert any(r.warp for r in program.rows), [str(r) for r in program.rows]
    assert shuffles(program) > 0
    feeds = {f"in{i}": a for i, a in enumerate(inputs) if i not in constant}
    want = run_graph(graph, dict(feeds))[0]
    emulated = program.run(feeds)[0]
    np.testing.assert_allclose(emulated, want, rtol=1e-5, atol=1e-5)
    host = check_on_host(program, feeds)[0]
    if exact:
        np.testing.assert_array_equal(host.view(np.uint32), emulated.view(np.uint32))
    else:
        np.testing.assert_allclose(host, emulated, rtol=1e-5, atol=1e-6)
    for arch in ("sm_80", "sm_90"):
        for name, r in program.compile_for(arch).resources.items():
            assert r.spill_stores == r.spill_loads == r.stack_bytes == 0, (arch, name, r)


@needs_nvrtc
def test_short_reductions_stay_a_thread_per_element():
    """A global average pool of 7 x 7 maps: rows of 7 terms, where a warp's butterfly costs more than
    the terms it shares out."""
    x = f(1, 64, 7, 7)
    graph = import_onnx(single_op_model("GlobalAveragePool", [x], {}))
    program = CudaProgram(graph, description(H100), H100)
    assert program.rows and not any(r.warp for r in program.rows)
    assert shuffles(program) == 0
    np.testing.assert_allclose(program.run({"in0": x})[0], x.mean(axis=(2, 3), keepdims=True), rtol=1e-5,
                               atol=1e-6)


def test_the_cost_model_prices_a_warp_per_element_against_a_thread():
    """(outputs, terms, a term's bytes with a thread and with a warp per element, warp?)"""
    cases = [(3584, 7, 4, 32, False), (8, 4096, 32, 4, True), (1024, 256, 32, 4, True),
             (1024, 256, 4, 32, False), (64896, 9, 8, 32, False)]  # the last: a 3x3 MaxPool, stride 2
    acc = Buffer("acc", np.dtype(np.float32), (1,))
    for outputs, terms, thread_bytes, warp_bytes, warp in cases:
        stage = For(fresh("p"), idx(0), idx(outputs), [], "parallel")
        row = RowStage(stage, [acc], terms, thread_bytes=thread_bytes, warp_bytes=warp_bytes)
        thread_s, warp_s = (rows_seconds(row, H100, warp=w) for w in (False, True))
        assert (warp_s < thread_s) == warp, (outputs, terms, thread_s, warp_s)


def test_explain_lists_both_templates_of_each_row_reduction():
    model = single_op_model("Softmax", [f(4, 2000)], {})
    e = tensoregg.explain(model, "cuda")
    head = "row reductions (predicted time of each template, * chosen):"
    text = str(e)
    assert head in text
    blocks = text.split(head)[1].split("Softmax %")[1:]
    assert len(blocks) == len(e.plan.rows) == 4  # max and sum: the partials, then the rows
    for block, row in zip(blocks, e.plan.rows):
        thread, warp = block.splitlines()[1:3]
        assert "a thread per element" in thread and "a warp per element" in warp
        assert (warp.lstrip().startswith("*"), thread.lstrip().startswith("*")) == (row.warp, not row.warp)
    assert any(r.warp for r in e.plan.rows)
    assert e.to_dict()["plan"]["rows"][0]["terms"] == e.plan.rows[0].terms


def test_a_sum_that_starts_elsewhere_than_zero_keeps_a_thread_per_element():
    """Every lane starts from the accumulator's initial value: from 1, a warp would add 32."""
    f32 = np.dtype(np.float32)
    x, y, acc = Buffer("x", f32, (4, 64)), Buffer("y", f32, (4,)), Buffer("acc", f32, (1,))
    p, r, zero = fresh("p"), fresh("r"), (idx(0),)

    def stage(start):
        add = Store(acc, zero, call("add", acc[idx(0)], x[p, r]), contract=True)
        total = Store(y, (p,), acc[idx(0)])
        body = [Store(acc, zero, const(start, f32)), For(r, idx(0), idx(64), [add]), total]
        return For(p, idx(0), idx(4), [Local(acc, body)], "parallel")
    assert isinstance(lower(row_stage(stage(0.0))), For)
    assert row_stage(stage(1.0)) is not None and lower(row_stage(stage(1.0))) is None
