"""Algebra: identities and involutions that remove work without changing values: idempotent and
involutive ops, signs moved into Add/Sub/Mul, casts that change nothing, and chains of shape ops
(views: Reshape, Flatten, Squeeze, Unsqueeze, Expand) that give back their input's shape.

Every rule is exact on all inputs of its premises' types, NaN, infinities and -0 included (NaN
payloads aside); where an identity fails for some dtype a ``dtype_of`` premise leaves it out.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import ml_dtypes
import numpy as np
from egglog import String, Vec, eq, i64, join, var

from tensoregg.ir.terms import CONSTRUCTORS, Tensor, attr_vars, dtype_of, shape_of, term
from tensoregg.rules.registry import Family
from tensoregg.rules.witness import (
    binary_case,
    cast_chain,
    chain,
    int_min_chain,
    np_dtype,
    permutations,
    view_chain,
)

algebra = Family("algebra", __doc__ or "")

Relu, Abs, Neg, Identity = (CONSTRUCTORS[n].fn for n in ("Relu", "Abs", "Neg", "Identity"))
Transpose, Dropout = CONSTRUCTORS["Transpose"].fn, CONSTRUCTORS["Dropout"].fn
Add, Sub, Mul = (CONSTRUCTORS[n].fn for n in ("Add", "Sub", "Mul"))
MAX_RANK = 6
x, a, b = var("x", Tensor), var("a", Tensor), var("b", Tensor)
seed = var("seed", i64)
dt, mid = var("dt", String), var("mid", String)
sx = var("sx", Vec[i64])
# optional attributes are 0/1-length Vecs (see ir/terms.py); patterns bind the Vec and index it
p, q = var("p", Vec[Vec[i64]]), var("q", Vec[Vec[i64]])

INTEGERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
FLOATS = ("float16", "bfloat16", "float32", "float64")
SIGNED = FLOATS + INTEGERS[:4]
ALL = FLOATS + INTEGERS
RELU_OF_ABS = FLOATS
"""The dtypes relu-of-abs holds for."""
VIEWS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand")


def _names(names: tuple[str, ...]) -> Vec[String]:
    """``names`` as an egglog Vec, for ``contains``/``not_contains`` premises."""
    return Vec[String](*[String(n) for n in names])


def _pattern(op: str, first: Any, tag: str) -> Any:
    """``op`` applied to ``first``, its other inputs and attributes pattern variables named by ``tag``."""
    rest = [var(f"{tag}_in{k}", Tensor) for k in range(1, len(CONSTRUCTORS[op].opdef.inputs))]
    return term(op, first, *rest, **attr_vars(op, tag))


# relu(relu(x)) = relu(x): max(max(x, 0), 0) = max(x, 0)
algebra.rewrite("relu-idempotent", "relu(relu(x)) = relu(x)", Relu(Relu(x)), Relu(x),
                example=lambda: chain([("Relu", {}), ("Relu", {})]))
# |(|x|)| = |x|
algebra.rewrite("abs-idempotent", "abs(abs(x)) = abs(x)", Abs(Abs(x)), Abs(x),
                example=lambda: chain([("Abs", {}), ("Abs", {})]))
# relu(|x|) = |x| since |x| >= 0, in floats only: |x| wraps to the minimum of a signed integer type
# (|-128| is -128 in int8), which relu maps to 0
algebra.rewrite("relu-of-abs", "relu(abs(x)) = abs(x) for float x (integers: |min| wraps below 0)",
                Relu(Abs(x)), Abs(x), eq(dtype_of(x)).to(dt), _names(RELU_OF_ABS).contains(dt),
                example=lambda: chain([("Abs", {}), ("Relu", {})]),
                counter=lambda: int_min_chain([("Abs", {}), ("Relu", {})]))
# -(-x) = x
algebra.rewrite("neg-involution", "neg(neg(x)) = x", Neg(Neg(x)), x,
                example=lambda: chain([("Neg", {}), ("Neg", {}), ("Relu", {})]))
# identity(x) = x
algebra.rewrite("identity-elim", "identity(x) = x", Identity(x), x,
                example=lambda: chain([("Identity", {}), ("Relu", {})]))
# Dropout without ratio/training_mode inputs is inference-mode Dropout: the identity
algebra.rewrite("dropout-inference-elim", "dropout(x) = x at inference",
                Dropout(x, Tensor.none(), Tensor.none(), seed).get(0), x,
                example=lambda: chain([("Dropout", {}), ("Relu", {})]))


def _two_transposes(rank: int):
    """Witness: x -> Transpose(perm a) -> Transpose(perm b) for random permutations of ``rank`` axes."""
    pairs = permutations(rank).flatmap(lambda a: permutations(rank).map(lambda b: (a, b)))
    return pairs.flatmap(lambda ab: chain([("Transpose", {"perm": ab[0]}), ("Transpose", {"perm": ab[1]})],
                                          rank=rank))


def _other_transposes(rank: int) -> Any:
    """Counter-witness of the rank-``rank`` rules: two Transposes of rank ``rank`` + 1 with perms set,
    or of any rank with perms set or unset."""
    from hypothesis import strategies as st

    def steps(r: int, perm: Any) -> Any:
        return st.tuples(perm, perm).flatmap(lambda ab: chain([("Transpose", ab[0]), ("Transpose", ab[1])],
                                                               rank=r))

    set_perm = permutations(rank + 1).map(lambda p: {"perm": p})
    return steps(rank + 1, set_perm) | st.integers(1, MAX_RANK).flatmap(
        lambda r: steps(r, st.just({}) | permutations(r).map(lambda p: {"perm": p})))


def _transpose_rules(rank: int) -> None:
    wrap = Vec[Vec[i64]]
    composed = Vec[i64](*[p[0][q[0][i]] for i in range(rank)])
    # transpose(transpose(x, p), q) = transpose(x, p[q]): output axis i is input axis p[q[i]]
    algebra.rewrite(f"transpose-compose-rank{rank}", "transpose(transpose(x, p), q) = transpose(x, p∘q)",
                    Transpose(Transpose(x, p), q), Transpose(x, wrap(composed)),
                    eq(p.length()).to(i64(1)), eq(q.length()).to(i64(1)), eq(q[0].length()).to(i64(rank)),
                    example=lambda: _two_transposes(rank), counter=lambda: _other_transposes(rank))
    # transpose(x, identity permutation) = x
    identity = Vec[i64](*[i64(i) for i in range(rank)])
    algebra.rewrite(f"transpose-identity-rank{rank}", "transpose(x, [0..n)) = x",
                    Transpose(x, wrap(identity)), x,
                    example=lambda: chain([("Transpose", {"perm": tuple(range(rank))}), ("Relu", {})],
                                          rank=rank), counter=lambda: _other_transposes(rank))


for _rank in range(1, MAX_RANK + 1):
    _transpose_rules(_rank)

# ---- signs: IEEE defines a - c as a + (-c), negation is exact and a product's sign is the xor of
# its factors' signs, so these hold bit for bit in floats (and mod 2^n in integers). Neg keeps its
# input's shape, so both sides broadcast alike.

# a - (-b) = a + b
algebra.rewrite("sub-of-neg", "a - (-b) = a + b", Sub(a, Neg(b)), Add(a, b),
                example=lambda: binary_case([("Neg", "b"), ("Sub", "a", "v0")], ALL))
# a + (-b) = a - b
algebra.rewrite("add-of-neg", "a + (-b) = a - b", Add(a, Neg(b)), Sub(a, b),
                example=lambda: binary_case([("Neg", "b"), ("Add", "a", "v0")], ALL))
# (-a) + b = b - a
algebra.rewrite("neg-plus", "(-a) + b = b - a", Add(Neg(a), b), Sub(b, a),
                example=lambda: binary_case([("Neg", "a"), ("Add", "v0", "b")], ALL))
# (-a) * (-b) = a * b
algebra.rewrite("mul-of-negs", "(-a) * (-b) = a * b", Mul(Neg(a), Neg(b)), Mul(a, b),
                example=lambda: binary_case([("Neg", "a"), ("Neg", "b"), ("Mul", "v0", "v1")], ALL))
# -(a - b) = b - a in integers only: for floats a = b gives -(+0) = -0 but b - a = +0
algebra.rewrite("neg-of-sub", "-(a - b) = b - a for integer a, b (floats: -0 vs +0 when a = b)",
                Neg(Sub(a, b)), Sub(b, a), eq(dtype_of(a)).to(dt), _names(INTEGERS).contains(dt),
                example=lambda: binary_case([("Sub", "a", "b"), ("Neg", "v0")], dtypes=INTEGERS))
# |-x| = |x| for signed types (unsigned: -x wraps to 2^n - x and |.| keeps it)
algebra.rewrite("abs-of-neg", "|-x| = |x| for float and signed integer x",
                Abs(Neg(x)), Abs(x), eq(dtype_of(x)).to(dt), _names(SIGNED).contains(dt),
                example=lambda: binary_case([("Neg", "a"), ("Abs", "v0")], dtypes=SIGNED))

# ---- casts: a cast to x's own dtype changes nothing, except float8e5m2 (saturate maps +-inf to
# +-max) and float8e8m0 (the reference rounds the subnormal 2^-127 up to 2^-126).
SELF_CAST_CHANGES = ("float8_e5m2", "float8_e8m0fnu")
SELF_CASTS = [(t, t) for t in ("bool", *INTEGERS, *FLOATS, "float8_e4m3fn")]


def _holds_all_of(src: np.dtype, dst: np.dtype) -> bool:
    """Whether ``dst`` represents every value of ``src`` exactly: numpy's safe cast, except integers
    wider than a float's significand (numpy calls int64 -> float64 safe; 2^53 + 1 is not a float64)."""
    if not np.can_cast(src, dst, "safe"):
        return False
    if src.kind in "iu" and dst.kind not in "iub":
        return src.itemsize * 8 - (src.kind == "i") <= ml_dtypes.finfo(dst).nmant + 1
    return True


