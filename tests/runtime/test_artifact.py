"""Saved artifacts: a save -> load round trip in a process where the compiler's dependencies cannot
be imported gives identical outputs; every corrupted, truncated, edited or foreign artifact raises
ArtifactError naming what is wrong, before any of its code is loaded."""

import ctypes
import hashlib
import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg.errors import ArtifactError
from tensoregg.runtime import artifact as artifact_module
from tensoregg.testing import LIGHT_MODELS, light_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tinycnn.onnx"
BLOCKED = ("egglog", "onnx", "onnxruntime", "llvmlite", "scipy")
FAST_MODELS = {"squeezenet"}
"""Light models whose round trip runs by default; the others are marked slow."""

CHILD = textwrap.dedent("""
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, Blocked())
    for name in BLOCKED:  # the blocker works
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} could be imported")
    import numpy as np
    import tensoregg

    module = tensoregg.load(sys.argv[1])
    feeds = [np.load(f"{sys.argv[2]}/in{k}.npy") for k in range(len(module.input_names))]
    for threads in (1, 2):
        module.num_threads = threads
        for k, out in enumerate(module.run(*feeds)):
            np.save(f"{sys.argv[2]}/out{k}_{threads}.npy", out)
    loaded = [m for m in BLOCKED if m in sys.modules]
    assert not loaded, loaded
""")


def run_blocked(path: Path, feeds: list[np.ndarray], tmp: Path) -> list[list[np.ndarray]]:
    """Load and run the artifact at ``path`` on ``feeds`` in a fresh process where the compiler's
    dependencies cannot be imported, on 1 and on 2 threads."""
    for k, x in enumerate(feeds):
        np.save(tmp / f"in{k}.npy", x)
    script = f"BLOCKED = {BLOCKED!r}\n" + CHILD
    done = subprocess.run([sys.executable, "-c", script, str(path), str(tmp)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    n = len(list(tmp.glob("out*_1.npy")))
    return [[np.load(tmp / f"out{k}_{threads}.npy") for k in range(n)] for threads in (1, 2)]


def round_trip(model, tmp: Path) -> None:
    module = tensoregg.compile(model)
    path = module.save(tmp / "model.tegg")
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(s).astype(d) for s, d in zip(module.input_shapes, module.input_dtypes)]
    want = module.run(*feeds)
    for got in run_blocked(path, feeds, tmp):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)


def test_example_round_trip(tmp_path):
    round_trip(str(EXAMPLE), tmp_path)


@pytest.mark.parametrize("name", [n if n in FAST_MODELS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in LIGHT_MODELS])
def test_light_model_round_trip(name, tmp_path):
    round_trip(light_model(name), tmp_path)


def test_loaded_module_describes_itself_and_saves_again(saved, tmp_path):
    path, module = saved
    loaded = tensoregg.load(path)
    assert loaded.graph is None and loaded.graph_text == str(module.graph)
    assert (loaded.input_names, loaded.input_shapes, loaded.input_dtypes) == \
        (module.input_names, module.input_shapes, module.input_dtypes)
    assert [(t.name, t.shape, t.dtype) for t in loaded.output_types] == \
        [(n, t.shape, t.dtype) for n, t in zip(module.output_names, module.output_types)]
    again = loaded.save(tmp_path / "again.tegg")
    assert tensoregg.load(again).artifact().manifest == loaded.artifact().manifest
    with pytest.raises(tensoregg.InputError):
        loaded.run(np.zeros((1, 3, 32, 31), np.float32))


def test_print_shows_the_signature_kernel_count_and_graph(saved):
    """``print(module)``: target, inputs and outputs with dtypes and shapes, the kernel count, then
    the graph as text; ``repr`` is one line with the same signature; a loaded model prints too."""
    path, module = saved
    text = str(module)
    head = text.splitlines()[:3]
    kernels = len(module.graph.nodes)
    assert head == [f"tensoregg.Module for target llvm, {kernels} kernels", "  input  x: float32[1,3,32,32]",
                    "  output probs: float32[1,10]"], text
    assert text.endswith(str(module.graph)) and "Softmax(" in text
    assert repr(module) == ("<tensoregg.Module target=llvm (x: float32[1,3,32,32]) -> (float32[1,10]), "
                            f"{kernels} kernels>")
    loaded = str(tensoregg.load(path))
    assert loaded.splitlines()[1:3] == head[1:] and loaded.endswith(str(module.graph))


