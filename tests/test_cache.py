"""The compile cache: a hit loads the artifact a miss stored; another model, target or option is a
miss; a corrupted entry or one from another version is ignored, rebuilt and replaced."""

import logging
from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg import cache
from tensoregg.runtime import artifact

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "tinycnn.onnx")
X = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def compile_cached(**options):
    return tensoregg.compile(EXAMPLE, optimize=False, cache=True, **options)


def test_a_miss_stores_and_a_hit_loads(cache_dir):
    fresh = compile_cached()
    assert fresh.graph is not None
    (entry,) = cache_dir.glob("*.tegg")
    hit = compile_cached()
    assert hit.graph is None and hit.graph_text == str(fresh.graph)
    np.testing.assert_array_equal(hit.run(X)[0], fresh.run(X)[0])
    assert list(cache_dir.glob("*.tegg")) == [entry]


def test_another_model_target_or_option_is_a_miss(cache_dir):
    compile_cached()
    tensoregg.compile(EXAMPLE, optimize=False, cache=True, rule_families=["algebra"])
    assert len(list(cache_dir.glob("*.tegg"))) == 2
    data = Path(EXAMPLE).read_bytes()
    digest, target = cache.model_digest(EXAMPLE), tensoregg.targets.get_target("llvm")
    assert digest == cache.model_digest(data) and digest != cache.model_digest(data + b"\0")
    key = cache.cache_key(digest, "llvm", target, None, {"optimize": False})
    assert key != cache.cache_key(cache.model_digest(data + b"\0"), "llvm", target, None, {"optimize": False})
    assert key != cache.cache_key(digest, "llvm", target, None, {"optimize": True})
    assert key != cache.cache_key(digest, "llvm", target, ["algebra"], {"optimize": False})
    assert key != cache.cache_key(digest, "interp", target, None, {"optimize": False})


def test_without_cache_nothing_is_stored_or_read(cache_dir):
    compile_cached()
    assert tensoregg.compile(EXAMPLE, optimize=False).graph is not None
    assert len(list(cache_dir.glob("*.tegg"))) == 1


def test_a_graph_or_a_target_that_cannot_save_is_compiled_without_it(cache_dir):
    graph = compile_cached().graph
    assert tensoregg.compile(graph, cache=True, optimize=False).graph is graph
    assert tensoregg.compile(EXAMPLE, "ref", cache=True, optimize=False).graph is not None
    assert len(list(cache_dir.glob("*.tegg"))) == 1


def test_a_corrupted_entry_is_rebuilt(cache_dir, caplog):
    fresh = compile_cached()
    (entry,) = cache_dir.glob("*.tegg")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="tensoregg.cache"):
        rebuilt = compile_cached()
    assert rebuilt.graph is not None and "ignoring compile cache entry" in caplog.text
    np.testing.assert_array_equal(rebuilt.run(X)[0], fresh.run(X)[0])
    assert compile_cached().graph is None  # the entry was replaced by a good one


def test_an_entry_from_another_version_is_rebuilt(cache_dir, caplog, monkeypatch):
    monkeypatch.setattr(artifact, "__version__", "0.0.1")  # the entry is stamped by another version
    compile_cached()
    monkeypatch.undo()
    monkeypatch.setenv(cache.ENV, str(cache_dir))
    with caplog.at_level(logging.WARNING, logger="tensoregg.cache"):
        assert compile_cached().graph is not None
    assert "written by tensoregg 0.0.1" in caplog.text
    assert compile_cached().graph is None


def test_clear_and_where_entries_live(cache_dir, monkeypatch, tmp_path):
    compile_cached()
    assert cache.clear() == 1 and not list(cache_dir.glob("*.tegg"))
    monkeypatch.delenv(cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "tensoregg" / "artifacts"


def test_an_entry_that_is_a_symlink_is_not_trusted(cache_dir, tmp_path, caplog):
    """An artifact's hashes check its integrity, not who wrote it: an entry reached through a symlink
    (someone else's file) is not loaded; the compile rebuilds."""
    compile_cached()
    (entry,) = cache_dir.glob("*.tegg")
    elsewhere = tmp_path / "planted.tegg"
    entry.rename(elsewhere)
    entry.symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger="tensoregg"):
        module = compile_cached()
    assert module.graph is not None, "the symlinked entry was loaded"
    assert "not a regular file of this user" in caplog.text
