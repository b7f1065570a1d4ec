"""Tensors as z3 terms, for proving index maps for all sizes: a tensor is its shape (z3 integers)
and the value of element ``i`` (a term over uninterpreted source tensors), with the facts that make
it well typed. Two terms are the same program when their shapes agree and element ``i`` of one is
the same term as element ``i`` of the other for every ``i`` in bounds.

Ranks are Python integers (a proof enumerates them); sizes, permutations and axes are z3 integers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import z3

Index = Sequence[z3.ArithRef]
Read = tuple[z3.ExprRef, tuple[z3.BoolRef, ...]]
"""An element's value and the facts that pin the fresh variables it was read through."""

VALUE = z3.DeclareSort("Value")
"""Element values: uninterpreted, so an equality of elements is an equality of index maps."""

_names = itertools.count()

LINE = z3.Int("line_k")
"""The place on a line that ``along_axis`` and the contractions read: one free variable shared by
both sides of a claim, so a proof holds for every place (quantifier free, so a wrong rule gets a
counterexample); the elements are then the same term exactly when they read the same lines."""


@dataclass(frozen=True)
class Sym:
    """A symbolic tensor: ``shape``, ``read(i)`` (element ``i``) and the facts of a well-typed term."""

    shape: tuple[z3.ArithRef, ...]
    read: Callable[[Index], Read]
    facts: tuple[z3.BoolRef, ...] = ()

    @property
    def rank(self) -> int:
        return len(self.shape)


def fresh(prefix: str, n: int) -> tuple[z3.ArithRef, ...]:
    """``n`` new z3 integers."""
    k = next(_names)
    return tuple(z3.Int(f"{prefix}{k}_{j}") for j in range(n))


def in_bounds(i: Index, shape: Sequence[z3.ArithRef]) -> z3.BoolRef:
    return z3.And(*[z3.And(a >= 0, a < d) for a, d in zip(i, shape)])


def ravel(i: Index, shape: Sequence[z3.ArithRef]) -> z3.ArithRef:
    """Row-major flat position of index ``i`` in ``shape``."""
    flat: z3.ArithRef = z3.IntVal(0)
    for a, d in zip(i, shape):
        flat = flat * d + a
    return flat


def count(shape: Sequence[z3.ArithRef]) -> z3.ArithRef:
    n: z3.ArithRef = z3.IntVal(1)
    for d in shape:
        n = n * d
    return n


def pick(items: Sequence[z3.ArithRef], k: z3.ArithRef) -> z3.ArithRef:
    """``items[k]`` for a symbolic ``k`` in range (an array read, which z3 splits on lazily)."""
    k = z3.simplify(z3.IntVal(k) if isinstance(k, int) else k)
    if z3.is_int_value(k) and 0 <= k.as_long() < len(items):
        return items[k.as_long()]
    array = z3.K(z3.IntSort(), z3.IntVal(0))
    for j, item in enumerate(items):
        array = z3.Store(array, j, item)
    return z3.Select(array, k)


def source(name: str, rank: int, *, flat: bool = False) -> Sym:
    """A graph input of ``rank`` with symbolic sizes. ``flat``: its elements are named by their
    row-major position (the same element, since positions of in-bounds indices are unique), so that
    proofs about views compare positions, not indices."""
    shape = fresh(f"{name}_dim", rank)
    if flat:
        at = z3.Function(name, z3.IntSort(), VALUE)
        return Sym(shape, lambda i: (at(ravel(i, shape)), ()), tuple(d >= 0 for d in shape))
    fn = z3.Function(name, *[z3.IntSort()] * rank, VALUE) if rank else z3.Const(name, VALUE)
    return Sym(shape, lambda i: (fn(*i) if rank else fn, ()), tuple(d >= 0 for d in shape))


Perm = tuple[z3.ArrayRef, z3.ArrayRef]
"""A permutation of axes (an array from output axis to input axis) and its inverse. Stating the
inverse (a bijection) spares every proof the pigeonhole argument that a one-to-one perm is onto, which
z3 finds slowly from rank 5 on; arrays let quantified facts about them match any symbolic axis."""

_AXES = z3.ArraySort(z3.IntSort(), z3.IntSort())


def permutation(rank: int, prefix: str = "perm") -> Perm:
    """A symbolic permutation of ``rank`` axes (``transpose`` states the facts that make it one)."""
    k = next(_names)
    return z3.Const(f"{prefix}{k}", _AXES), z3.Const(f"{prefix}{k}_inv", _AXES)


