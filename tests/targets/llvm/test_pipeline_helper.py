"""The O3 pipeline runs in helper processes (tensoregg.targets.llvm.helpers): what LLVM keeps per
module stays there, a helper is replaced every HELPER_MODULES modules, its failures are CompileErrors
naming the module, and the modules of one compile are built on several helpers at once."""

import gc
import os
from collections import OrderedDict

import llvmlite.ir as ir
import pytest

from tensoregg.errors import CompileError
from tensoregg.targets.llvm import helpers, jit, objcache, pipeline


def module(k):
    """A distinct small module: a loop summing k * i (work for the vectorizer)."""
    m = ir.Module(name=f"m{k}")
    i64 = ir.IntType(64)
    fn = ir.Function(m, ir.FunctionType(i64, [i64]), name="f")
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i, acc = b.phi(i64), b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    acc.add_incoming(ir.Constant(i64, 0), entry)
    new_acc = b.add(acc, b.mul(i, ir.Constant(i64, k)))
    new_i = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(new_i, loop)
    acc.add_incoming(new_acc, loop)
    b.cbranch(b.icmp_signed("<", new_i, fn.args[0]), loop, done)
    b.position_at_end(done)
    b.ret(new_acc)
    return m


def rss():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(autouse=True)
def one_helper(monkeypatch, tmp_path):
    """One helper at a time (so that the tests can name it), fresh object caches."""
    helpers.stop_all()
    monkeypatch.setenv(helpers.JOBS_ENV, "1")
    monkeypatch.setattr(jit, "_machine_code", OrderedDict())
    monkeypatch.setenv(objcache.ENV, str(tmp_path / "objects"))
    yield
    helpers.stop_all()


def helper():
    """The helper process serving requests (the only one: ``one_helper``)."""
    (only,) = helpers._Pool.helpers
    return only.process


def test_distinct_modules_keep_no_memory_here_and_the_helper_is_replaced(monkeypatch):
    """60 distinct modules through the pipeline grow this process by less than 1 MB (run here, LLVM
    keeps about 50 KB each: 3 MB); the helper is replaced after HELPER_MODULES modules."""
    monkeypatch.setattr(helpers, "HELPER_MODULES", 16)
    for k in range(5):
        jit.machine_code(module(1000 + k))
    before, pids = rss(), set()
    for k in range(60):
        jit.machine_code(module(k))
        pids.add(helper().pid)
    assert rss() - before < 1 << 20
    assert len(pids) >= 4


def test_a_rejected_module_and_a_dead_helper_are_compile_errors():
    bad = module(7)
    bad.functions[0].blocks[-1].instructions.pop()  # no terminator: LLVM's verifier refuses it
    with pytest.raises(CompileError, match="LLVM rejected the generated module 'm7'"):
        jit.machine_code(bad)
    jit.machine_code(module(8))
    helper().kill()  # killed between requests (say, by the OOM killer): a fresh one serves
    helper().wait()
    assert jit.machine_code(module(9))


def test_a_forked_child_starts_its_own_helper():
    jit.machine_code(module(20))
    parent = helper().pid
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        forgot = not helpers._Pool.helpers
        ok = forgot and jit.machine_code(module(21)) and helper().pid != parent
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert helper().pid == parent and jit.machine_code(module(22))


PREFIX_SUM = """define void @f(ptr %a) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%j, %loop]
  %p = getelementptr float, ptr %a, i64 %i
  %j = add i64 %i, 1
  %q = getelementptr float, ptr %a, i64 %j
  %x = load float, ptr %p
  %y = load float, ptr %q
  %z = fadd float %x, %y
  store float %z, ptr %q
  %c = icmp slt i64 %j, 6
  br i1 %c, label %loop, label %done
done:
  ret void
}
"""
"""Six dependent scalar adds in a loop: O3 unrolls it fully, unless the module says NO_UNROLL."""


def test_a_module_marked_no_unroll_keeps_its_loops():
    unrolled = pipeline.build("assembly", PREFIX_SUM).decode()
    kept = pipeline.build("assembly", PREFIX_SUM + f"!{pipeline.NO_UNROLL} = !{{}}\n").decode()
    assert unrolled.count("addss") == 6 and kept.count("addss") == 1  # (v)addss: SSE or AVX
