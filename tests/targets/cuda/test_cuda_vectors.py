"""16-byte element-wise kernels (``targets/cuda/schedule.py``): where a stage stores float32 or
16-bit floats at the element's own offset, each thread loads the operands read there and stores its
results 16 bytes at a time (``VectorCopy``), the rest of the extent one element at a time; the
kernels compute the reference under the GPU emulation and in their CUDA C on this CPU, and build with
NVRTC for sm_80 and sm_90 without local memory; a copy that is not aligned is refused."""

import ml_dtypes
import numpy as np
import pytest

from tensoregg.errors import GuardViolation
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.ir.compute import const
from tensoregg.ir.intrinsics import VectorCopy
from tensoregg.ir.loops import Invoke, Ref, statements
from tensoregg.runtime.cuda import EMULATE
from tensoregg.targets.cuda import GPUS
from tensoregg.targets.cuda.host import check_on_host
from tensoregg.targets.cuda.machines import description
from tensoregg.targets.cuda.nvrtc import nvrtc_missing
from tensoregg.targets.cuda.program import CudaProgram
from tensoregg.targets.interp.executor import KernelExecutor
from tensoregg.testing import single_op_model

H100 = GPUS["sm_90"]
R = np.random.default_rng(4)
needs_nvrtc = pytest.mark.skipif(nvrtc_missing() is not None, reason=str(nvrtc_missing()))
F32, F16, BF16 = np.float32, np.float16, ml_dtypes.bfloat16


def data(dtype, *shape):
    return R.standard_normal(shape).astype(dtype)


CASES = [  # (op, inputs, attrs, vectors: the 16-byte copies of a thread, width)
    ("Add", [data(F32, 3, 40), data(F32, 40)], {}, 2, 4),         # whole vectors; a broadcast operand
    ("Mul", [data(F32, 3, 41), data(F32, 3, 41)], {}, 3, 4),      # a tail of 3
    ("Relu", [data(F16, 5, 17)], {}, 2, 8),                       # halves, a tail of 5
    ("Sigmoid", [data(BF16, 64)], {}, 2, 8),
    ("Transpose", [data(F32, 6, 8)], {"perm": [1, 0]}, 1, 4),     # strided loads: the store alone
    ("Add", [data(F32, 3), data(F32, 3)], {}, 0, 4),              # less than a vector
    ("Cast", [data(F32, 4, 8)], {"to": 10}, 1, 8),                # to float16: its store
]


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv(EMULATE, "1")


def program_of(op, inputs, attrs):
    graph = import_onnx(single_op_model(op, inputs, attrs))
    return graph, CudaProgram(graph, description(H100), H100)


def vector_copies(program):
    return [s for low in program.program.lowered for s in statements(low.kernel.body)
            if isinstance(s, Invoke) and isinstance(s.intrinsic, VectorCopy)]


@needs_nvrtc
@pytest.mark.parametrize("op, inputs, attrs, vectors, width", CASES,
                         ids=[f"{c[0]}-{c[1][0].dtype}-{'x'.join(map(str, c[1][0].shape))}" for c in CASES])
def test_elementwise_kernels_move_16_bytes_and_compute_the_reference(op, inputs, attrs, vectors, width):
    graph, program = program_of(op, inputs, attrs)
    copies = vector_copies(program)
    assert len(copies) == vectors and all(c.intrinsic.width == width for c in copies)
    feeds = {f"in{i}": a for i, a in enumerate(inputs)}
    want = run_graph(graph, dict(feeds))[0]
    got = program.run(feeds)[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(check_on_host(program, feeds)[0], want)
    for arch in ("sm_80", "sm_90"):
        for name, r in program.compile_for(arch).resources.items():
            assert r.stack_bytes == r.spill_stores == 0, (arch, name, r)


@needs_nvrtc
def test_a_vector_copy_not_aligned_is_refused():
    _, program = program_of("Add", [data(F32, 3, 40), data(F32, 40)], {})
    load = vector_copies(program)[0]
    source = load.args[1]
    load.args = (load.args[0], Ref(source.buffer, source.offset + const(1, source.offset.dtype)))
    kernel = program.program.lowered[0].kernel
    views = [np.zeros(b.size, b.dtype) for b in kernel.params]
    with pytest.raises(GuardViolation, match=r"in0 \(120 elements\): outside it, or not aligned"):
        KernelExecutor(kernel, "kernel k0", {}, set()).run(views)
