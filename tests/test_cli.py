"""The ``tensoregg`` command end to end: compile to an artifact (through the compile cache), run an
artifact on given inputs, extract an artifact, clear the cache."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensoregg

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "tinycnn.onnx")


def objects_of(cache_dir):
    """The object cache of the commands whose compile cache is ``cache_dir`` (beside it)."""
    return cache_dir.with_name(cache_dir.name + "-objects")


def tensoregg_cli(*args, cache_dir):
    env = {**os.environ, "TENSOREGG_CACHE_DIR": str(cache_dir),
           "TENSOREGG_OBJECT_CACHE": str(objects_of(cache_dir))}
    done = subprocess.run([sys.executable, "-m", "tensoregg.cli", *map(str, args)], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_compile_run_extract_and_clear(tmp_path):
    cache_dir, out = tmp_path / "cache", tmp_path / "tinycnn.tegg"
    info = json.loads(tensoregg_cli("compile", EXAMPLE, "-t", "llvm", "-o", out, "--json",
                                    cache_dir=cache_dir))
    assert info["artifact"] == str(out) and info["bytes"] == out.stat().st_size and not info["cached"]
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 32, 32]}]
    assert len(list(cache_dir.glob("*.tegg"))) == 1
    again = json.loads(tensoregg_cli("compile", EXAMPLE, "-o", tmp_path / "again.tegg", "--json",
                                     cache_dir=cache_dir))
    assert again["cached"] and again["bytes"] == info["bytes"]

    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    text = tensoregg_cli("run", out, "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "outs",
                         cache_dir=cache_dir)
    assert text.startswith(f"loaded {out}")
    np.testing.assert_array_equal(np.load(tmp_path / "outs" / "0.npy"), tensoregg.load(out).run(x)[0])

    tensoregg_cli("extract", out, "-o", tmp_path / "files", cache_dir=cache_dir)
    assert {p.name for p in (tmp_path / "files").iterdir()} >= {"libtensoregg_model.so", "tensoregg.h",
                                                                 "weights.npy", "manifest.json"}
    assert list(objects_of(cache_dir).glob("*.o"))
    cleared = tensoregg_cli("cache", "clear", cache_dir=cache_dir)
    assert "removed 1 entries" in cleared and "kernel objects" in cleared
    assert not list(cache_dir.glob("*.tegg")) and not list(objects_of(cache_dir).glob("*.o"))


def test_run_without_the_cache_stores_nothing(tmp_path):
    text = tensoregg_cli("run", EXAMPLE, "--no-cache", "--repeat", "1", cache_dir=tmp_path / "cache")
    assert text.startswith("compiled") and not (tmp_path / "cache").exists()


def test_a_corrupted_artifact_is_reported_cleanly(tmp_path):
    bad = tmp_path / "bad.tegg"
    bad.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: no manifest
    done = subprocess.run([sys.executable, "-m", "tensoregg.cli", "run", str(bad)], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "ArtifactError" in done.stderr and "manifest.json" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A compile cache holding the example (compiled once for this module's tests)."""
    cache_dir = tmp_path_factory.mktemp("cache")
    tensoregg_cli("compile", EXAMPLE, "-o", cache_dir / "example.tegg", cache_dir=cache_dir)
    return cache_dir


def test_bench_alone_and_against_onnxruntime(warm_cache):
    alone = json.loads(tensoregg_cli("bench", warm_cache / "example.tegg", "--runs", "20", "--threads", "1",
                                     "--json", cache_dir=warm_cache))
    assert alone["threads"] == 1 and alone["tensoregg"]["runs"] == 20 and "onnxruntime" not in alone
    q = alone["tensoregg"]["quartiles_ms"]
    assert 0 < q[0] <= alone["tensoregg"]["median_ms"] == q[1] <= q[2]
    pair = json.loads(tensoregg_cli("bench", EXAMPLE, "--vs", "onnxruntime", "--runs", "20", "--json",
                                    cache_dir=warm_cache))
    assert pair["onnxruntime"]["runs"] == 20 and pair["max_rel_err"] < 1e-3
    assert pair["ratio"] == pair["tensoregg"]["median_ms"] / pair["onnxruntime"]["median_ms"]
    text = tensoregg_cli("bench", EXAMPLE, "--vs", "onnxruntime", "--runs", "5", cache_dir=warm_cache)
    assert "ratio tensoregg / onnxruntime" in text


def test_print_imported_and_optimized(tmp_path):
    imported = tensoregg_cli("print", EXAMPLE, cache_dir=tmp_path)
    optimized = tensoregg_cli("print", EXAMPLE, "--optimized", cache_dir=tmp_path)
    assert "BatchNormalization" in imported and "BatchNormalization" not in optimized
    assert imported != optimized and "Softmax" in optimized


