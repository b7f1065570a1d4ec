"""Sharing a kernel's regions among the threads of a run, so that a thread that is not running holds
nobody up.

A kernel's body is a sequence of regions (``codegen``): a parallel loop, cut into chunks, or any other
statement, one chunk. The threads of a run claim chunks from two words the run shares (``{i64
claim, i64 done}`` at the entry point's ``barrier``): ``claim`` holds the region's number (its high 32
bits) and a bit per chunk claimed, ``done`` counts the chunks finished, and whoever finishes the
region's last chunk moves ``claim`` on to the next region. A thread first takes the chunks of its own
share (those a static split would give it: the same rows from kernel to kernel, still in its
caches), then the highest chunk left; with none left it waits until the region is done, so the
next region reads everything this one wrote. A thread descheduled on an overcommitted machine has
its share taken by the threads that run, and one that comes late skips the regions already done:
a region waits only for chunks in progress, never for every thread to arrive.

Each thread keeps the number of the region it is in a context of its own, ``{ptr barrier, i64
region}``, that the entry point allocates and passes to the kernels as their last argument; a run
starts with the shared words at 0 (``tensoregg.runtime.team``). With one thread no context is read:
each region is one chunk, run at once.
"""

from __future__ import annotations

import llvmlite.ir as ir

from tensoregg.targets.llvm.irtypes import I32, I64, PTR, VOID, declare

CHUNKS_PER_THREAD = 4
"""Chunks a parallel loop is cut into per thread: enough for a running thread to take over most of a
descheduled one's share, few enough that claiming (an atomic on a shared line) costs little."""
MAX_CHUNKS = 32
"""The most chunks of a region (one bit each in the low half of the claim word)."""
SPIN = 4096
"""Polls a thread waiting for a region spins before it yields its CPU between polls."""
CLAIM, FINISH = "tensoregg_claim", "tensoregg_finish"


def chunk_count(b: ir.IRBuilder, trip: ir.Value, nthreads: ir.Value) -> ir.Value:
    """The chunks a parallel loop of ``trip`` iterations is cut into: 1 on one thread, else
    ``CHUNKS_PER_THREAD`` per thread but at most ``trip`` and ``MAX_CHUNKS`` (and at least 1)."""
    want = b.mul(nthreads, ir.Constant(I64, CHUNKS_PER_THREAD))
    most = ir.Constant(I64, MAX_CHUNKS)
    want = b.select(b.icmp_signed("<", want, most), want, most)
    want = b.select(b.icmp_signed("<", trip, want), trip, want)
    one = ir.Constant(I64, 1)
    want = b.select(b.icmp_signed("<", want, one), one, want)
    return b.select(b.icmp_signed("<=", nthreads, one), one, want)


def _shared(b: ir.IRBuilder, context: ir.Value) -> tuple[ir.Value, ir.Value]:
    """The run's shared words and the address of this thread's region number, from its context."""
    words = b.inttoptr(b.load(context, typ=I64), PTR)
    return words, b.gep(context, [ir.Constant(I64, 1)], inbounds=True, source_etype=I64)


def claim_function(module: ir.Module) -> ir.Function:
    """``i64 tensoregg_claim(ptr context, i64 tid, i64 nthreads, i64 chunks, i64 first)``: a chunk
    of the current region for thread ``tid`` to run, or -1 once the region is done (the thread then
    moves on to the next one). ``first`` is 1 on a region's first call: with one thread the region
    is chunk 0, run once."""
    if CLAIM in module.globals:
        return module.globals[CLAIM]
    fn = ir.Function(module, ir.FunctionType(I64, [PTR, I64, I64, I64, I64]), CLAIM)
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")
    context, tid, n, chunks, first = fn.args
    entry, alone, shared, poll, past, check, wait, take, got = (fn.append_basic_block(x) for x in (
        "entry", "alone", "shared", "poll", "past", "check", "wait", "take", "got"))
    b = ir.IRBuilder(entry)
    zero, one, none = ir.Constant(I64, 0), ir.Constant(I64, 1), ir.Constant(I64, -1)
    b.cbranch(b.icmp_signed("<=", n, one), alone, shared)
    b.position_at_end(alone)
    b.ret(b.select(b.icmp_signed("!=", first, zero), zero, none))
    b.position_at_end(shared)
    words, at = _shared(b, context)
    region = b.load(at, typ=I64)
    lo, hi = (b.sdiv(b.mul(t, chunks), n) for t in (tid, b.add(tid, one)))
    own = b.sub(b.shl(one, hi), b.shl(one, lo))  # bits lo..hi-1: this thread's share
    every = b.sub(b.shl(one, chunks), one)
    b.branch(poll)
    b.position_at_end(poll)
    spins = b.phi(I64)
    spins.add_incoming(zero, shared)
    word = b.load_atomic(words, "acquire", 8, typ=I64)
    b.cbranch(b.icmp_unsigned("!=", b.lshr(word, ir.Constant(I64, 32)), region), past, check)
    b.position_at_end(past)  # the region is done
    b.store(b.add(region, one), at)
    b.ret(none)
    b.position_at_end(check)
    free = b.and_(b.xor(word, none), every)
    b.cbranch(b.icmp_unsigned("==", free, zero), wait, take)
    b.position_at_end(wait)  # every chunk is claimed: wait for the last ones to finish
    with b.if_then(b.icmp_signed(">", spins, ir.Constant(I64, SPIN))):
        b.call(declare(module, "sched_yield", I32, []), [])
    spins.add_incoming(b.add(spins, one), b.block)
    b.branch(poll)
    b.position_at_end(take)
    mine = b.and_(free, own)
    highest = b.sub(ir.Constant(I64, 63), b.ctlz(free, ir.Constant(ir.IntType(1), 1)))
    pick = b.select(b.icmp_unsigned("!=", mine, zero), b.cttz(mine, ir.Constant(ir.IntType(1), 1)), highest)
    swapped = b.cmpxchg(words, word, b.or_(word, b.shl(one, pick)), "acq_rel", "acquire")
    spins.add_incoming(spins, b.block)
    b.cbranch(b.extract_value(swapped, 1), got, poll)
    b.position_at_end(got)
    b.ret(pick)
    return fn


def finish_function(module: ir.Module) -> ir.Function:
    """``void tensoregg_finish(ptr context, i64 nthreads, i64 chunks)``: one more chunk of the
    current region is done; the last one moves the run on to the next region."""
    if FINISH in module.globals:
        return module.globals[FINISH]
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64]), FINISH)
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")
    context, n, chunks = fn.args
    entry, shared, last, out = (fn.append_basic_block(x) for x in ("entry", "shared", "last", "out"))
    b = ir.IRBuilder(entry)
    one = ir.Constant(I64, 1)
    b.cbranch(b.icmp_signed("<=", n, one), out, shared)
    b.position_at_end(shared)
    words, at = _shared(b, context)
    region = b.load(at, typ=I64)
    done = b.gep(words, [one], inbounds=True, source_etype=I64)
    finished = b.add(b.atomic_rmw("add", done, one, "acq_rel"), one)
    b.cbranch(b.icmp_signed("==", finished, chunks), last, out)
    b.position_at_end(last)  # (store_atomic wants typed pointers: exchanges instead)
    b.atomic_rmw("xchg", done, ir.Constant(I64, 0), "monotonic")
    b.atomic_rmw("xchg", words, b.shl(b.add(region, one), ir.Constant(I64, 32)), "release")
    b.branch(out)
    b.position_at_end(out)
    b.ret_void()
    return fn
