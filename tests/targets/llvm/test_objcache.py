"""Object code kept on disk (tensoregg.targets.llvm.objcache) and modules built on several helper
processes at once (tensoregg.targets.llvm.helpers): a kernel is compiled once for every model and
process that has it; an entry that cannot be trusted is never loaded."""

import os
from collections import OrderedDict

import numpy as np
import pytest

import tensoregg
from tensoregg.errors import CompileError
from tensoregg.targets.llvm import helpers, jit, objcache, pipeline
from tensoregg.testing_models import mlp
from tests.targets.llvm.test_pipeline_helper import module


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A fresh object cache on disk and in memory; every module LLVM builds is counted."""
    folder = tmp_path / "objects"
    monkeypatch.setenv(objcache.ENV, str(folder))
    monkeypatch.setattr(jit, "_machine_code", OrderedDict())
    built = []
    real = helpers.build
    monkeypatch.setattr(helpers, "build", lambda request: built.append(request.name) or real(request))
    return folder, built


def entries(folder):
    return sorted(folder.glob("*.o"))


def test_a_module_is_built_once_across_processes_and_models(cache):
    folder, built = cache
    first = jit.machine_codes([module(1), module(2)])
    assert built == ["m1", "m2"] and len(entries(folder)) == 2
    jit._machine_code.clear()  # as a fresh process sees it: only the disk
    again = jit.machine_codes([module(2), module(3), module(1)])
    assert built == ["m1", "m2", "m3"]
    assert again[0] == first[1] and again[2] == first[0]


def test_a_kernel_two_models_share_is_compiled_once(cache):
    """Two MLPs that differ in their last layer only: the second compile builds the modules of its
    new kernels and of its entry point, not those of the layers they share."""
    _, built = cache
    a = tensoregg.compile(mlp(sizes=(64, 32, 16, 10), batch=4), "llvm")
    n = len(built)
    b = tensoregg.compile(mlp(sizes=(64, 32, 16, 3), batch=4), "llvm")
    shared = set(a.program.kernel_names) & set(b.program.kernel_names)
    assert shared and len(built) - n == len(b.program.ir.modules) - len(shared)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    want = tensoregg.compile(mlp(sizes=(64, 32, 16, 3), batch=4), "ref").run(x)[0]
    np.testing.assert_allclose(b.run(x)[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["flip", "truncate", "symlink", "magic"])
def test_an_entry_that_cannot_be_trusted_is_rebuilt_not_loaded(cache, damage, tmp_path):
    folder, built = cache
    good = jit.machine_codes([module(4)])[0]
    (entry,) = entries(folder)
    data = entry.read_bytes()
    if damage == "flip":
        entry.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    elif damage == "truncate":
        entry.write_bytes(data[:len(data) // 2])
    elif damage == "magic":
        entry.write_bytes(b"X" + data[1:])
    else:
        elsewhere = tmp_path / "elsewhere.o"
        elsewhere.write_bytes(data)
        entry.unlink()
        entry.symlink_to(elsewhere)
    jit._machine_code.clear()
    assert objcache.load(entry.stem) is None
    assert jit.machine_codes([module(4)])[0] == good and built == ["m4", "m4"]
    assert not entry.is_symlink() and objcache.load(entry.stem) == good


def test_off_keeps_nothing_on_disk(cache, monkeypatch):
    folder, built = cache
    monkeypatch.setenv(objcache.ENV, "off")
    jit.machine_codes([module(5)])
    jit._machine_code.clear()
    jit.machine_codes([module(5)])
    assert built == ["m5", "m5"] and not folder.exists()


def test_the_directory_is_trimmed_least_recently_used_first(cache, monkeypatch):
    folder, _ = cache
    jit.machine_codes([module(k) for k in range(3)])
    size = max(e.stat().st_size for e in entries(folder))
    old = entries(folder)
    for k, path in enumerate(old):
        os.utime(path, (1000 + k, 1000 + k))
    monkeypatch.setattr(objcache, "MAX_BYTES", 4 * size)
    monkeypatch.setattr(objcache, "TRIM_EVERY", 1)
    new = jit.machine_codes([module(k) for k in range(3, 5)])  # 5 entries: over 4, trimmed to <= 3 sizes
    kept = entries(folder)
    assert old[0] not in kept and old[1] not in kept and len(kept) >= 2
    assert {objcache.load(p.stem) for p in kept} >= set(new)  # the newest stay


def test_modules_are_built_on_several_helpers_and_a_rejected_one_is_named(cache, monkeypatch):
    _, built = cache
    helpers.stop_all()
    monkeypatch.setenv(helpers.JOBS_ENV, "2")
    monkeypatch.setattr(helpers, "PARALLEL_MIN_BYTES", 0)  # however small
    codes = jit.machine_codes([module(k) for k in range(10, 16)])
    assert len({h.process.pid for h in helpers._Pool.helpers}) == 2 and len(set(codes)) == 6
    bad = module(17)
    bad.functions[0].blocks[-1].instructions.pop()  # no terminator: LLVM's verifier refuses it
    with pytest.raises(CompileError, match="rejected the generated module 'm17'"):
        jit.machine_codes([module(16), bad, module(18)])
    assert sorted(built[-3:]) == ["m16", "m17", "m18"]
    helpers.stop_all()


def test_a_few_small_modules_are_built_on_one_helper(cache, monkeypatch):
    helpers.stop_all()
    monkeypatch.setenv(helpers.JOBS_ENV, "2")
    modules = [module(k) for k in range(20, 26)]
    assert sum(len(str(m)) for m in modules) < helpers.PARALLEL_MIN_BYTES
    codes = jit.machine_codes(modules)
    assert len(helpers._Pool.helpers) == 1 and len(set(codes)) == 6
    helpers.stop_all()


def test_a_micro_kernel_is_one_module_that_the_kernels_declare(cache):
    model = tensoregg.compile(mlp(sizes=(256, 256, 192, 128), batch=64), "llvm")
    ir = model.program.ir
    routines = [m for m in ir.kernels if not m.name.startswith("te_")]
    assert any(m.name.startswith("gemm_") for m in routines)
    for routine in routines:
        users = [m for m in ir.kernels if m.name.startswith("te_") and routine.name in m.globals]
        assert users and all(m.globals[routine.name].is_declaration for m in users)
        assert not routine.globals[routine.name].is_declaration
    # a kernel calling a routine (a tiled GEMM) is built without loop unrolling, the others with it
    marked = {m.name for m in ir.modules if f"!{pipeline.NO_UNROLL} = " in str(m)}
    kernels = [m for m in ir.kernels if m.name.startswith("te_")]
    callers = {m.name for m in kernels if any(r.name in m.globals for r in routines)}
    assert marked == callers and callers and ir.entry.name not in marked
