"""One compile for a symbolic batch against a static compile per batch size, on the llvm target.

    python bench/dynamic_batch.py [--batches 1,3,8,16] [--high 16] [--threads 1] [--seconds 2]
                                  [--zoo squeezenet,shufflenet,...]

The model is ``tensoregg.testing_models.small_resnet(blocks=2)`` (ResNet-18's layers, seeded weights,
3x224x224) with its batch dimension made symbolic. It is compiled once with
``dim_ranges={"N": (1, HIGH)}`` (a ``BatchedModule`` of buckets 1, 2, 4, ... HIGH), and once per batch
size with that size fixed; for each batch, both run the same seeded input (checked against
onnxruntime: max |got - want| / max |want|), timed alternately in blocks of calls; the figures are
medians, ratio is dynamic / static. With ``--zoo``, each named light zoo model with a symbolic batch
is compiled without ``input_shapes`` (the ``dim_param`` left as it is) and batches 1 and 3 are checked
against onnxruntime (a light model exported for batch 1 alone, e.g. with a Reshape to [1, ...], is
refused with the error printed). The header gives LLVM's CPU name and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,3,8,16", help="empty: the zoo models alone")
    parser.add_argument("--high", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--zoo", default="")
    args = parser.parse_args()

    import llvmlite.binding as llvm
    import onnxruntime as ort

    import tensoregg
    from tensoregg.benchmark import max_rel_err, time_pair
    from tensoregg.errors import TensoreggError
    from tensoregg.testing import light_model
    from tensoregg.testing_models import small_resnet, symbolic_batch

    print(f"cpu {llvm.get_host_cpu_name()}, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    if args.batches:
        model = symbolic_batch(small_resnet(blocks=2))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        start = time.perf_counter()
        dynamic = tensoregg.compile(model, dim_ranges={"N": (1, args.high)})
        dynamic.num_threads = args.threads
        print(f"dynamic compile (buckets {list(dynamic.buckets)}): {time.perf_counter() - start:.1f} s")
        print("batch  chunks                 static_ms  dynamic_ms  ratio  static_compile_s  err")
        for n in (int(b) for b in args.batches.split(",")):
            start = time.perf_counter()
            static = tensoregg.compile(model, input_shapes={"x": [n, 3, 224, 224]})
            compile_s = time.perf_counter() - start
            static.num_threads = args.threads
            x = np.random.default_rng(n).standard_normal((n, 3, 224, 224)).astype(np.float32)
            want = session.run(None, {"x": x})
            err = max(max_rel_err(dynamic.run(x), want), max_rel_err(static.run(x), want))
            ours, theirs = time_pair(partial(dynamic.run, x), partial(static.run, x), None, args.seconds, 0.0)
            d, s = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
            print(f"{n:5d}  {dynamic.chunks(n)!s:22s} {s:9.2f}  {d:10.2f}  {d / s:5.2f}  {compile_s:16.1f}  "
                  f"{err:.1e}")
    for name in filter(None, args.zoo.split(",")):
        zoo = symbolic_batch(light_model(name))
        start = time.perf_counter()
        try:
            module = tensoregg.compile(zoo)
        except TensoreggError as e:
            print(f"zoo {name}: {type(e).__name__}: {e}")
            continue
        compile_s = time.perf_counter() - start
        zoo_session = ort.InferenceSession(zoo.SerializeToString(), providers=["CPUExecutionProvider"])
        errs = []
        for n in (1, 3):
            shape = (n, *module.input_shapes[0][1:])
            feed = np.random.default_rng(n).standard_normal(shape).astype(np.float32)
            errs.append(max_rel_err(module.run(feed), zoo_session.run(None, {module.input_names[0]: feed})))
        print(f"zoo {name}: compiled without input_shapes in {compile_s:.1f} s, input "
              f"{module.input_shapes[0]}, batches 1 and 3 max err {max(errs):.1e}")


if __name__ == "__main__":
    main()