def axes(values: Sequence[int]) -> Perm:
    """A constant permutation (and its inverse)."""
    forward, inverse = z3.K(z3.IntSort(), z3.IntVal(0)), z3.K(z3.IntSort(), z3.IntVal(0))
    for k, v in enumerate(values):
        forward, inverse = z3.Store(forward, k, v), z3.Store(inverse, v, k)
    return forward, inverse


def is_permutation(perm: Perm, rank: int) -> z3.BoolRef:
    """``perm`` maps the ``rank`` axes one to one onto themselves, its second part undoing it."""
    forward, inverse = perm
    j = z3.Int(f"axis{next(_names)}")
    return z3.And(
        z3.ForAll([j], z3.Implies(z3.And(j >= 0, j < rank), z3.And(forward[j] >= 0, forward[j] < rank,
                                                                     inverse[forward[j]] == j))),
        z3.ForAll([j], z3.Implies(z3.And(j >= 0, j < rank), z3.And(inverse[j] >= 0, inverse[j] < rank,
                                                                     forward[inverse[j]] == j))))


def transpose(t: Sym, perm: Perm | None, perm_rank: int | None = None) -> Sym:
    """ONNX Transpose: output axis k is input axis ``perm[k]`` (``None``: the axes reversed), so input
    axis m is read at output axis ``inverse[m]``. A perm of ``perm_rank`` axes (default: ``t``'s
    rank) other than ``t``'s rank makes the term ill typed."""
    rank = t.rank
    if perm is None:
        perm = axes(range(rank - 1, -1, -1))
    if (rank if perm_rank is None else perm_rank) != rank:
        return Sym(t.shape, t.read, (*t.facts, z3.BoolVal(False)))
    forward, inverse = perm
    shape = tuple(pick(t.shape, forward[k]) for k in range(rank))
    return Sym(shape, lambda i: t.read([pick(list(i), inverse[m]) for m in range(rank)]),
               (*t.facts, is_permutation(perm, rank)))


def _broadcast_index(i: Index, shape: Sequence[z3.ArithRef]) -> list[z3.ArithRef]:
    """The index an operand of ``shape`` is read at for output index ``i`` (trailing axes aligned)."""
    lead = len(i) - len(shape)
    return [z3.If(d == 1, 0, a) for a, d in zip(i[lead:], shape)]


def broadcast_shape(shapes: Sequence[Sequence[z3.ArithRef]]
                    ) -> tuple[tuple[z3.ArithRef, ...], list[z3.BoolRef]]:
    """ONNX multidirectional broadcasting: the result shape and the facts that the shapes broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    out, facts = [], []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        d = dims[0]
        for e in dims[1:]:
            d = z3.If(d == 1, e, d)
        facts += [z3.Or(e == 1, e == d) for e in dims]
        out.append(d)
    return tuple(out), facts


def elementwise(fn: str | Callable[..., z3.ExprRef], operands: Sequence[Sym]) -> Sym:
    """An element-wise op with broadcasting: ``fn`` of the operands' elements (a name: an
    uninterpreted function of them)."""
    shape, facts = broadcast_shape([t.shape for t in operands])
    f = z3.Function(fn, *[VALUE] * len(operands), VALUE) if isinstance(fn, str) else fn

    def read(i: Index) -> Read:
        reads = [t.read(_broadcast_index(i, t.shape)) for t in operands]
        return f(*[v for v, _ in reads]), tuple(c for _, cs in reads for c in cs)
    return Sym(shape, read, (*[c for t in operands for c in t.facts], *facts))


def expand(t: Sym, target: Sequence[z3.ArithRef]) -> Sym:
    """ONNX Expand: ``t`` broadcast with a shape ``target`` (sizes >= 0). Its facts include
    ``expand_keeps_count``'s lemma (proved on its own) for this instance."""
    shape, facts = broadcast_shape([t.shape, target])
    return Sym(shape, lambda i: t.read(_broadcast_index(i, t.shape)),
               (*t.facts, *facts, *[d >= 0 for d in target], _keeps_count(t.shape, shape)))


def _keeps_count(before: Sequence[z3.ArithRef], after: Sequence[z3.ArithRef]) -> z3.BoolRef:
    """An Expand from ``before`` to ``after`` that keeps a nonzero element count only adds leading 1s."""
    lead = len(after) - len(before)
    same = [d == 1 for d in after[:lead]] + [a == b for a, b in zip(after[lead:], before)]
    return z3.Implies(z3.And(count(after) == count(before), count(before) > 0), z3.And(*same))


def expand_keeps_count(rank: int, target_rank: int) -> Obligation:
    """The lemma ``expand`` uses: for every shape of ``rank`` and Expand shape input of
    ``target_rank`` that broadcast, ``_keeps_count`` holds."""
    before, target = fresh("b", rank), fresh("s", target_rank)
    after, facts = broadcast_shape([before, target])
    given = z3.And(*facts, *[d >= 0 for d in (*before, *target)])
    return (f"lemma: count-keeping Expand, ranks {rank}, {target_rank}",
            z3.Implies(given, _keeps_count(before, after)))


