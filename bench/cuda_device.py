"""The cuda target on a real GPU: numerics and speed, one table, within 10 minutes on an H100.

    python bench/cuda_device.py [MODEL ...] [--runs N] [--json out.json]

Meant for a lent H100/H200 (``../shared/notes/gpu.md``; the device tool), whose Python (3.12) has
torch, cuda-bindings, NVRTC, numpy, onnx, onnxruntime and llvmlite but not egglog. Bring egglog as
wheels (the device tool's README: ``pip download --no-deps --only-binary=:all: --python-version
3.12 ... -d .whl egglog==13.2.0`` and its import-time needs black, graphviz, anywidget,
opentelemetry-api, cloudpickle, with theirs), carry ``.whl``, install them with ``--target`` and put
that and the repository on PYTHONPATH; then run this script.

For each model (default: the example, squeezenet, shufflenet, resnet50 among the light zoo models,
seeded random weights): compiled for ``cuda`` (the device's architecture read through the driver),
run on the device, compared with onnxruntime on the CPU (relative L2 error of every output; above
1e-4 flagged MISMATCH, 3e-3 for the GEMMs with tf32 or float16 inputs); its kernels' time (CUDA
events around all launches, median of N) beside the same architecture in torch eager on the GPU
where torchvision has it (resnet50, squeezenet1_0, shufflenet_v2: random weights, the time is what
is compared). Then GEMM 4096^3 through a one-MatMul model against ``torch.matmul`` (cuBLAS) in
float32, tf32 (``TENSOREGG_CUDA_TF32=1`` against ``allow_tf32``) and float16 (both on the tensor
cores). Softmax and LayerNormalization rows (a warp per row element reduction) against torch, and a
torch CUDA tensor run without a copy (the output a torch CUDA tensor). ratio = tensoregg / torch
(below 1: tensoregg is faster).

Then old against new GEMM templates in the same run (``template_rows``): for GEMM 4096^3 in
float16 and tf32 and a 1000 x 1000 x 1000 float32, the tile the cost model ranks first with one
shared stage as it was (``old``: loads and stores, fragments element by element), with ``ldmatrix``
(float16), and with two stages (``new``: ``cp.async`` double buffering), each against
``torch.matmul``, with the cost model's predicted time beside: ``new/old`` below 1 means the new
form pays.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TORCHVISION = {"resnet50": "resnet50", "squeezenet": "squeezenet1_0", "shufflenet": "shufflenet_v2_x1_0"}


def model_of(name: str) -> Any:
    from tensoregg.testing import light_model

    return str(ROOT / "examples" / "tinycnn.onnx") if name == "example" else light_model(name)


def tensoregg_run(model: Any, runs: int) -> tuple[list[np.ndarray], float, dict[str, np.ndarray], float]:
    """(outputs, median kernel seconds, feeds, compile seconds) of ``model`` on the device."""
    import tensoregg
    from tensoregg.runtime.cuda import DriverBackend
    from tensoregg.targets.cuda.export import cuda_code

    start = time.perf_counter()
    module = tensoregg.compile(model, "cuda")
    compiled = time.perf_counter() - start
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(d) for n, s, d in
             zip(module.input_names, module.input_shapes, module.input_dtypes)}
    code = cuda_code(module.program)
    backend = DriverBackend(code)
    outputs = code.run_with(backend, feeds)
    return outputs, statistics.median(backend.kernel_seconds(code, runs)), feeds, compiled


def onnxruntime_outputs(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnx
    import onnxruntime

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else Path(model).read_bytes()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def torch_seconds(fn: Any, runs: int) -> float:
    import torch

    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(runs):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def torchvision_seconds(name: str, shape: tuple[int, ...], runs: int) -> float | None:
    import torch
    import torchvision

    if name not in TORCHVISION:
        return None
    net = getattr(torchvision.models, TORCHVISION[name])().eval().cuda()
    x = torch.randn(shape, device="cuda")
    with torch.no_grad():
        return torch_seconds(lambda: net(x), runs)


def relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    def one(g: np.ndarray, w: np.ndarray) -> float:
        w64 = w.astype(np.float64)
        return float(np.linalg.norm(g.astype(np.float64) - w64) / max(float(np.linalg.norm(w64)), 1e-30))
    return max(one(g, w) for g, w in zip(got, want))


def gemm_rows(runs: int) -> list[dict[str, Any]]:
    import torch

    from tensoregg.targets.cuda import TF32
    from tensoregg.testing import single_op_model

    n = 4096
    rng = np.random.default_rng(0)  # the feeds tensoregg_run draws: the same a and b
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    want = (ta.double() @ tb.double()).cpu().numpy()
    rows = []
    for kind, dtype, tf32 in [("fp32", torch.float32, False), ("tf32", torch.float32, True),
                              ("fp16", torch.float16, False)]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        x, y = ta.to(dtype), tb.to(dtype)
        theirs = torch_seconds(lambda x=x, y=y: x @ y, runs)
        os.environ[TF32] = "1" if tf32 else "0"
        ab = [m.astype(np.float16 if kind == "fp16" else np.float32) for m in (a, b)]
        outputs, ours, _, _ = tensoregg_run(single_op_model("MatMul", ab, {}), runs)
        rows.append({"case": f"GEMM {n}^3 {kind}", "error": relative_error(outputs, [want]),
                     "tolerance": 1e-4 if kind == "fp32" else 3e-3,  # inputs rounded to 10 mantissa bits
                     "tensoregg_ms": ours * 1e3, "torch_ms": theirs * 1e3, "tflops": 2 * n ** 3 / ours / 1e12,
                     "ratio": ours / theirs})
    return rows


def reduction_rows(runs: int) -> list[dict[str, Any]]:
    """Softmax and LayerNormalization over rows of 4096 (the row-reduction template) against torch's
    kernels; then a torch CUDA tensor in, read where it lies (``__dlpack__``/``__cuda_array_interface__``),
    a torch CUDA tensor out."""
    import torch

    import tensoregg
    from tensoregg.testing import single_op_model

    rng = np.random.default_rng(0)  # the feeds tensoregg_run draws
    x = rng.standard_normal((1024, 4096)).astype(np.float32)
    tx = torch.from_numpy(x).cuda()
    rows = []
    for op, attrs, theirs in [("Softmax", {}, lambda: torch.softmax(tx, -1)),
                              ("LayerNormalization", {"axis": -1},
                               lambda: torch.nn.functional.layer_norm(tx, (4096,)))]:
        scale = [np.ones(4096, np.float32), np.zeros(4096, np.float32)] if op != "Softmax" else []
        model = single_op_model(op, [x, *scale], attrs, constant=(1, 2) if scale else ())
        outputs, ours, _, _ = tensoregg_run(model, runs)
        want = theirs().double().cpu().numpy()
        torch_s = torch_seconds(theirs, runs)
        rows.append({"case": f"{op} 1024x4096", "error": relative_error(outputs, [want]),
                     "tensoregg_ms": ours * 1e3, "torch_ms": torch_s * 1e3, "ratio": ours / torch_s})
    (out,) = tensoregg.compile(single_op_model("Softmax", [x], {}), "cuda").run(tx)
    if not (isinstance(out, torch.Tensor) and out.is_cuda):
        rows.append({"case": "zero-copy torch", "failed": f"torch CUDA tensor in, {type(out).__name__} out"})
    else:
        want = torch.softmax(tx, -1).cpu().numpy()
        rows.append({"case": "zero-copy torch", "error": relative_error([out.cpu().numpy()], [want])})
    return rows


def forced_code(model: Any, schedule: Any) -> Any:
    """The ``CudaCode`` of ``model`` with its MatMul or Gemm in ``schedule``, its other nodes as the
    cuda target lowers them (no graph optimization)."""
    from dataclasses import replace

    from tensoregg.frontends.onnx import import_onnx
    from tensoregg.targets.cuda import chosen_gpu
    from tensoregg.targets.cuda.export import cuda_code
    from tensoregg.targets.cuda.machines import description
    from tensoregg.targets.cuda.program import CudaProgram

    graph = import_onnx(model)
    graph.nodes = [replace(node, schedule=schedule) if node.op in ("MatMul", "Gemm") else node
                   for node in graph.nodes]
    gpu = chosen_gpu()
    return cuda_code(CudaProgram(graph, description(gpu), gpu))


def forced_run(model: Any, schedule: Any, runs: int) -> tuple[list[np.ndarray], float]:
    """(outputs, median kernel seconds) of ``forced_code(model, schedule)`` on the device."""
    from tensoregg.runtime.cuda import DriverBackend

    code = forced_code(model, schedule)
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in code.inputs}
    backend = DriverBackend(code)
    outputs = code.run_with(backend, feeds)
    return outputs, statistics.median(backend.kernel_seconds(code, runs))


def old_and_new(problem: Any) -> list[tuple[Any, float]]:
    """The tile the cost model ranks first with one shared stage as the template was before
    ``cp.async`` and ``ldmatrix`` (fragments loaded element by element), with ``ldmatrix`` alone
    (16-bit data), and with both (two stages), each with its predicted seconds."""
    from dataclasses import replace

    from tensoregg.targets.cuda import chosen_gpu
    from tensoregg.targets.cuda.cost import mma_seconds, price, tiles_seconds
    from tensoregg.targets.cuda.mma import TensorCoreTiles

    gpu = chosen_gpu()
    (priced,) = price([problem], gpu)
    best = next(s for s, _ in priced if getattr(s, "stages", 0) == 1)
    if not isinstance(best, TensorCoreTiles):
        return [(t, tiles_seconds(problem, t, gpu)) for t in (best, replace(best, stages=2))]  # type: ignore
    forms = [replace(best, ldmatrix=False), *([best] if best.ldmatrix else []), replace(best, stages=2)]
    return [(t, mma_seconds(problem, t, gpu)) for t in forms]


def template_rows(runs: int) -> list[dict[str, Any]]:
    """Old (one shared stage) against new (two, ``cp.async``) GEMM templates, same tile, same run."""
    import torch

    from tensoregg.ir.schedules import GemmProblem
    from tensoregg.targets.cuda import TF32
    from tensoregg.testing import single_op_model

    rows = []
    for kind, n in [("fp16", 4096), ("tf32", 4096), ("fp32", 1000)]:
        os.environ[TF32] = "1" if kind == "tf32" else "0"
        torch.backends.cuda.matmul.allow_tf32 = kind == "tf32"
        dtype = np.float16 if kind == "fp16" else np.float32
        rng = np.random.default_rng(0)  # the feeds forced_run draws: the same a and b
        a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        want = (ta.double() @ tb.double()).cpu().numpy()
        theirs = torch_seconds(lambda ta=ta, tb=tb: ta @ tb, runs)
        forms = old_and_new(GemmProblem(1, n, n, n, dtype=np.dtype(dtype).name))
        first: float | None = None
        for k, (t, predicted) in enumerate(forms):
            case = f"{kind} {n}^3 {'old' if k == 0 else 'new' if k == len(forms) - 1 else 'ldmatrix'}"
            try:
                outputs, ours = forced_run(single_op_model("MatMul", [a, b], {}), t, runs)
            except Exception as exc:  # one template's failure is a row
                rows.append({"case": case, "failed": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            row = {"case": case, "schedule": str(t), "error": relative_error(outputs, [want]),
                   "tolerance": 1e-4 if kind == "fp32" else 3e-3, "tensoregg_ms": ours * 1e3,
                   "torch_ms": theirs * 1e3, "ratio": ours / theirs, "predicted_ms": predicted * 1e3}
            if k == 0:
                first = ours
            elif first is not None:
                row["new/old"] = ours / first
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["example", "squeezenet", "shufflenet", "resnet50"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    from tensoregg.runtime.cuda import device_facts, device_missing

    missing = device_missing()
    if missing:
        raise SystemExit(missing)
    facts = device_facts()
    print(f"device: {facts['name']} ({facts['arch']}, {facts['sms']} SMs)", flush=True)
    rows: list[dict[str, Any]] = []
    for name in args.models:
        try:
            model = model_of(name)
            outputs, seconds, feeds, compiled = tensoregg_run(model, args.runs)
            error = relative_error(outputs, onnxruntime_outputs(model, feeds))
            shape = next(iter(feeds.values())).shape
            theirs = torchvision_seconds(name, shape, args.runs)
            rows.append({"case": name, "error": error, "compile_s": compiled, "tensoregg_ms": seconds * 1e3,
                         "torch_ms": theirs and theirs * 1e3, "ratio": theirs and seconds / theirs})
        except Exception as exc:  # one model's failure is a row, not the end of the run
            rows.append({"case": name, "failed": f"{type(exc).__name__}: {exc}"[:300]})
        print(json.dumps(rows[-1]), flush=True)
    rows += gemm_rows(args.runs)
    rows += reduction_rows(args.runs)
    rows += template_rows(args.runs)
    print(f"{'case':<22}{'rel err':>10}{'ours ms':>10}{'torch ms':>10}{'ratio':>8}")
    for r in rows:
        if "failed" in r:
            print(f"{r['case']:<22} FAILED {r['failed']}")
            continue
        flag = " MISMATCH" if r.get("error") is not None and r["error"] > r.get("tolerance", 1e-4) else ""

        def cell(v: Any, spec: str) -> str:
            return format(v, spec) if v is not None else "-"
        extra = "".join(f"  {k} {cell(r[k], '.3f')}" for k in ("predicted_ms", "new/old")
                        if r.get(k) is not None)
        print(f"{r['case']:<22}{cell(r.get('error'), '10.1e')}{cell(r.get('tensoregg_ms'), '10.3f')}"
              f"{cell(r.get('torch_ms'), '10.3f')}{cell(r.get('ratio'), '8.2f')}{flag}{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": facts, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
