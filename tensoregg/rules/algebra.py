"""Algebra: identities and involutions that remove work without changing values."""

from __future__ import annotations

from egglog import Vec, eq, i64, var

from tensoregg.ir.terms import CONSTRUCTORS, Tensor
from tensoregg.rules.registry import Family
from tensoregg.rules.witness import chain, permutations

algebra = Family("algebra", __doc__ or "")

Relu, Abs, Neg, Identity = (CONSTRUCTORS[n].fn for n in ("Relu", "Abs", "Neg", "Identity"))
Transpose, Dropout = CONSTRUCTORS["Transpose"].fn, CONSTRUCTORS["Dropout"].fn
MAX_RANK = 6
x = var("x", Tensor)
seed = var("seed", i64)
# optional attributes are 0/1-length Vecs (see ir/terms.py); patterns bind the Vec and index it
p, q = var("p", Vec[Vec[i64]]), var("q", Vec[Vec[i64]])

# relu(relu(x)) = relu(x): max(max(x, 0), 0) = max(x, 0)
algebra.rewrite("relu-idempotent", "relu(relu(x)) = relu(x)", Relu(Relu(x)), Relu(x),
                example=lambda: chain([("Relu", {}), ("Relu", {})]))
# |(|x|)| = |x|
algebra.rewrite("abs-idempotent", "abs(abs(x)) = abs(x)", Abs(Abs(x)), Abs(x),
                example=lambda: chain([("Abs", {}), ("Abs", {})]))
# relu(|x|) = |x| since |x| >= 0
algebra.rewrite("relu-of-abs", "relu(abs(x)) = abs(x)", Relu(Abs(x)), Abs(x),
                example=lambda: chain([("Abs", {}), ("Relu", {})]))
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


def _transpose_rules(rank: int) -> None:
    wrap = Vec[Vec[i64]]
    composed = Vec[i64](*[p[0][q[0][i]] for i in range(rank)])
    # transpose(transpose(x, p), q) = transpose(x, p[q]): output axis i is input axis p[q[i]]
    algebra.rewrite(f"transpose-compose-rank{rank}", "transpose(transpose(x, p), q) = transpose(x, p∘q)",
                    Transpose(Transpose(x, p), q), Transpose(x, wrap(composed)),
                    eq(p.length()).to(i64(1)), eq(q.length()).to(i64(1)), eq(q[0].length()).to(i64(rank)),
                    example=lambda: _two_transposes(rank))
    # transpose(x, identity permutation) = x
    identity = Vec[i64](*[i64(i) for i in range(rank)])
    algebra.rewrite(f"transpose-identity-rank{rank}", "transpose(x, [0..n)) = x",
                    Transpose(x, wrap(identity)), x,
                    example=lambda: chain([("Transpose", {"perm": tuple(range(rank))}), ("Relu", {})],
                                          rank=rank))


for _rank in range(1, MAX_RANK + 1):
    _transpose_rules(_rank)
