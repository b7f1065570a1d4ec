"""The tuning records (tensoregg.tuning.records): stored, read back per target and machine, exported
and imported as JSON lines, corrupt files refused with a RecordsError; and compile's use of them."""

import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg.errors import RecordsError
from tensoregg.extraction.kernel_spec import KernelSpec
from tensoregg.ir import Graph, Node, TensorType
from tensoregg.ir.schedules import GemmProblem, GemmSchedule, Untiled
from tensoregg.targets import get_target
from tensoregg.tuning.records import Records, decode_schedule, encode_schedule, measured_pricing

F32 = np.dtype(np.float32)
TARGET = get_target("llvm")


def matmul_graph(seed=0, m=64, k=128, n=96):
    """x[m, k] @ w[k, n], then Relu (w constant, seeded)."""
    w = np.random.default_rng(seed).standard_normal((k, n)).astype(F32)
    return Graph({"x": TensorType(F32, (m, k))}, {"w": w},
                 [Node("MatMul", ("x", "w"), ("t",)), Node("Relu", ("t",), ("y",))], ["y"])


def spec(m=64):
    types = (TensorType(F32, (m, 128)), TensorType(F32, (128, 96)))
    return KernelSpec("MatMul", "", {}, types, (False, True), GemmProblem(1, m, 96, 128, pack_b=False))


def tiled():
    return GemmSchedule(TARGET.microkernels[0], TARGET.microkernels[0].mr, TARGET.microkernels[0].nr, 64)


def test_records_round_trip_through_json_lines(tmp_path):
    with Records(tmp_path / "a.sqlite") as db:
        db.record(TARGET, spec(), Untiled(), 2e-5, 100)
        db.record(TARGET, spec(), tiled(), None, 0, error="timed out after 60 s")
        db.record(TARGET, spec(), tiled(), 1e-5, 50)  # measured again: replaces
        assert db.measured(TARGET) == {spec().signature: {Untiled(): 2e-5, tiled(): 1e-5}}
        out = io.StringIO()
        assert db.export_jsonl(out) == 2
    lines = out.getvalue().splitlines()
    assert json.loads(lines[0])["kernel"] == "MatMul GEMM 1x64x96x128 float32"
    with Records(tmp_path / "b.sqlite") as db:
        assert db.import_jsonl(lines) == 2
        assert db.all() == Records(tmp_path / "a.sqlite").all()
        with pytest.raises(RecordsError, match="line 2 is not a tuning record"):
            db.import_jsonl([lines[0], json.dumps({"target": "llvm"})])
        other = json.loads(lines[0]) | {"fingerprint": "another machine"}
        db.import_jsonl([json.dumps(other)])
        assert len(db.all()) == 3 and len(db.measured(TARGET)[spec().signature]) == 2  # this machine's only


def test_a_corrupt_or_foreign_database_is_a_records_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(RecordsError, match=r"cannot be read.*remove the file"):
        Records(bad)
    with pytest.raises(RecordsError, match="cannot be read"):
        tensoregg.compile(matmul_graph(), "llvm", records=bad)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                                         "INSERT INTO meta VALUES ('schema', '99');")
    with pytest.raises(RecordsError, match="schema 99"):
        Records(other)
    assert Records(tmp_path / "missing.sqlite", create=False).all() == []
    assert not (tmp_path / "missing.sqlite").exists()


def test_schedules_encode_and_decode():
    for schedule in (Untiled(), tiled()):
        assert decode_schedule(*encode_schedule(schedule), TARGET) == schedule
    assert decode_schedule("gemm-tiled", json.dumps({"ukernel": "no such kernel"}), TARGET) is None


def test_signature_is_the_kernel_not_the_weights():
    a = spec().signature
    assert a == spec().signature and a != spec(m=32).signature
    with_attr = KernelSpec("Gemm", "", {"alpha": 1.0, "t": np.ones(3, F32)}, spec().inputs, spec().constant,
                           spec().problem)
    changed = KernelSpec("Gemm", "", {"alpha": 1.0, "t": np.zeros(3, F32)}, spec().inputs, spec().constant,
                         spec().problem)
    assert with_attr.signature != changed.signature  # a tensor attribute by its content


def test_measured_pricing_orders_by_measurement_on_the_models_scale():
    other = GemmSchedule(TARGET.microkernels[0], TARGET.microkernels[0].mr, TARGET.microkernels[0].nr, 32)
    priced = [(tiled(), 1.0), (other, 2.0), (Untiled(), 5.0)]
    reprice = measured_pricing({spec().signature: {tiled(): 30e-6, other: 15e-6, Untiled(): None}})
    assert reprice(spec(m=32), priced) == priced  # no records: as predicted
    assert reprice(spec(), priced) == [(other, 0.5), (tiled(), 1.0), (Untiled(), 5.0)]


def test_compile_follows_the_records(tmp_path):
    graph = matmul_graph()
    untuned = tensoregg.compile(graph, "llvm", records=False)
    (kernel, schedule), = untuned.report.chosen
    assert isinstance(schedule, GemmSchedule)
    with Records(tmp_path / "r.sqlite") as db:  # say the untiled loop measured fastest
        db.record(TARGET, kernel, schedule, 3e-5, 10)
        db.record(TARGET, kernel, Untiled(), 1e-5, 10)
    tuned = tensoregg.compile(graph, "llvm", records=tmp_path / "r.sqlite")
    assert [s for _, s in tuned.report.chosen] == [Untiled()]
    assert [n.schedule for n in tuned.graph.nodes] == [Untiled()]
    np.testing.assert_allclose(tuned.run(np.ones((64, 128), F32))[0], untuned.run(np.ones((64, 128), F32))[0],
                               rtol=1e-5)


def test_records_command_exports_and_imports(tmp_path, capsys):
    from tensoregg.cli import main

    with Records(tmp_path / "a.sqlite") as db:
        db.record(TARGET, spec(), Untiled(), 2e-5, 100)
    a, b = ["--records", str(tmp_path / "a.sqlite")], ["--records", str(tmp_path / "b.sqlite")]
    assert main(["records", "export", str(tmp_path / "a.jsonl"), *a]) == 0
    assert main(["records", "import", str(tmp_path / "a.jsonl"), *b]) == 0
    assert "imported 1 records" in capsys.readouterr().out
    assert Records(tmp_path / "b.sqlite").all() == Records(tmp_path / "a.sqlite").all()
    (tmp_path / "bad.jsonl").write_text("{}\n")
    assert main(["records", "import", str(tmp_path / "bad.jsonl"), *b]) == 2
    assert "RecordsError: line 1 is not a tuning record" in capsys.readouterr().err


def test_the_compiling_commands_take_records(tmp_path, capsys):
    from tensoregg.cli import main

    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database" * 100)
    model = str(Path(__file__).resolve().parents[2] / "examples" / "tinycnn.onnx")
    assert main(["compile", model, "-o", str(tmp_path / "m.tegg"), "--no-cache", "--records", str(bad)]) == 2
    assert main(["run", model, "--no-cache", "--records", str(bad)]) == 2
    assert capsys.readouterr().err.count(f"RecordsError: tuning records {bad} cannot be read") == 2
