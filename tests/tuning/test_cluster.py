"""Tuning on a Ray cluster (tensoregg.tuning.cluster): a local two-worker cluster on loopback measures
a model's candidates on both workers into records of the same form as local tuning, which a recompile
then uses with no measurement; a hanging or crashing candidate costs one measurement; a worker of
another machine fingerprint, or no Ray, is a ClusterError."""

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_records import F32, matmul_graph

import tensoregg
from tensoregg.errors import ClusterError
from tensoregg.targets import get_target, registration
from tensoregg.tuning.records import COLUMNS, Records, fingerprint

LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of two machines (a head and one more) with a CPU each, on loopback."""
    os.environ[LOOPBACK] = "0"  # Ray on 127.0.0.1, not the host's address (read when ray is imported)
    try:
        pytest.importorskip("ray")
        from ray.cluster_utils import Cluster

        machine = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
        c = Cluster(initialize_head=True, head_node_args=machine)
        try:
            c.add_node(**machine)
            yield c.address
        finally:
            c.shutdown()
    finally:
        del os.environ[LOOPBACK]


def test_a_model_tuned_on_a_two_worker_cluster_has_local_records(cluster, tmp_path):
    records = tmp_path / "records.sqlite"
    graph = matmul_graph()
    report = tensoregg.tune(graph, "llvm", minutes=2.0, records=records, trials=4, seconds=0.02,
                            progress=False, cluster=cluster)
    (kernel,) = report.kernels
    assert report.measurements == kernel.measured == 4 and report.failed == 0
    assert len(report.workers) == 2 and sum(report.workers.values()) == 4  # both workers measured
    rows = Records(records).all()
    assert len(rows) == 4 and all(r.seconds > 0 and r.fingerprint == fingerprint(get_target("llvm"))
                                  for r in rows)
    assert tuple(dataclasses.asdict(rows[0])) == COLUMNS
    tuned = tensoregg.compile(graph, "llvm", records=records)
    assert [str(s) for _, s in tuned.report.chosen] == [kernel.best]
    x = np.random.default_rng(0).standard_normal((64, 128)).astype(F32)
    np.testing.assert_allclose(tuned.run(x)[0], np.maximum(x @ graph.initializers["w"], 0), rtol=1e-4,
                               atol=1e-4)
    again = tensoregg.tune(graph, "llvm", minutes=1.0, records=records, trials=4, progress=False,
                           cluster=cluster)
    assert again.measurements == 0  # every candidate is in the records


@pytest.mark.slow
def test_a_hanging_or_crashing_candidate_costs_one_measurement(cluster):
    from tensoregg.tuning.cluster import RayCluster

    backend = RayCluster(cluster, registration("llvm"), get_target("llvm"))
    try:
        assert backend.slots == 2
        start = time.monotonic()
        hung, died, ok = backend.run_many(time.sleep, [60], 3.0) + backend.run_many(os._exit, [3], 30.0) + \
            backend.run_many(abs, [-2], 30.0)
        assert hung == ("error", "timed out after 3 s") and time.monotonic() - start < 40
        assert died[0] == "error" and "died" in died[1]
        assert ok == ("ok", 2)  # a fresh worker took the place of each
        assert backend.run_many(abs, [-1, -2, -3], 30.0) == [("ok", 1), ("ok", 2), ("ok", 3)]
        status, why = backend.run_many(int, ["x"], 30.0)[0]
        assert status == "error" and why.startswith("ValueError")
    finally:
        backend.close()


def test_a_worker_of_another_machine_is_refused(cluster):
    from tensoregg.tuning.cluster import RayCluster

    other = dataclasses.replace(get_target("llvm"), cpu="another-cpu")
    with pytest.raises(ClusterError, match=r"cluster worker on 127\.0\.0\.1:\d+: machine fingerprint"):
        RayCluster(cluster, registration("llvm"), other)


def test_tuning_on_a_cluster_without_ray_is_a_cluster_error(monkeypatch, tmp_path, capsys):
    from tensoregg.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ClusterError, match=r"pip install 'tensoregg\[cluster\]'"):
        tensoregg.tune(matmul_graph(), "llvm", minutes=0.1, records=tmp_path / "r.sqlite", progress=False,
                       cluster="127.0.0.1:1")
    model = str(Path(__file__).resolve().parents[2] / "examples" / "tinycnn.onnx")
    assert main(["tune", model, "--minutes", "0.1", "--records", str(tmp_path / "r.sqlite"),
                 "--cluster", "127.0.0.1:1"]) == 2
    assert "ClusterError: measuring on a cluster needs Ray" in capsys.readouterr().err