def test_rules_lists_every_family_and_law(tmp_path):
    from tensoregg.rules import ALL_RULES, RULESETS

    families = json.loads(tensoregg_cli("rules", "--json", cache_dir=tmp_path))
    assert [f["family"] for f in families] == list(RULESETS)
    listed = {r["name"]: r["law"] for f in families for r in f["rules"]}
    assert listed == {r.name: r.law for r in ALL_RULES}
    assert "relu-idempotent" in tensoregg_cli("rules", cache_dir=tmp_path)


USER_RULES = """
from egglog import var

from tensoregg.ir.terms import CONSTRUCTORS, Tensor
from tensoregg.rules import Family
from tensoregg.rules.witness import chain

mine = Family("mine", "Rules about Relu.")
Relu, Neg = CONSTRUCTORS["Relu"].fn, CONSTRUCTORS["Neg"].fn
x = var("x", Tensor)
mine.rewrite("relu-cubed", "relu(relu(relu(x))) = relu(x)", Relu(Relu(Relu(x))), Relu(x),
             example=lambda: chain([("Relu", {}), ("Relu", {}), ("Relu", {})]))
mine.rewrite("relu-is-neg", "relu(x) = neg(x), which is wrong", Relu(x), Neg(x),
             example=lambda: chain([("Relu", {}), ("Relu", {})]))
mine.rewrite("relu-idempotent", "taken", Relu(Relu(x)), Relu(x))
"""


def test_verify_checks_a_user_rule_module(tmp_path):
    path = tmp_path / "my_rules.py"
    path.write_text(USER_RULES)
    done = subprocess.run([sys.executable, "-m", "tensoregg.cli", "verify", str(path), "--examples", "3",
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    verdicts = {v["rule"]: v["problem"] for v in json.loads(done.stdout)}
    assert verdicts["relu-cubed"] is None
    assert "IEEE-exact comparison" in verdicts["relu-is-neg"]
    assert "is taken" in verdicts["relu-idempotent"]
    done = subprocess.run([sys.executable, "-m", "tensoregg.cli", "verify", str(tmp_path / "none.py")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "RuleError" in done.stderr and "Traceback" not in done.stderr


def test_profile_times_every_kernel(warm_cache):
    table = json.loads(tensoregg_cli("profile", warm_cache / "example.tegg", "--runs", "3", "--json",
                                     cache_dir=warm_cache))
    kernels = table["kernels"]
    assert [k["ops"] for k in kernels][:2] == [["Conv", "Relu"], ["MaxPool"]]
    assert kernels[0]["shape"] == [1, 8, 32, 32] and kernels[0]["schedule"].startswith("tiled")
    assert abs(sum(k["percent"] for k in kernels) - 100) < 1e-6 and table["core_peak_gflops"] > 0
    assert all(k["ms"] > 0 and 0 <= k["percent_of_peak"] < 100 for k in kernels)
    conv_relu_flops = 2 * (8 * 32 * 32) * (3 * 3 * 3) + 8 * 32 * 32  # multiply-adds, then the Relu
    assert kernels[0]["gflops"] == pytest.approx(conv_relu_flops / kernels[0]["ms"] / 1e6)
    text = tensoregg_cli("profile", EXAMPLE, "--no-cache", "--runs", "2", cache_dir=warm_cache)
    assert "Conv + Relu" in text and "% peak" in text


def test_explain_draws_the_graph_and_the_egraph(tmp_path):
    tensoregg_cli("explain", EXAMPLE, "--graphviz", tmp_path / "g.dot", cache_dir=tmp_path)
    dot = (tmp_path / "g.dot").read_text()
    assert dot.count("subgraph cluster_") == 2 and '"Conv"' in dot and "tiled gemm_f32" in dot
    egraph = tensoregg_cli("explain", EXAMPLE, "--egraph", "r1", cache_dir=tmp_path)
    assert egraph.startswith('digraph "e-classes around r1"') and "FusedConv" in egraph
    if shutil.which("dot"):
        tensoregg_cli("explain", EXAMPLE, "--graphviz", tmp_path / "g.svg", cache_dir=tmp_path)
        assert "<svg" in (tmp_path / "g.svg").read_text() and "FusedConv" in (tmp_path / "g.svg").read_text()
    done = subprocess.run([sys.executable, "-m", "tensoregg.cli", "explain", EXAMPLE, "--egraph", "nope"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no node 'nope'" in done.stderr
