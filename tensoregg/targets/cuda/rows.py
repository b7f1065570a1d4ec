"""The GPU row-reduction template: a stage whose every output element is a reduction (a Softmax's
max and sum, a LayerNormalization's mean and spread, ReduceSum/Mean/Max, a pooled mean), computed by
a warp per element instead of a thread::

    warp w of block b computes element p = b * warps + w (when there is one):
      each accumulator starts at the reduction's identity in every lane
      for q in 0..ceil(R / 32): lane l combines term r = q * 32 + l into it (when r < R), in order
      for m in 16, 8, 4, 2, 1: acc = combine(acc, the acc of lane l ^ m)   (``WarpShuffle``)
      lane 0: the epilogue on the accumulators, stored

The element-wise template (``schedule.bind_threads``) runs the same stage with a thread per element,
each summing its R terms in order. Here a lane sums every 32nd term, then the lanes are combined in a
butterfly: another order of float additions (compare with a tolerance); the emulation and the CUDA C
run this very loop program, so they agree bit for bit. ``row_stage`` recognizes the stages (the loop
``scalar_value`` writes: scalar accumulators, an initial store of the combiner's identity, reduction
loops of constant bounds, then the stores of the result), ``cost`` prices both templates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tensoregg.ir.compute import Buffer, Call, Const, Expr, Load, Var, call, fresh, select, walk
from tensoregg.ir.compute.expr import identity_of, idx
from tensoregg.ir.intrinsics import WARP, WARP_SHUFFLE
from tensoregg.ir.loops import For, Invoke, Local, Ref, Stmt, Store
from tensoregg.targets.cuda.schedule import THREADS

F32 = np.dtype(np.float32)
COMBINERS = ("add", "max", "min")
SECTOR_BYTES = 32
"""What device memory delivers for a load no neighbouring lane shares."""


@dataclass
class RowStage:
    """A stage the template applies to: ``outputs`` elements (the parallel loop ``stage``), each the
    epilogue of float32 ``accumulators`` combined over reductions of ``terms`` terms in all; the
    device-memory bytes a term's loads cost when neighbouring lanes compute neighbouring output
    elements (``thread_bytes``) or neighbouring terms of one (``warp_bytes``): its element size for a
    load whose address moves by one element (or not at all) from one lane to the next, a 32-byte
    sector where it jumps a sector or more, the element size times the stride between."""

    stage: For
    accumulators: list[Buffer]
    terms: int
    thread_bytes: int = 0
    warp_bytes: int = 0

    @property
    def outputs(self) -> int:
        return int(self.stage.stop.value)  # type: ignore[attr-defined]


def row_stage(stage: Stmt) -> RowStage | None:
    """``stage`` as a row reduction (see the module docstring), or None where it is none."""
    if not (isinstance(stage, For) and stage.kind == "parallel" and _is_const(stage.start, 0)
            and isinstance(stage.stop, Const)):
        return None
    accs, body = [], stage.body
    while len(body) == 1 and isinstance(body[0], Local) and body[0].scope != "shared":
        accs.append(body[0].buffer)
        body = body[0].body
    ids = {id(a) for a in accs}
    if not accs or any(a.size != 1 or a.dtype != F32 for a in accs):
        return None
    row = RowStage(stage, accs, 0)
    done = False
    for s in body:
        if isinstance(s, Store) and id(s.buffer) in ids and not done:
            if not isinstance(s.value, Const):
                return None
        elif isinstance(s, For) and not done:
            found = _reduction(s, ids)
            if found is None:
                return None
            row.terms += found
            _count_loads(row, s)
        elif isinstance(s, Store) and id(s.buffer) not in ids:
            done = True
        else:
            return None
    return row if done and row.terms else None


def _count_loads(row: RowStage, nest: For) -> None:
    """Add the bytes of ``nest``'s term's loads to ``row``'s (``RowStage``). A warp's lanes take
    consecutive terms: along the nest's innermost axis when it has one axis or its innermost is a
    warp wide, else across the window's rows (a sector a load)."""
    element = row.stage.unpack[-1][0] if row.stage.unpack else row.stage.var
    s: Stmt = nest
    while isinstance(s, For):
        term, extent, s = s.var, int(s.stop.value), s.body[0]  # type: ignore[attr-defined]
    assert isinstance(s, Store)
    along_terms = nest.body[0] is s or extent >= WARP
    for load in (x for x in walk(s.value) if isinstance(x, Load) and x.buffer is not s.buffer):
        row.thread_bytes += _bytes(load, element)
        row.warp_bytes += _bytes(load, term) if along_terms else SECTOR_BYTES


def _bytes(load: Load, v: Var) -> int:
    """Device-memory bytes of ``load`` per lane when ``v`` steps by one from lane to lane."""
    total, size = 0, 1
    for i, n in reversed(list(zip(load.index, load.buffer.shape))):
        k = _coefficient(i, v)
        if k is None:
            return SECTOR_BYTES
        total, size = total + k * size, size * n
    item = load.buffer.dtype.itemsize
    return min(SECTOR_BYTES, item * max(1, abs(total)))