OTHER_CASTS = [(t, t) for t in SELF_CAST_CHANGES] + [("float32", "float16"), ("float16", "float32"),
                                                    ("int32", "float32"), ("float64", "int64")]
"""Casts the same-type rules must leave alone: to another dtype, or to a dtype that changes values."""
NOT_ROUND_TRIPS = [("float32", "float16", "float32"), ("float32", "int32", "float32"),
                   ("int32", "int8", "int32"), ("float64", "float32", "float64"),
                   ("int64", "float64", "int64"), ("float16", "float32", "float64"),
                   ("int8", "int32", "int16")]
"""Casts cast-round-trip must leave alone: through a dtype that loses values, or to another dtype."""
EXACT_CASTS = [(s, m) for s, m in itertools.permutations(("bool", *INTEGERS, *FLOATS), 2)
               if _holds_all_of(np_dtype(s), np_dtype(m))]
"""(src, mid) where Cast(Cast(x: src, mid), src) = x."""

for _op in ("Cast", "CastLike"):
    _cast = _pattern(_op, x, "c")
    # cast(x, dtype of x) = x
    algebra.rewrite(f"{_op.lower()}-same-type-elim", f"{_op}(x) to x's own dtype = x (not float8e5m2/e8m0)",
                    _cast, x, eq(dtype_of(x)).to(dt), eq(dtype_of(_cast)).to(dt),
                    _names(SELF_CAST_CHANGES).not_contains(dt),
                    example=partial(cast_chain, _op, SELF_CASTS),
                    counter=partial(cast_chain, _op, OTHER_CASTS))
