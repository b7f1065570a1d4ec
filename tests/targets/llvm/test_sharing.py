"""Threads share a model's work out chunk by chunk (tensoregg.targets.llvm.sharing): a run on any
number of threads equals the one-thread run bit for bit, whoever takes part; a run completes
without a thread that never turns up, and a thread that turns up late does nothing twice."""

import ctypes
import threading
from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg import testing_models
from tensoregg.runtime import team as team_module
from tensoregg.runtime.memory import aligned_empty
from tensoregg.runtime.native import ENTRY
from tensoregg.targets.llvm import NativeModel

TINYCNN = Path(__file__).parents[3] / "examples" / "tinycnn.onnx"
PATIENCE_S = 60
"""How long a run may take before the test calls it hung (a run takes milliseconds)."""


def compiled(name: str) -> NativeModel:
    """Model ``name`` compiled for the host, run on the thread team however small it is."""
    model = (testing_models.encoder_layer(seq=32, d_model=64, heads=4, ffn=128) if name == "encoder"
             else str(TINYCNN))
    native = tensoregg.compile(model, "llvm").program
    native.executor.parallel = True
    return native


@pytest.fixture(scope="module", params=["encoder", "tinycnn"])
def model(request):
    native = compiled(request.param)
    rng = np.random.default_rng(0)
    feeds = [{t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in native.executor.inputs}
             for _ in range(2)]
    native.num_threads = 1
    wants = [native.run(f) for f in feeds]
    return native, feeds, wants


def same(got: list[np.ndarray], want: list[np.ndarray]) -> bool:
    return all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def in_thread(fn) -> None:
    """``fn()`` in a daemon thread; fails if it raises or is still running after PATIENCE_S."""
    errors: list[BaseException] = []

    def call():
        try:
            fn()
        except BaseException as e:  # reported by the test
            errors.append(e)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(PATIENCE_S)
    assert not thread.is_alive(), "a run hung"
    assert not errors, errors


def test_runs_on_any_number_of_threads_equal_the_one_thread_run(model):
    native, feeds, wants = model
    for n in (2, 3, 1, 4, 2):
        native.num_threads = n
        for k in range(6):
            assert same(native.run(feeds[k % 2]), wants[k % 2]), n


def test_runs_from_two_python_threads_equal_the_one_thread_run(model):
    native, feeds, wants = model
    native.num_threads = 2
    errors: list[BaseException] = []

    def runs(k: int) -> None:
        try:
            for _ in range(15):
                assert same(native.run(feeds[k]), wants[k])
        except BaseException as e:  # reported by the test
            errors.append(e)

    threads = [threading.Thread(target=runs, args=(k,), daemon=True) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE_S)
    assert not any(thread.is_alive() for thread in threads), "a run hung"
    assert not errors, errors


def test_a_run_completes_while_a_worker_is_held(model, monkeypatch):
    """Worker 1 held before it reaches native code (as a descheduled thread is): runs complete on the
    caller alone; released, it joins the next runs."""
    native, feeds, wants = model
    release = threading.Event()
    pin = team_module.pin

    def held(cpus: list[int], tid: int) -> None:
        if tid == 1:
            release.wait()
        pin(cpus, tid)

    monkeypatch.setattr(team_module, "pin", held)
    native.num_threads = 1
    native.num_threads = 2  # a fresh team: its workers start (and worker 1 is held) on the next run

    def runs() -> None:
        for k in (0, 1, 0):
            assert same(native.run(feeds[k]), wants[k])

    try:
        in_thread(runs)
    finally:
        release.set()
    in_thread(runs)


def test_a_thread_alone_does_everything_and_a_late_one_nothing(model):
    """The entry point called as thread 0 of 2 with no thread 1 computes the whole model; called then
    as thread 1 on the same shared words, it finds every region done and writes nothing."""
    native, feeds, wants = model
    ex = native.executor
    inputs = [np.ascontiguousarray(feeds[0][t.name]) for t in ex.inputs]
    outputs = {t.name: np.zeros(t.shape, t.dtype) for t in ex.outputs if t.name in ex.slots}
    in_table = (ctypes.c_void_p * len(inputs))(*[a.ctypes.data for a in inputs])
    out_table = (ctypes.c_void_p * max(len(ex.outputs), 1))()
    for name, slot in ex.slots.items():
        out_table[slot] = outputs[name].ctypes.data
    work, words = aligned_empty(ex.work_size), np.zeros(2, np.int64)
    entry = ENTRY(ex.entry_address)

    def call(tid: int) -> None:
        entry(in_table, out_table, ex.weights.ctypes.data, work.ctypes.data, tid, 2, words.ctypes.data)

    in_thread(lambda: call(0))
    by_name = dict(zip([t.name for t in ex.outputs], wants[0], strict=True))
    assert all(np.array_equal(out, by_name[name]) for name, out in outputs.items())
    for out in outputs.values():
        out[...] = 0
    in_thread(lambda: call(1))
    assert not any(out.any() for out in outputs.values())
