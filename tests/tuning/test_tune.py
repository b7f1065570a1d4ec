"""Auto-tuning end to end (tensoregg.tune): candidates measured in a worker process, a crashing or
hanging one costing one measurement; a tuned model recompiles with no measurement and the same
choices."""

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_records import F32, matmul_graph

import tensoregg
from tensoregg.ir.schedules import Untiled
from tensoregg.targets import get_target
from tensoregg.tuning import measure
from tensoregg.tuning.measure import Worker
from tensoregg.tuning.records import Records


def test_a_hanging_or_crashing_job_costs_one_job():
    with Worker() as worker:
        start = time.monotonic()
        assert worker.run(time.sleep, 60, timeout=3.0) == ("error", "timed out after 3 s")
        assert time.monotonic() - start < 30  # the worker's start not counted
        status, why = worker.run(os._exit, 3, timeout=30.0)
        assert status == "error" and "exit code 3" in why
        assert worker.run(abs, -2, timeout=30.0) == ("ok", 2)  # a fresh worker took over
        status, why = worker.run(int, "x", timeout=30.0)
        assert status == "error" and why.startswith("ValueError")


def test_a_tuned_model_recompiles_with_no_measurement_and_the_same_choices(tmp_path, monkeypatch):
    records = tmp_path / "records.sqlite"
    graph = matmul_graph()
    report = tensoregg.tune(graph, "llvm", minutes=2.0, records=records, trials=2, seconds=0.05,
                            progress=False)
    (kernel,) = report.kernels
    assert report.measurements == kernel.measured == 2 and report.failed == 0
    assert kernel.untuned_seconds > 0 and kernel.best_seconds <= kernel.untuned_seconds
    assert len(Records(records).all()) == 2
    (timed,) = report.models  # the end's check: the model whole, untuned and tuned
    assert timed["name"] == graph.name and timed["untuned_ms"] > 0 and timed["tuned_ms"] > 0

    def no_measuring(*args, **kwargs):
        raise AssertionError("compile measured something")

    monkeypatch.setattr(measure.Worker, "run", no_measuring)
    first = tensoregg.compile(graph, "llvm", records=records)
    again = tensoregg.compile(graph, "llvm", records=records)
    chosen = [str(s) for _, s in first.report.chosen]
    assert chosen == [kernel.best] == [str(s) for _, s in again.report.chosen]
    assert [str(n.schedule) for n in first.graph.nodes] == [str(n.schedule) for n in again.graph.nodes]
    x = np.random.default_rng(0).standard_normal((64, 128)).astype(F32)
    want = np.maximum(x @ graph.initializers["w"], 0)
    np.testing.assert_allclose(first.run(x)[0], want, rtol=1e-4, atol=1e-4)
    again_report = tensoregg.tune(graph, "llvm", minutes=1.0, records=records, trials=2, progress=False)
    assert again_report.measurements == 0  # both candidates are in the records


def test_a_target_without_schedules_cannot_be_tuned(tmp_path):
    with pytest.raises(tensoregg.CompileError, match="'ref' has no schedule templates"):
        tensoregg.tune(matmul_graph(), "ref", minutes=0.1, records=tmp_path / "r.sqlite")


def test_the_tune_command_reports_as_json(tmp_path, capsys):
    from tensoregg.cli import main

    records = tmp_path / "r.sqlite"
    model = str(Path(__file__).resolve().parents[2] / "examples" / "tinycnn.onnx")
    assert main(["tune", model, "--minutes", "0", "--records", str(records), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == "llvm" and report["records"] == str(records) and report["kernels"] == []
    assert records.exists()


def test_a_torch_model_is_tuned_at_its_example_inputs(tmp_path):
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU()).eval()
    report = tensoregg.tune(module, "llvm", minutes=0, records=tmp_path / "r.sqlite",
                            example_inputs=(torch.ones(3, 8),), progress=False)
    assert report.kernels == [] and report.measurements == 0


@pytest.mark.slow
def test_a_tuned_zoo_model_still_computes_what_onnxruntime_does(tmp_path):
    from tensoregg.benchmark import RTOL, max_rel_err, ort_session
    from tensoregg.testing import light_model

    model = light_model("squeezenet")
    records = tmp_path / "records.sqlite"
    report = tensoregg.tune(model, "llvm", minutes=1.5, records=records, trials=4, seconds=0.02,
                            progress=False, check_models=False)
    assert report.models == []
    assert report.measurements > 0 and report.failed == 0
    tuned = tensoregg.compile(model, "llvm", records=records)
    best = {k.signature: k.best for k in report.kernels if k.best}
    picked = [(best[spec.signature], str(s)) for spec, s in tuned.report.chosen if spec.signature in best]
    assert picked and all(want == got for want, got in picked)  # each tuned kernel as its best measured
    x = np.random.default_rng(0).standard_normal(tuned.input_shapes[0]).astype(F32)
    want = ort_session(model.SerializeToString(), 1).run(None, {tuned.input_names[0]: x})
    assert max_rel_err(tuned.run(x), want) <= RTOL


def test_a_worker_without_the_baseline_result_computes_it_first(monkeypatch):
    from test_records import spec, tiled

    compiled = []
    real = measure._compiled
    monkeypatch.setattr(measure, "_compiled", lambda c, s: compiled.append(s) or real(c, s))
    monkeypatch.setattr(measure, "_references", {})  # a fresh worker (after a crash, or on a cluster)
    candidate = measure.Candidate("llvm", get_target("llvm"), spec(), tiled(), 0.01, baseline=Untiled())
    assert measure.measure(candidate).seconds > 0
    assert compiled == [Untiled(), tiled()]  # the tiled result checked against the untuned one
    assert measure.measure(candidate).seconds > 0 and len(compiled) == 3  # the reference is kept


def test_tuning_on_a_busy_machine_warns_and_reports_the_load(tmp_path, monkeypatch):
    from tensoregg.tuning import search

    cpus = len(search.available_cpus())
    monkeypatch.setattr(search.os, "getloadavg", lambda: (cpus + 0.5, 0.0, 0.0))
    with pytest.warns(RuntimeWarning, match=rf"busy machine \(load average {cpus + 0.5:.1f} on {cpus} CPUs"):
        report = tensoregg.tune(matmul_graph(), "llvm", minutes=0, records=tmp_path / "r.sqlite")
    assert report.load == [cpus + 0.5, cpus + 0.5] and "load average" in str(report)
    monkeypatch.setattr(search.os, "getloadavg", lambda: (cpus - 0.5, 0.0, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = tensoregg.tune(matmul_graph(), "llvm", minutes=0, records=tmp_path / "r.sqlite")
    assert report.load[0] == cpus - 0.5


def test_a_model_the_records_made_slower_is_named():
    from tensoregg.tuning.search import SLOWER_SLACK, TuneReport

    report = TuneReport("llvm", "r.sqlite", models=[
        {"name": "a", "untuned_ms": 1.0, "tuned_ms": 1.0 + 2 * SLOWER_SLACK, "threads": 2},
        {"name": "b", "untuned_ms": 1.0, "tuned_ms": 1.0 + SLOWER_SLACK / 2, "threads": 2},
        {"name": "c", "error": "timed out after 900 s"}])
    assert [m["name"] for m in report.slower()] == ["a"]
    text = str(report)
    assert "model a: untuned 1.000 ms, tuned" in text and "SLOWER" in text.split("model b")[0]
    assert "SLOWER" not in text.split("model b")[1] and "model c: not timed: timed out" in text