def _coefficient(e: Expr, v: Var) -> int | None:
    """``e``'s coefficient of ``v`` where ``e`` is affine in it (sums, products with constants), else
    None."""
    if e is v:
        return 1
    if isinstance(e, (Const, Var)) or not any(x is v for x in walk(e)):
        return 0
    if isinstance(e, Call) and e.fn in ("add", "sub"):
        a, b = (_coefficient(x, v) for x in e.args)
        return None if a is None or b is None else a + b if e.fn == "add" else a - b
    if isinstance(e, Call) and e.fn == "mul":
        x, y = e.args
        x, y = (x, y) if isinstance(y, Const) else (y, x)
        k = _coefficient(x, v)
        return None if k is None or not isinstance(y, Const) else k * int(y.value)  # type: ignore[call-overload]
    return None


def _reduction(loop: For, ids: set[int]) -> int | None:
    """The terms of a reduction nest (constant bounds from 0, one combining store into an accumulator
    innermost, from the combiner's identity: checked by ``lower``), or None."""
    n, s = 1, loop
    while isinstance(s, For):
        if not (s.kind == "serial" and not s.unpack and _is_const(s.start, 0) and isinstance(s.stop, Const)
                and len(s.body) == 1):
            return None
        n *= int(s.stop.value)
        s = s.body[0]  # type: ignore[assignment]
    if not (isinstance(s, Store) and id(s.buffer) in ids and _combining(s) is not None):
        return None
    return n


def _combining(s: Store) -> str | None:
    """The combiner of an accumulating store ``acc[0] = combiner(acc[0], term)``, None for another."""
    v = s.value
    if not (isinstance(v, Call) and v.fn in COMBINERS and len(v.args) == 2):
        return None
    acc, term = v.args
    if not (isinstance(acc, Load) and acc.buffer is s.buffer) or _reads(term, {id(s.buffer)}):
        return None
    return v.fn


def lower(row: RowStage, warps: int = THREADS // WARP) -> For | None:
    """The block loop of ``row`` in the template (``warps`` warps a block, fewer for fewer outputs);
    None where an accumulator starts elsewhere than at its combiner's identity (each lane would start
    there: a sum would count its start 32 times) or is combined by no reduction."""
    warps = max(1, min(warps, row.outputs))
    block, thread = fresh("blk"), fresh("thr")
    warp, lane = call("div", thread, idx(WARP)), call("rem", thread, idx(WARP))
    combiners: dict[int, str] = {}
    body: list[Stmt] = []
    stores: list[Stmt] = []
    for s in _inner(row.stage):
        if isinstance(s, For):
            nest, innermost = _strided(s, lane)
            combiners[id(innermost.buffer)] = _combining(innermost)  # type: ignore[assignment]
            body.append(nest)
        elif isinstance(s, Store) and any(s.buffer is a for a in row.accumulators):
            body.append(s)
        else:
            stores.append(s)
    if any(id(a) not in combiners for a in row.accumulators):
        return None
    for s in body:
        if isinstance(s, Store) and not _is_identity(s.value, combiners[id(s.buffer)]):
            return None
    other = Buffer("lanes", F32, (1,))
    zero = (idx(0),)
    for a in row.accumulators:
        combiner = combiners[id(a)]
        for m in (16, 8, 4, 2, 1):
            body.append(Invoke(WARP_SHUFFLE, (Ref(other, idx(0)), Ref(a, idx(0)), idx(m))))
            body.append(Store(a, zero, call(combiner, Load(a, zero), Load(other, zero))))
    body.append(For(fresh("first"), idx(0), select(call("eq", lane, idx(0)), idx(1), idx(0)), stores))
    for a in [other, *reversed(row.accumulators)]:
        body = [Local(a, body)]
    p = block * idx(warps) + warp
    stage = row.stage
    element = For(stage.var, p, call("min", p + idx(1), stage.stop), body, "serial", stage.unpack)
    threads = For(thread, idx(0), idx(warps * WARP), [element], "thread")
    return For(block, idx(0), idx(math.ceil(row.outputs / warps)), [threads], "block")


def _inner(stage: For) -> list[Stmt]:
    body = stage.body
    while len(body) == 1 and isinstance(body[0], Local):
        body = body[0].body
    return body


def _strided(nest: For, lane: Expr) -> tuple[For, Store]:
    """The reduction ``nest`` with its terms dealt to the lanes: lane l takes terms l, l + 32, ...
    (the nest's axes read from one flat term index), in order."""
    axes, s = [], nest
    while isinstance(s, For):
        axes.append((s.var, int(s.stop.value)))  # type: ignore[attr-defined]
        s = s.body[0]  # type: ignore[assignment]
    assert isinstance(s, Store)
    total = math.prod(n for _, n in axes)
    q = fresh("q")
    r = q * idx(WARP) + lane
    var, unpack = (axes[0][0], ()) if len(axes) == 1 else (fresh("r"), tuple(axes))
    term = For(var, r, call("min", r + idx(1), idx(total)), [s], "serial", unpack)
    return For(q, idx(0), idx(math.ceil(total / WARP)), [term]), s


def _is_identity(e: Expr, combiner: str) -> bool:
    return isinstance(e, Const) and float(e.value) == float(identity_of(combiner, F32))  # type: ignore[arg-type]


def _reads(e: Expr, ids: set[int]) -> bool:
    return any(isinstance(x, Load) and id(x.buffer) in ids for x in walk(e))


def _is_const(e: Expr, value: int) -> bool:
    return isinstance(e, Const) and int(e.value) == value
