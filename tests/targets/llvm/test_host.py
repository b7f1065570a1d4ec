"""The host's measured description: its contract, not its values (tests never expect a decision from
the host's figures: see tensoregg.targets.llvm.machines). Measured once, cached as plain JSON, a
corrupted or foreign cache measured again, an unwritable one harmless, the figures plausible."""

import dataclasses
import json

import pytest

from tensoregg.targets.llvm import host


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """host_target with an empty cache directory and counted, instant measurements."""
    calls = []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(host, "measure_peak_flops", lambda lanes: calls.append("peak") or 50e9)
    monkeypatch.setattr(host, "measure_bandwidth", lambda: calls.append("bandwidth") or 10e9)
    monkeypatch.setattr(host, "measure_efficiency", lambda tiles, lanes, peak: [
        dataclasses.replace(t, efficiency=0.5) for t in tiles])
    host.host_target.cache_clear()
    yield tmp_path, calls
    host.host_target.cache_clear()


def cache_file(root):
    (path,) = (root / "tensoregg").glob("host-*.json")
    return path


def test_measured_once_then_read_from_the_cache(fresh):
    root, calls = fresh
    target = host.host_target()
    assert calls == ["peak", "bandwidth"]
    assert target.core_flops == 50e9 and target.mem_bandwidth == 10e9
    assert all(u.efficiency == 0.5 for u in target.microkernels)
    data = json.loads(cache_file(root).read_text())
    assert data["version"] == host.CACHE_VERSION and data["core_flops"] == 50e9
    host.host_target.cache_clear()
    assert host.host_target() == target and calls == ["peak", "bandwidth"]


@pytest.mark.parametrize("corrupt", [
    lambda d: "not json {",
    lambda d: json.dumps({**d, "version": -1}),
    lambda d: json.dumps({**d, "key": "someone else's"}),
    lambda d: json.dumps({**d, "core_flops": -5}),
    lambda d: json.dumps({**d, "bandwidth": "fast"}),
    lambda d: json.dumps({**d, "ukernels": {k: 7.0 for k in d["ukernels"]}}),
    lambda d: json.dumps({**d, "ukernels": {}}),
    lambda d: json.dumps({**d, "core_flops": float("nan")}),
    lambda d: json.dumps({**d, "core_flops": 1e300}),
    lambda d: json.dumps({**d, "bandwidth": True}),
    lambda d: json.dumps({**d, "ukernels": {k: float("inf") for k in d["ukernels"]}}),
    lambda d: json.dumps({**d, "ukernels": {k: "0.5" for k in d["ukernels"]}}),
    lambda d: json.dumps({**d, "pad": "x" * (4 << 20)}),
])
def test_a_corrupted_or_foreign_cache_is_measured_again(fresh, corrupt):
    root, calls = fresh
    host.host_target()
    path = cache_file(root)
    path.write_text(corrupt(json.loads(path.read_text())))
    host.host_target.cache_clear()
    target = host.host_target()
    assert calls == ["peak", "bandwidth"] * 2
    assert target.core_flops == 50e9 and json.loads(path.read_text())["core_flops"] == 50e9


def test_an_unwritable_cache_is_harmless(fresh, monkeypatch):
    root, _ = fresh
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "file"))
    (root / "file").write_text("a file where the cache directory would go")
    assert host.host_target().core_flops == 50e9


def test_the_measured_figures_are_plausible():
    """The real measurement (cached by earlier runs): rates a CPU core can have, shares of the peak."""
    target = host.host_target()
    assert 1e9 < target.core_flops < 1e13 and 1e8 < target.mem_bandwidth < 1e13
    assert target.microkernels and all(0 < u.efficiency <= 1 for u in target.microkernels)
    assert target.lanes * 32 == target.vector_bits and target.cores >= 1


def test_a_symlinked_cache_is_not_followed(fresh, tmp_path):
    """A cache file, or cache directory, that is a symlink is neither read nor written through: a
    plausible file planted elsewhere does not steer the compiler, and is left untouched."""
    root, calls = fresh
    host.host_target()
    path = cache_file(root)
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps({**json.loads(path.read_text()), "core_flops": 9e11}))
    path.unlink()
    path.symlink_to(planted)
    host.host_target.cache_clear()
    assert host.host_target().core_flops == 50e9 and calls == ["peak", "bandwidth"] * 2
    assert not path.is_symlink() and json.loads(planted.read_text())["core_flops"] == 9e11
    (root / "tensoregg").rename(tmp_path / "real")
    (root / "tensoregg").symlink_to(tmp_path / "real")
    host.host_target.cache_clear()
    assert host.host_target().core_flops == 50e9 and calls == ["peak", "bandwidth"] * 3