_inner_cast = _pattern("Cast", x, "c0")
_round_trip = _pattern("Cast", _inner_cast, "c1")
# cast(cast(x, mid), dtype of x) = x where mid holds every value of x's dtype
algebra.rewrite("cast-round-trip", "cast(cast(x, mid), src) = x where mid holds every src value exactly",
                _round_trip, x, eq(dtype_of(x)).to(dt), eq(dtype_of(_round_trip)).to(dt),
                eq(dtype_of(_inner_cast)).to(mid),
                _names(tuple(f"{s}>{m}" for s, m in EXACT_CASTS)).contains(join(dt, ">", mid)),
                example=lambda: cast_chain("Cast", [(s, m, s) for s, m in EXACT_CASTS]),
                counter=lambda: cast_chain("Cast", NOT_ROUND_TRIPS))

# ---- views: Reshape, Flatten, Squeeze, Unsqueeze and (count-keeping) Expand keep the elements in
# row-major order, so a chain of them that ends in x's shape is x. (An Expand that keeps the element
# count only adds leading 1s; a chain ending in x's shape keeps the count at every step.)

for _op in VIEWS:
    _view = _pattern(_op, x, "v")
    # view(x) = x when it keeps x's shape
    algebra.rewrite(f"{_op.lower()}-same-shape-elim", f"{_op}(x) = x when the result has x's shape",
                    _view, x, eq(shape_of(x)).to(sx), eq(shape_of(_view)).to(sx),
                    example=partial(view_chain, (_op,)), counter=partial(view_chain, (_op,), same_end=False))
for _inner, _outer in itertools.product(VIEWS, VIEWS):
    _chain = _pattern(_outer, _pattern(_inner, x, "v0"), "v1")
    # outer(inner(x)) = x when the result has x's shape
    algebra.rewrite(f"{_inner.lower()}-{_outer.lower()}-round-trip",
                    f"{_outer}({_inner}(x)) = x when the result has x's shape",
                    _chain, x, eq(shape_of(x)).to(sx), eq(shape_of(_chain)).to(sx),
                    example=partial(view_chain, (_inner, _outer)),
                    counter=partial(view_chain, (_inner, _outer), same_end=False))