def test_manifest_describes_the_model(saved):
    path, module = saved
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        for name, digest in manifest["parts"].items():
            assert hashlib.sha256(zf.read(name)).hexdigest() == digest
    assert manifest["format_version"] == artifact_module.FORMAT_VERSION
    assert manifest["tensoregg_version"] == tensoregg.__version__ and manifest["target"] == "llvm"
    assert manifest["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 32, 32]}]
    code = manifest["code"]
    assert [k["node"].split()[0] for k in code["kernels"]] == [n.op for n in module.graph.nodes]
    assert code["memory_plan"]["workspace_nbytes"] == module.program.plan.work_size
    assert set(manifest["parts"]) == {"graph.txt", "libtensoregg_model.so", "tensoregg.h", "weights.npy"}


# ---- corrupted artifacts ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    module = tensoregg.compile(str(EXAMPLE))
    return module.save(tmp_path_factory.mktemp("artifact") / "tinycnn.tegg"), module


def entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i.filename) for i in zf.infolist()}


def rezip(items: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in items:
            zf.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def deflated(parts: dict[str, bytes]) -> bytes:
    """The same entries, compressed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def reseal(manifest: dict) -> bytes:
    """The manifest with its own hash recomputed (an edit that passes the manifest's self-check)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    manifest = {**body, "manifest_sha256": hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()}
    return json.dumps(manifest).encode()


def flip(data: bytes, at: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ 0x41]) + data[at + 1:]


def edit(change):
    """A variant whose manifest is changed by ``change`` (then resealed)."""
    def make(parts):
        manifest = json.loads(parts["manifest.json"])
        change(manifest)
        return rezip([("manifest.json", reseal(manifest)), *[(n, d) for n, d in parts.items()
                                                             if n != "manifest.json"]])
    return make


def with_parts(change):
    """A variant whose parts (name -> bytes, the manifest's raw bytes included) ``change`` edits."""
    def make(parts):
        parts = dict(parts)
        change(parts)
        return rezip(list(parts.items()))
    return make


def set_in(path, value):
    def change(manifest):
        *keys, last = path
        target = manifest
        for key in keys:
            target = target[key]
        target[last] = value
    return change


def drop(key):
    return lambda manifest: manifest.pop(key)


def add_listed_part(name):
    """A part ``name`` added and listed in the manifest with its true hash."""
    def make(parts):
        manifest = json.loads(parts["manifest.json"])
        manifest["parts"][name] = hashlib.sha256(b"x").hexdigest()
        return rezip([("manifest.json", reseal(manifest)), *[(n, d) for n, d in parts.items()
                                                             if n != "manifest.json"], (name, b"x")])
    return make


PARTS = ["manifest.json", "graph.txt", "libtensoregg_model.so", "tensoregg.h", "weights.npy"]
FIELDS = ["format", "format_version", "tensoregg_version", "target", "inputs", "outputs", "graph", "code",
          "parts"]
CODE_FIELDS = ["library", "weights", "machine", "weights_nbytes", "workspace_nbytes", "slots", "constants"]

VARIANTS = {
    **{f"flip {part} @{where}": (with_parts(lambda p, part=part, where=where:
                                            p.__setitem__(part, flip(p[part], where))), part)
       for part in PARTS for where in (0, 1000, -1)},
    **{f"missing field {f}": (edit(drop(f)), f) for f in FIELDS},
    **{f"missing code.{f}": (edit(lambda m, f=f: m["code"].pop(f)), f) for f in CODE_FIELDS},
    "format_version 2": (edit(set_in(["format_version"], 2)), "format_version"),
    "format_version 0": (edit(set_in(["format_version"], 0)), "format_version"),
    "format_version '1'": (edit(set_in(["format_version"], "1")), "format_version"),
    "format_version true": (edit(set_in(["format_version"], True)), "format_version"),
    "a later format's manifest": (with_parts(lambda p: p.__setitem__("manifest.json", json.dumps(
        {"format": "tensoregg-artifact", "format_version": 2, "tensoregg_version": "9.0"}).encode())),
        "format_version"),
    "another format": (edit(set_in(["format"], "onnx")), "format"),
    "version not a string": (edit(set_in(["tensoregg_version"], 1)), "tensoregg_version"),
    "unknown target": (edit(set_in(["target"], "nope")), "nope"),
    "inputs not a list": (edit(set_in(["inputs"], {})), "inputs"),
    "outputs not a list": (edit(set_in(["outputs"], "y")), "outputs"),
    "code not an object": (edit(set_in(["code"], [])), "code"),
    "parts not an object": (edit(set_in(["parts"], [])), "parts"),
    "input spec not an object": (edit(set_in(["inputs", 0], "x")), "inputs[0]"),
    "shape not a list": (edit(set_in(["inputs", 0, "shape"], "1,3,32,32")), "inputs[0].shape"),
    "negative dimension": (edit(set_in(["inputs", 0, "shape", 0], -1)), "inputs[0].shape"),
    "float dimension": (edit(set_in(["inputs", 0, "shape", 0], 1.0)), "inputs[0].shape"),
    "bool dimension": (edit(set_in(["inputs", 0, "shape", 0], True)), "inputs[0].shape"),
    "object dtype": (edit(set_in(["inputs", 0, "dtype"], "object")), "inputs[0].dtype"),
    "unknown dtype": (edit(set_in(["outputs", 0, "dtype"], "float33")), "outputs[0].dtype"),
    "another input shape": (edit(set_in(["inputs", 0, "shape"], [2, 3, 32, 32])), "inputs[0]"),
    "another input name": (edit(set_in(["inputs", 0, "name"], "y")), "inputs[0]"),
    "one input more": (edit(lambda m: m["inputs"].append(dict(m["inputs"][0]))), "tegg_num_inputs"),
    "another output dtype": (edit(set_in(["outputs", 0, "dtype"], "float64")), "outputs[0]"),
    "weights size": (edit(lambda m: m["code"].update(weights_nbytes=m["code"]["weights_nbytes"] + 64)),
                     "weights.npy"),
    "workspace size": (edit(lambda m: m["code"].update(workspace_nbytes=64)), "tegg_workspace_nbytes"),
    "output slot": (edit(set_in(["code", "slots", "probs"], 1)), "slots"),
    "output from nowhere": (edit(set_in(["code", "slots"], {})), "nowhere"),
    "another machine": (edit(set_in(["code", "machine"], "riscv64")), "machine"),
    "library part absent": (edit(set_in(["code", "library"], "graph.txt")), "library"),
    "wrong hash": (edit(lambda m: m["parts"].__setitem__("weights.npy", "0" * 64)), "weights.npy"),
    "hash not hex": (edit(lambda m: m["parts"].__setitem__("graph.txt", "xyz")), "graph.txt"),
    "graph part unlisted": (edit(set_in(["graph"], "other.txt")), "graph"),
    "manifest edited, not resealed": (with_parts(lambda p: p.__setitem__("manifest.json", p["manifest.json"]
                                                 .replace(b'"float32"', b'"float64"', 1))), "manifest.json"),
    "manifest without its hash": (with_parts(lambda p: p.__setitem__("manifest.json", json.dumps(
        {k: v for k, v in json.loads(p["manifest.json"]).items() if k != "manifest_sha256"}).encode())),
        "manifest_sha256"),
    "manifest not JSON": (with_parts(lambda p: p.__setitem__("manifest.json", b"{")), "manifest.json"),
    "manifest a list": (with_parts(lambda p: p.__setitem__("manifest.json", b"[]")), "manifest"),
    "manifest missing": (with_parts(lambda p: p.pop("manifest.json")), "manifest.json"),
    **{f"part {n} missing": (with_parts(lambda p, n=n: p.pop(n)), n)
       for n in ["graph.txt", "libtensoregg_model.so", "weights.npy", "tensoregg.h"]},
    "compressed parts": (deflated, "compressed"),
    "extra part": (with_parts(lambda p: p.__setitem__("extra.bin", b"x")), "extra.bin"),
    "part named twice": (lambda p: rezip([*p.items(), ("graph.txt", p["graph.txt"])]), "twice"),
    "zip slip, listed": (add_listed_part("../evil.so"), "../evil.so"),
    "zip slip, nested": (add_listed_part("a/../../evil"), "evil"),
    "absolute name": (add_listed_part("/tmp/evil"), "/tmp/evil"),
    "backslash name": (add_listed_part("..\\evil"), "evil"),
    "hidden name": (add_listed_part(".evil"), ".evil"),
}


def raw_variants(data: bytes) -> dict[str, bytes]:
    """Variants of the file's bytes: truncations and byte flips inside each entry's stored data."""
    sizes = (0, 1, 22, 100, len(data) // 2, len(data) - 22, len(data) - 1)
    out = {f"truncated to {n}": data[:n] for n in sizes}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            for k, at in enumerate((start, start + info.compress_size // 2, start + info.compress_size - 1)):
                out[f"raw flip in {info.filename} #{k}"] = flip(data, at)
    out["not a zip"] = b"\x7fELF" + data[4:200]
    return out


def test_there_are_at_least_fifty_variants(saved):
    assert len(VARIANTS) + len(raw_variants(saved[0].read_bytes())) >= 50


@pytest.mark.parametrize("name", list(VARIANTS))
def test_corrupted_artifact_is_refused(name, saved, tmp_path, monkeypatch):
    make, named = VARIANTS[name]
    path = tmp_path / "bad.tegg"
    path.write_bytes(make(entries(saved[0])))
    opened = []
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: opened.append(a) or pytest.fail("dlopen"))
    if "library" not in name and name not in {"another input shape", "another input name", "one input more",
                                              "another output dtype", "workspace size"}:
        with pytest.raises(ArtifactError, match=None) as info:
            tensoregg.load(path)
        assert named in str(info.value), str(info.value)
        assert not opened
        return
    monkeypatch.undo()  # refused by the library's own tables: loaded, never run
    with pytest.raises(ArtifactError) as info:
        tensoregg.load(path)
    assert named in str(info.value), str(info.value)


def test_raw_corruptions_are_refused(saved, tmp_path):
    for name, data in raw_variants(saved[0].read_bytes()).items():
        path = tmp_path / "bad.tegg"
        path.write_bytes(data)
        with pytest.raises(ArtifactError):
            tensoregg.load(path)
            pytest.fail(name)


def test_a_missing_file_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match=r"nowhere\.tegg"):
        tensoregg.load(tmp_path / "nowhere.tegg")


def test_extract_writes_only_inside_its_directory(saved, tmp_path):
    written = tensoregg.extract(saved[0], tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(["manifest.json", *PARTS[1:]])
    assert all((tmp_path / "out") in p.parents for p in written)
    bad = tmp_path / "bad.tegg"
    bad.write_bytes(VARIANTS["zip slip, listed"][0](entries(saved[0])))
    with pytest.raises(ArtifactError):
        tensoregg.extract(bad, tmp_path / "out2")
    assert not (tmp_path / "evil.so").exists() and not (tmp_path / "out2").exists()


def test_a_target_without_a_save_hook_cannot_save(tmp_path):
    module = tensoregg.compile(str(EXAMPLE), "ref", optimize=False)
    with pytest.raises(ArtifactError, match="ref"):
        module.save(tmp_path / "ref.tegg")


def test_a_loaded_artifact_raises_on_an_index_out_of_range(tmp_path):
    """The fault flag of the code that bounds indices is in the library too: a loaded model raises
    IndexOutOfRange naming the node, as the compiled one does."""
    from onnx import TensorProto, helper

    from tensoregg.errors import IndexOutOfRange

    graph = helper.make_graph([helper.make_node("Gather", ["x", "i"], ["y"], name="pick", axis=0)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3]),
                               helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    loaded = tensoregg.load(tensoregg.compile(model, "llvm").save(tmp_path / "gather.tegg"))
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    with pytest.raises(IndexOutOfRange, match="Gather node 'pick'"):
        loaded.run(x, np.array([1, 4]))
    np.testing.assert_array_equal(loaded.run(x, np.array([1, -1]))[0], x[[1, -1]])