def view(t: Sym, shape: Sequence[z3.ArithRef]) -> Sym:
    """A row-major view (Reshape, Flatten, Squeeze, Unsqueeze) to ``shape`` of as many elements:
    element ``i`` is the input's element at the same flat position (found through fresh index
    variables pinned by their facts, so no division enters the proof)."""
    def read(i: Index) -> Read:
        j = fresh("j", t.rank)
        value, facts = t.read(j)
        return value, (*facts, in_bounds(j, t.shape), ravel(j, t.shape) == ravel(i, shape))
    return Sym(tuple(shape), read, (*t.facts, *[d >= 0 for d in shape], count(shape) == count(t.shape)))


def split_part(t: Sym, axis: int, parts: int, k: int) -> Sym:
    """ONNX Split into ``parts`` outputs (``num_outputs``) along ``axis``: part ``k``. Parts hold
    ceil(d/parts) each, the last what remains."""
    d = t.shape[axis]
    chunk = (d + parts - 1) / parts  # z3's integer division; d >= 0
    start = chunk * k
    width = z3.If(d - start < chunk, z3.If(d - start < 0, 0, d - start), chunk)

    def read(i: Index) -> Read:
        return t.read([a + start if m == axis else a for m, a in enumerate(i)])
    return Sym((*t.shape[:axis], width, *t.shape[axis + 1:]), read, t.facts)


def concat(ts: Sequence[Sym], axis: int) -> Sym:
    """ONNX Concat along ``axis`` (operands of one rank, equal elsewhere)."""
    offsets = [z3.IntVal(0)]
    for t in ts:
        offsets.append(offsets[-1] + t.shape[axis])
    first = ts[0]
    same = [a == b for t in ts[1:] for m, (a, b) in enumerate(zip(t.shape, first.shape)) if m != axis]

    def read(i: Index) -> Read:
        value, facts = ts[-1].read([a - offsets[-2] if m == axis else a for m, a in enumerate(i)])
        for t, start, end in reversed(list(zip(ts[:-1], offsets, offsets[1:]))):
            v, f = t.read([a - start if m == axis else a for m, a in enumerate(i)])
            value, facts = z3.If(i[axis] < end, v, value), (*f, *facts)
        return value, facts
    shape = (*first.shape[:axis], offsets[-1], *first.shape[axis + 1:])
    return Sym(shape, read, (*[f for t in ts for f in t.facts], *same,
                             *[z3.BoolVal(t.rank == first.rank) for t in ts]))


def along_axis(fn: str, t: Sym, axis: z3.ArithRef) -> Sym:
    """An op along one axis (Softmax...): element ``i`` is a function of the line of ``t`` through
    ``i`` along ``axis``, its length and ``i``'s place on it. The line enters as its element at
    ``LINE``: two elements are then the same term for every ``LINE`` exactly when they read the same
    line (f is uninterpreted)."""
    rank = t.rank
    a = z3.If(axis < 0, axis + rank, axis)
    f = z3.Function(fn, VALUE, z3.IntSort(), z3.IntSort(), VALUE)

    def read(i: Index) -> Read:
        value, facts = t.read([z3.If(a == m, LINE, i[m]) for m in range(rank)])
        return f(value, pick(t.shape, a), pick(list(i), a)), facts
    return Sym(t.shape, read, (*t.facts, -rank <= axis, axis < rank))


def _dot() -> z3.FuncDeclRef:
    """A contraction's element: a function of the two lines it reads (at ``LINE``) and their length."""
    return z3.Function("dot", VALUE, VALUE, z3.IntSort(), VALUE)


def matmul(a: Sym, b: Sym) -> Sym:
    """ONNX MatMul for ``a`` of rank >= 1 and ``b`` of rank >= 2 (batch axes broadcast): element
    (batch, i, j) contracts row i of ``a`` with column j of ``b``."""
    vec = a.rank == 1
    a_batch, b_batch = a.shape[:-2], b.shape[:-2]
    batch, facts = broadcast_shape([a_batch, b_batch])
    shape = (*batch, *(() if vec else (a.shape[-2],)), b.shape[-1])

    def read(i: Index) -> Read:
        lead = list(i[:len(batch)])
        av, af = a.read([LINE] if vec else [*_broadcast_index(lead, a_batch), i[-2], LINE])
        bv, bf = b.read([*_broadcast_index(lead, b_batch), LINE, i[-1]])
        return _dot()(av, bv, a.shape[-1]), (*af, *bf)
    return Sym(shape, read, (*a.facts, *b.facts, *facts, a.shape[-1] == b.shape[-2]))


def gemm(a: Sym, b: Sym, c: Sym | None, trans_a: bool, trans_b: bool) -> Sym:
    """ONNX Gemm: alpha * A' @ B' + beta * C (C broadcast to the result), an uninterpreted function of
    the contraction and C's element (alpha and beta pass through unchanged)."""
    m, k = (a.shape[1], a.shape[0]) if trans_a else (a.shape[0], a.shape[1])
    kb, n = (b.shape[1], b.shape[0]) if trans_b else (b.shape[0], b.shape[1])
    facts = [k == kb]
    if c is not None:
        facts += [z3.Or(d == 1, d == full) for d, full in zip(c.shape, (m, n)[2 - c.rank:])]
    combine = z3.Function("gemm", VALUE, VALUE, VALUE)

    def read(i: Index) -> Read:
        av, af = a.read([LINE, i[0]] if trans_a else [i[0], LINE])
        bv, bf = b.read([i[1], LINE] if trans_b else [LINE, i[1]])
        value = _dot()(av, bv, k)
        if c is None:
            return value, (*af, *bf)
        cv, cf = c.read(_broadcast_index(i, c.shape))
        return combine(value, cv), (*af, *bf, *cf)
    return Sym((m, n), read, (*a.facts, *b.facts, *(c.facts if c else ()), *facts))


KERNEL = tuple(z3.Int(f"kernel_{d}") for d in range(3))
"""The kernel place a Conv reads, per spatial axis: free, shared by both sides (as ``LINE``)."""


def conv(x: Sym, w: Sym, b: Sym | None) -> Sym:
    """ONNX Conv with group 1 (1 to 3 spatial axes): element (n, o, position) is a function of x's
    window (channel ``LINE``, kernel place ``KERNEL``) and W's row o there, and of B[o]. Strides, pads
    and dilations are the same on both sides of a merge: they enter as uninterpreted functions of the
    output position and the kernel place (and the output size as one of the input and kernel sizes)."""
    spatial = x.rank - 2
    ints = [z3.IntSort()] * (1 + spatial)
    window = z3.Function(f"conv{spatial}", VALUE, VALUE, *ints, VALUE)
    at = z3.Function("conv_input_position", z3.IntSort(), z3.IntSort(), z3.IntSort(), z3.IntSort())
    size = z3.Function("conv_output_size", z3.IntSort(), z3.IntSort(), z3.IntSort(), z3.IntSort())
    bias = z3.Function("conv_bias", VALUE, VALUE, VALUE)
    shape = (x.shape[0], w.shape[0], *[size(x.shape[2 + d], w.shape[2 + d], d) for d in range(spatial)])

    def read(i: Index) -> Read:
        xv, xf = x.read([i[0], LINE, *[at(i[2 + d], KERNEL[d], d) for d in range(spatial)]])
        wv, wf = w.read([i[1], LINE, *KERNEL[:spatial]])
        value = window(xv, wv, x.shape[1], *w.shape[2:])
        if b is None:
            return value, (*xf, *wf)
        bv, bf = b.read([i[1]])
        return bias(value, bv), (*xf, *wf, *bf)
    facts = [x.shape[1] == w.shape[1], *([b.shape[0] == w.shape[0]] if b is not None else [])]
    return Sym(shape, read, (*x.facts, *w.facts, *(b.facts if b else ()), *facts))


Obligation = tuple[str, z3.BoolRef]
"""A claim to prove valid, labelled by what it says."""


def same_program(where: str, lhs: Sym, rhs: Sym, premises: Sequence[z3.BoolRef] = ()) -> list[Obligation]:
    """Obligations that ``rhs`` computes what ``lhs`` does wherever ``lhs`` is well typed and the
    premises hold: ``rhs`` is well typed, the shapes agree, and every element reads the same."""
    given = z3.And(*lhs.facts, *premises)
    if lhs.rank != rhs.rank:
        return [(f"{where}: output shapes agree", z3.Implies(given, z3.BoolVal(False)))]
    i = fresh("i", lhs.rank)
    left, lfacts = lhs.read(i)
    right, rfacts = rhs.read(i)
    same_shape = z3.And(*[a == b for a, b in zip(lhs.shape, rhs.shape)])
    reads = z3.And(given, *rhs.facts, in_bounds(i, lhs.shape), *lfacts, *rfacts)
    return [(f"{where}: right side well typed", z3.Implies(given, z3.And(*rhs.facts))),
            (f"{where}: output shapes agree", z3.Implies(given, same_shape)),
            (f"{where}: elements agree", z3.Implies(reads, left == right))]
