"""Rule mutation: how many broken variants of each rule the rule checks catch.

``python -m tensoregg.testing.mutate [--family NAME] [--rule NAME] [--slice K/N] [-j JOBS]
[--timeout S]`` builds, for every rule, the mutants below from the facts and actions it was
registered with (``Rule.facts``, ``Rule.actions``), runs ``check_rule_cases`` on each (in ``JOBS``
worker processes; a check past ``S`` seconds is stopped and reported as timed out, apart from the
score) and prints killed/total per family and overall, with the survivors. A mutant that egglog
rejects (an unbound variable, a type error) is stillborn and not counted. A surviving mutant that
is still sound (an equivalent mutant, listed in ``EQUIVALENT`` with the reason) is reported as such
and not counted as a miss.

Mutants:
- ``drop``: one premise (any fact but a rewrite's left-hand side) removed;
- ``swap``: two operands of one sort swapped in a term the rule creates (its actions), except the
  operands of i64 ``+`` and ``*`` (``COMMUTATIVE``), which would give the same rule;
- ``const``: an int or float literal of a fact or action changed (int + 1, float + 0.5);
- ``axis``: an index literal (``v[i]``, ``.get(i)``) changed by one.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from typing import Any, cast

from egglog import EGraph, expr_action, expr_fact
from egglog.declarations import CallDecl, EqDecl, ExprFactDecl, LitDecl, SetDecl, TypedExprDecl, UnionDecl
from egglog.egraph import Action, Fact

from tensoregg.rules import RULESETS, Rule, ruleset_of
from tensoregg.testing.rulecheck import check_rule_cases

INDEX_METHODS = ("__getitem__", "get")
"""Methods whose int argument is an index (an axis, an output slot): its mutants are ``axis``."""

COMMUTATIVE = ("__add__", "__mul__")
"""i64 methods whose operands commute: swapping them is not a mutant."""

CONSTANT_LEAF = re.compile(r"eq\((\w+)\)\.to\(Tensor\.const\(\1_name\)\)$")
"""How a premise that a tensor is a constant (an initializer) prints, ``eq(w).to(Tensor.const(w_name))``:
such premises make a rule pay (its new weights fold at compile time), never make it sound, since the
rules never read values; dropping one gives an equivalent mutant. (Not any premise naming a constant:
a pattern or a shape of a ``Tensor.const`` leaf is another matter.)"""

EQUIVALENT: dict[str, str] = {
    **{f"transpose-compose-rank{r}~drop{k}": "a perm is a Vec of 0 or 1 elements: indexing an unset one "
       "fails the action, so the length premise only restates that" for r in range(1, 7) for k in (1, 2)},
    **{f"matmul-add-to-gemm{c}~drop7": "the reference's Gemm equals MatMul + Add in every dtype both take "
       "(the dtype sweep shows it); the float32 premise keeps the rewrite to what the targets' kernels handle"
       for c in ("", "-commuted")},
    **{f"gemm-bn-fold{t}~drop9": "for a C of shape () the next premise's sc[-1] fails the match"
       for t in ("", "-trans-b")},
    "abs-of-neg~drop2": "ONNX's Neg takes no unsigned type: the signed-dtype premise excludes no valid graph",
    "conv-winograd~drop2": "the shape premises leave a stride other than 1 only along an axis with one "
    "output row, where it does not matter",
    **{f"conv-winograd~{m}": "a premise that makes the rule pay (enough channels and outputs); Winograd is "
       "exact for any" for m in ("drop10", "drop11", "drop12", "axis17")},
    **{f"conv-winograd~const{k}": "changes an element of the unset-pads default that the premise does not "
       "read" for k in (14, 15, 16, 17, 18, 20, 22, 24, 25, 26, 27, 28)},
    **{f"{rule}~swap{k}": "swaps the two weights that part k of the merged product does not read: part k is "
       "op(x, W_k) all the same"
       for rule, ks in (("matmul-merge-parallel-3", (5, 11, 17)),
                        ("gemm-merge-parallel-3-nobias", (9, 17, 25)),
                        ("conv-merge-parallel-3-nobias", (13, 25, 37))) for k in ks},
    **{f"conv-merge-parallel-{n}~swap{k}": "Conv's biases are 1-D: 1 - length(sb) is 0, as length(sb) - 1 is"
       for n, ks in ((2, (28, 29)), (3, (53, 54))) for k in ks},
    **{name: "QLinearConv and QLinearMatMul read x_scale and w_scale only through their product (one float32 "
       "multiplication, which commutes), and both are one element here"
       for name in ("qdq-conv-to-qlinearconv~swap11", "qdq-conv-to-qlinearconv-bias~swap11",
                    "qdq-matmul-to-qlinearmatmul~swap10")},
}
"""Mutants (by name) that are still sound, with the reason: survivors here are not misses."""

IMPLIED: list[tuple[str, str, str]] = [
    *[(f"conv-{op.lower()}-fold", f"eq(dtype_of({op}(",
       f"the dtype of {op}(conv, s) is that of conv and s, which other premises fix")
      for op in ("Mul", "Add")],
    *[(f"conv-{op}-fold", premise,
       "Mul and Add take operands of one type (ONNX's T): s's dtype is the Conv's, so either premise implies "
       "the other") for op in ("mul", "add") for premise in ("eq(dtype_of(s)).to(dt)", "eq(dtype_of(Conv(")],
    *[(f"{op}-merge-parallel", "ne(w", "the distinct-weights premise only keeps a product from merging with "
       "itself: op(x, Concat(W, W)) split in two gives op(x, W) twice, as sound") for op in ("matmul", "gemm",
                                                                                            "conv")],
    ("swi-glu-transpose-sink", "eq(p.length()).to(i64(1))", "SwiGLU does not broadcast: its operands have "
     "one shape, so the unset perms (each reversing its operand's axes) are one perm, as the rule needs"),
    ("prelu-transpose-sink-ts", "p.push(Vec[i64](0))[0].length() > 0", "the premise refuses only the "
     "explicit perm [], a scalar X = T(x, []); PRelu's slope broadcasts to X, so s is then of shape () and "
     "T(PRelu(x, s), []) is well typed and equal"),
    *[(f"conv-{op}-fold", 'Vec[String]("float32", "float16").contains(dt)',
       "Conv takes float types only, where folding a per-channel factor or term is the same law (within "
       "rounding) for every one; the premise keeps the fold to the dtypes the targets' kernels take")
      for op in ("mul", "add")],
    *[("add-merge-split-", f"eq(shape_of(y{k})).to(sy)", "y_k is part_k plus a 1-D b_k as long as sy's last "
       "side, and part_k has shape sy (another premise): so has y_k") for k in range(3)],
    *[(f"add-merge-split-{n}", f"eq(shape_of(Split(m, Tensor.none(), split_axis, Vec[i64]({n})).get({k})))",
       "the parts of a Split in equal parts are one size but the last, which may be smaller: the last part's "
       "shape and y_k's (part_k plus a b_k as long as sy's last side) pin part_k's") for n in (2, 3)
      for k in range(n - 1)],
    ("conv-merge-parallel-", "eq(shape_of(Tensor.const(b", "Conv's bias is 1-D, as long as W's output "
     "channels, and another premise gives the weights one shape: so it gives the biases one"),
    *[("conv-bn-fold-no-bias", premise, "BatchNormalization's output has its input's type, the Conv's, which "
       "is W's: a premise on either restates the other") for premise in ("eq(dtype_of(w)).to(dt)",
                                                                        "eq(dtype_of(BatchNormalization(")],
    *[("qdq-", f"eq(dtype_of({t}q)).to({t}_dtype)", "DequantizeLinear's zero point has its data's type, and "
       "another premise fixes the zero point's") for t in "xw"],
    *[(f"qdq-{op}", f"eq(dtype_of({t}s)).to(String(\"float32\"))", "DQ(x) and DQ(w) have their scales' types "
       "(output_dtype unset) and Conv/MatMul take operands of one type: either scale being float32 makes the "
       "other one float32") for op in ("conv", "matmul") for t in "xw"],
    *[("qdq-", f"{t}s_shape.length() < 2", "with block_size 0 a Q/DQ scale is () or (1,) (per tensor) or 1-D "
       "(per axis): no valid graph has one of rank 2 or more") for t in "xwy"],
]
"""(rule name prefix, how a premise prints (its start), why): premises that others (or ONNX's typing)
imply, so that dropping one is no miss. Keyed by the premise's text, not its position."""

EQUIVALENT_CHANGES: list[tuple[str, str]] = [
    ("p.push(Vec[i64](1))[0].length() > 0", "an unset perm's default only needs a length > 0: any 1-element "
     "default passes as the real one does"),
    ("Max(Vec[Tensor](xz, xq))", "the max of two integers (8-bit data and its zero point) is the same in "
     "either order"),
    ("1.0, trans_a, 2,)", "transB = 2 means transposed, as 1 does (ONNX: any nonzero value)"),
    ('CastLike(Less(mean, mean), mean, "up", 2)', "CastLike's saturate acts only on casts to float8 types, "
     "and mean is BatchNormalization's (float16, bfloat16, float32 or float64)"),
    *[(f"Flatten({t}, 0)", "Flatten(t, -1) = Flatten(t, 0), of shape (1, C), for the 1-D bias or zero "
       "vector t")
      for t in ("bias", 'CastLike(Less(mean, mean), mean, "up", 1)')],
    *[(f"Tensor.const({b})),i64(1)-sb.length())", "the biases are of rank 1 or 2 (Conv's 1-D, Gemm's C at "
       "most 2-D), where Concat's axis 1 - rank is axis rank - 1 (a negative axis counts from the end)")
      for b in ("b1", "b2")],
    *[(f"{w}),0),Concat(Vec[Tensor]({b}),sb.length()-2)", "Conv's biases are 1-D: Concat along axis "
       "length - 2 = -1 is along axis 0, as length - 1 is")
      for w, b in (("Tensor.const(w1))", "Tensor.const(b0),Tensor.const(b1)"),
                   ("Tensor.const(w2))", "Tensor.const(b0),Tensor.const(b1),Tensor.const(b2)"))],
    *[(f"{t}s_shape.length() < 3", "with block_size 0 a Q/DQ scale is () or (1,) (per tensor) or 1-D (per "
       "axis): no valid graph has one of rank 2") for t in "xwy"],
    ("DequantizeLinear(bq, bs, bz, b_axis, 1, 0)", "block_size 1 along the 1-D bias gives each element its "
     "own scale, as its per-axis scale does; a per-tensor scale ignores block_size"),
    ("DequantizeLinear(bq, bs, bz, b_axis, 0, 1)", "output_dtype FLOAT names the type DQ(b) has: Conv takes "
     "one type, DQ(x)'s, float32 as its scale"),
    ('Cast(Round(Div(DequantizeLinear(bq, bs, bz, b_axis, 0, 0), Mul(xs, ws))), "up", 2, 6)', "Cast's "
     "saturate acts only on casts to float8 types, and this one is to int32"),
    ('Flatten(CastLike(Less(mean, mean), mean, "up", 1), -1), mean, shift, scale,', "BatchNormalization "
     "of a zero vector computes -mean * scale / sqrt(var + eps) + shift, symmetric in scale and mean"),
]
"""(how a mutated fact or action prints, or part of it, white space aside; why): const, axis and swap
mutants that are still sound, keyed by what they changed rather than by position."""

COMMUTATIVE_OPS = ("Add", "Mul", "And", "Or", "Xor", "Equal", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Sum",
                   "Mean")
"""Ops whose two operands commute exactly (IEEE addition and multiplication are commutative, NaN
payloads aside; Sum and Mean of two are a + b and (a + b) / 2): a mutant that swaps them is
equivalent. Not Max and Min: which of -0 and +0 they give depends on the order."""


@dataclass(frozen=True)
class Mutant:
    rule: Rule
    kind: str
    """``drop``, ``swap``, ``const`` or ``axis``."""
    name: str
    dropped: str = ""
    """For ``drop``: the premise removed, as egglog prints it."""
    restated: bool = False
    """For ``drop``: the premise is a pattern that another premise contains, so it is still matched."""
    commuted: str = ""
    """For ``swap``: the op of ``COMMUTATIVE_OPS`` whose two operands were swapped."""
    changed: str = ""
    """For ``swap``, ``const`` and ``axis``: the mutated fact or action, as egglog prints it."""
    replaced: str = ""
    """For a ``const`` or ``axis`` mutant of a fact that turned it into a copy of another fact: the
    fact it replaced (the mutant is that fact dropped)."""

    @property
    def equivalent(self) -> str | None:
        """Why this mutant is still sound, if it is known to be (else None)."""
        if CONSTANT_LEAF.match(self.dropped):
            return "drops a constant-leaf premise, which only makes the rule pay"
        if self.restated:
            return "drops a pattern another premise contains"
        if self.commuted:
            return f"swaps the operands of {self.commuted}, which commute"
        premise_gone = self.dropped or self.replaced
        for prefix, premise, why in IMPLIED:
            if self.name.startswith(prefix) and premise_gone.startswith(premise):
                return why if self.dropped else f"states another premise again in place of one implied: {why}"
        changed = "".join(self.changed.split())
        for text, why in EQUIVALENT_CHANGES:
            if changed and "".join(text.split()) in changed:
                return why
        return EQUIVALENT.get(self.name)


def _fact(f: Any) -> Fact:
    return f if isinstance(f, Fact) else expr_fact(f)


def _action(a: Any) -> Action:
    return a if isinstance(a, Action) else expr_action(a)


Edit = Callable[[TypedExprDecl, TypedExprDecl | None], Iterator[tuple[str, TypedExprDecl]]]
"""Given a typed expression and its parent, the (kind, replacement) mutants of that node alone."""


def _variants(e: TypedExprDecl, parent: TypedExprDecl | None,
              edit: Edit) -> Iterator[tuple[str, TypedExprDecl]]:
    """Every (kind, mutated ``e``) with exactly one node of ``e`` replaced by ``edit``."""
    yield from edit(e, parent)
    if isinstance(e.expr, CallDecl):
        call = e.expr
        for k, arg in enumerate(call.args):
            for kind, new in _variants(arg, e, edit):
                args = (*call.args[:k], new, *call.args[k + 1:])
                yield kind, TypedExprDecl(e.tp, CallDecl(call.callable, args, call.bound_tp_params))


def _literal_edits(e: TypedExprDecl, parent: TypedExprDecl | None) -> Iterator[tuple[str, TypedExprDecl]]:
    if not isinstance(e.expr, LitDecl) or isinstance(e.expr.value, bool):
        return
    value = e.expr.value
    index = (parent is not None and isinstance(parent.expr, CallDecl)
             and getattr(parent.expr.callable, "method_name", None) in INDEX_METHODS)
    if isinstance(value, int):
        yield ("axis" if index else "const"), TypedExprDecl(e.tp, LitDecl(value + 1))
    elif isinstance(value, float):
        yield "const", TypedExprDecl(e.tp, LitDecl(value + 0.5))


def _op_name(e: TypedExprDecl | None) -> str:
    if e is None or not isinstance(e.expr, CallDecl):
        return ""
    return getattr(getattr(e.expr.callable, "ident", None), "name", "")


def _swap_edits(e: TypedExprDecl, parent: TypedExprDecl | None) -> Iterator[tuple[str, TypedExprDecl]]:
    if not isinstance(e.expr, CallDecl):
        return
    call, args = e.expr, e.expr.args
    # the op whose two operands a swap here exchanges: this call's, or a variadic op's over this Vec
    op = _op_name(parent) if _op_name(e) == "Vec" else _op_name(e)
    if getattr(call.callable, "method_name", None) in COMMUTATIVE and e.tp.ident.name == "i64":
        return
    for i in range(len(args)):
        for j in range(i + 1, len(args)):
            if args[i].tp == args[j].tp and args[i] != args[j] and not isinstance(args[i].expr, LitDecl):
                swapped = list(args)
                swapped[i], swapped[j] = args[j], args[i]
                new = CallDecl(call.callable, tuple(swapped), call.bound_tp_params)
                yield ("swap:" + op if op in COMMUTATIVE_OPS and len(args) == 2 else "swap"), \
                    TypedExprDecl(e.tp, new)


def _fact_variants(f: Fact, edit: Edit) -> Iterator[tuple[str, Fact]]:
    d = f.fact
    if isinstance(d, EqDecl):  # its sides are untyped: typed by the fact's sort
        for kind, new in _variants(TypedExprDecl(d.tp, d.left), None, edit):
            yield kind, Fact(f.__egg_decls__, EqDecl(d.tp, new.expr, d.right))
        for kind, new in _variants(TypedExprDecl(d.tp, d.right), None, edit):
            yield kind, Fact(f.__egg_decls__, EqDecl(d.tp, d.left, new.expr))
    elif isinstance(d, ExprFactDecl):
        for kind, new in _variants(d.typed_expr, None, edit):
            yield kind, Fact(f.__egg_decls__, ExprFactDecl(new))


def _action_variants(a: Action, edit: Edit) -> Iterator[tuple[str, Action]]:
    d = a.action
    if isinstance(d, UnionDecl | SetDecl):  # mutate what the matched term is unioned with or set to
        for kind, new in _variants(TypedExprDecl(d.tp, d.rhs), None, edit):
            yield kind, Action(a.__egg_decls__, replace(d, rhs=new.expr))


def mutants(rule: Rule) -> list[Mutant]:
    """Every mutant of ``rule`` (see the module docstring), stillborn ones included."""
    facts, actions = [_fact(f) for f in rule.facts], [_action(a) for a in rule.actions]
    found: list[tuple[str, list[Fact], list[Action], str, str, str]] = []
    is_rewrite = len(actions) == 1 and isinstance(actions[0].action, UnionDecl)
    for k in range(1 if is_rewrite else 0, len(facts)):
        found.append(("drop", facts[:k] + facts[k + 1:], actions, str(facts[k]), "", ""))
    texts = [str(f) for f in facts]
    patterns = {t for f, t in zip(facts, texts) if isinstance(f.fact, ExprFactDecl)
                and f.fact.typed_expr.tp.ident.name == "Tensor"}  # a bare term: it exists
    for k, f in enumerate(facts):
        for kind, new in _fact_variants(f, _literal_edits):
            replaced = texts[k] if str(new) in texts[:k] + texts[k + 1:] else ""
            found.append((kind, [*facts[:k], new, *facts[k + 1:]], actions, "", str(new), replaced))
    for k, a in enumerate(actions):
        for kind, new_a in _action_variants(a, _literal_edits):
            found.append((kind, facts, [*actions[:k], new_a, *actions[k + 1:]], "", str(new_a), ""))
        for kind, new_a in _action_variants(a, _swap_edits):
            found.append((kind, facts, [*actions[:k], new_a, *actions[k + 1:]], "", str(new_a), ""))
    out, counts = [], dict.fromkeys(("drop", "swap", "const", "axis"), 0)
    for tagged, fs, acts, dropped, changed, replaced in found:
        kind, _, commuted = tagged.partition(":")
        counts[kind] += 1
        name = f"{rule.name}~{kind}{counts[kind]}"
        try:
            restated = dropped in patterns and any(dropped in t for t in texts if t != dropped)
            out.append(Mutant(rule.rebuilt(fs, acts, name=name), kind, name, dropped, restated, commuted,
                              changed, replaced))
        except Exception:  # egglog refused to build it: stillborn
            continue
    return out


def viable(mutant: Mutant) -> bool:
    """Whether egglog accepts the mutant's rule (no unbound variable, well-typed)."""
    try:
        EGraph().run(ruleset_of([mutant.rule], name=f"viable-{mutant.name}"))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # egglog's panics are BaseExceptions
        return False
    return True


@dataclass
class Outcome:
    mutant: Mutant
    killed: bool
    how: str


def run_mutant(mutant: Mutant, examples: int = 6, premise_breaking: int = 8) -> Outcome:
    """Check one mutant with the rule checks (derandomized); killed when they fail."""
    try:
        check_rule_cases(mutant.rule, examples, premise_breaking, quick=True)
    except AssertionError as exc:
        return Outcome(mutant, True, str(exc).strip().splitlines()[0][:120])
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a crash (an egglog panic too) is a kill, but tells of an error that
        # should be a tensoregg one
        return Outcome(mutant, True, f"crash: {type(exc).__name__}: {str(exc)[:100]}")
    return Outcome(mutant, False, "survived")


@dataclass
class FamilyScore:
    family: str
    killed: int = 0
    equivalent: int = 0
    stillborn: int = 0
    survivors: list[str] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)
    """Mutants whose check ran past the time limit: neither killed nor survived, listed apart."""
    contested: list[str] = field(default_factory=list)
    """Mutants listed as equivalent that the checks killed: a stale ``EQUIVALENT`` entry (or a check
    that fails a sound rule); counted as killed."""

    @property
    def total(self) -> int:
        """Viable, non-equivalent mutants that finished."""
        return self.killed + len(self.survivors)


def _mutant_outcome(mutant: Mutant, examples: int, premise_breaking: int, escalate: int) -> tuple[str, str]:
    """(``stillborn``/``killed``/``survived``, how) for one mutant: what a worker sends back. A
    mutant that survives, not known to be equivalent, is checked again on ``escalate`` times as many
    cases (most mutants die on the first few: only survivors pay for the longer check)."""
    if not viable(mutant):
        return "stillborn", ""
    outcome = run_mutant(mutant, examples, premise_breaking)
    if not outcome.killed and escalate > 1 and not mutant.equivalent:
        outcome = run_mutant(mutant, examples * escalate, premise_breaking * escalate)
    return ("killed" if outcome.killed else "survived"), outcome.how


def _rule_named(name: str) -> Rule:
    return next(r for f in RULESETS.values() for r in f.rules if r.name == name)


def _worker(conn: Connection, examples: int, premise_breaking: int, escalate: int) -> None:
    """A worker process: checks the mutants (rule name, mutant name) it receives, until None."""
    os.environ["RUST_BACKTRACE"] = "0"
    built: dict[str, dict[str, Mutant]] = {}
    while (task := conn.recv()) is not None:
        rule, name = task
        if rule not in built:
            built[rule] = {m.name: m for m in mutants(_rule_named(rule))}
        conn.send(_mutant_outcome(built[rule][name], examples, premise_breaking, escalate))


def outcomes(todo: Sequence[Mutant], examples: int = 6, premise_breaking: int = 8, *, jobs: int = 1,
             timeout: float = 60.0, escalate: int = 1) -> Iterator[tuple[int, str, str]]:
    """(index, result, how) for each mutant of ``todo`` (of registered rules), in the order they
    finish, checked in ``jobs`` worker processes; a check that runs past ``timeout`` seconds is
    killed with its worker (result ``timeout``) and a fresh worker takes its place. Workers are
    spawned, not forked: a forked child deadlocks in egglog's finalizers."""
    ctx = multiprocessing.get_context("spawn")
    pending = iter(range(len(todo)))
    busy: dict[Connection, tuple[Any, int, float]] = {}  # connection -> (process, index, start)

    def assign(proc: Any, conn: Connection, k: int) -> None:
        conn.send((todo[k].name.split("~")[0], todo[k].name))
        busy[conn] = (proc, k, time.monotonic())

    def start() -> tuple[Any, Connection]:
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(theirs, examples, premise_breaking, escalate), daemon=True)
        proc.start()
        theirs.close()
        return proc, ours

    def stop(conn: Connection) -> int:
        proc, k, _ = busy.pop(conn)
        proc.kill()
        proc.join()
        conn.close()
        return k

    def next_task(proc: Any, conn: Connection) -> None:
        if (k := next(pending, None)) is not None:
            assign(proc, conn, k)
        else:
            conn.send(None)
            proc.join()
            conn.close()

    def refill() -> None:  # a fresh worker in place of a stopped one, if there is work left
        if (k := next(pending, None)) is not None:
            assign(*start(), k)

    for k in itertools.islice(pending, max(jobs, 1)):
        assign(*start(), k)
    try:
        while busy:
            first_due = min(t for _, _, t in busy.values()) + timeout
            for ready in mp_wait(list(busy), timeout=max(first_due - time.monotonic(), 0.0)):
                conn = cast(Connection, ready)
                try:
                    result, how = conn.recv()
                except EOFError:  # the worker died (an abort in native code): a crash kills the mutant
                    yield stop(conn), "killed", "crash: the check's process died"
                    refill()
                    continue
                proc, k, _ = busy.pop(conn)
                yield k, result, how
                next_task(proc, conn)
            for conn in [c for c, (_, _, t) in busy.items() if time.monotonic() - t > timeout]:
                yield stop(conn), "timeout", f"over {timeout:g} s"
                refill()
    finally:
        for conn in list(busy):
            stop(conn)


def score(rules: Sequence[Rule], examples: int = 6, premise_breaking: int = 8,
          log: Callable[[str], None] | None = None, *, jobs: int = 1, timeout: float = 60.0,
          escalate: int = 1, only: Sequence[str] = ()) -> dict[str, FamilyScore]:
    """Mutate every rule of ``rules`` and check each mutant (or those named in ``only``) with
    ``outcomes`` (``jobs`` processes, at most ``timeout`` seconds a mutant, survivors checked again on
    ``escalate`` times the cases): one score per family."""
    todo = [m for rule in rules for m in mutants(rule) if not only or m.name in only]
    scores = {r.family: FamilyScore(r.family) for r in rules}
    for k, result, how in outcomes(todo, examples, premise_breaking, jobs=jobs, timeout=timeout,
                                   escalate=escalate):
        mutant = todo[k]
        fam = scores[mutant.rule.family]
        if result == "stillborn":
            fam.stillborn += 1
            continue
        if result == "killed":
            fam.killed += 1
            if mutant.name in EQUIVALENT:
                fam.contested.append(mutant.name)
        elif result == "timeout":
            fam.timeouts.append(mutant.name)
        elif mutant.equivalent:
            fam.equivalent += 1
            result = "equivalent"
        else:
            fam.survivors.append(mutant.name)
        if log:
            log(f"{mutant.name}: {result}: {how}")
    for fam in scores.values():
        fam.survivors.sort()
        fam.timeouts.sort()
        fam.contested.sort()
    return scores


def report(scores: dict[str, FamilyScore]) -> str:
    """killed/total per family and overall, and the survivors and timeouts by name."""
    lines, killed, total = [], 0, 0
    for s in scores.values():
        killed, total = killed + s.killed, total + s.total
        lines.append(f"{s.family}: {s.killed}/{s.total} killed ({100 * s.killed / max(s.total, 1):.1f}%), "
                     f"{s.equivalent} equivalent, {s.stillborn} stillborn, {len(s.timeouts)} timed out")
    lines.append(f"overall: {killed}/{total} killed ({100 * killed / max(total, 1):.1f}%)")
    lines += [f"survivor: {n}" for s in scores.values() for n in s.survivors]
    lines += [f"timeout: {n}" for s in scores.values() for n in s.timeouts]
    lines += [f"listed as equivalent, but killed: {n}" for s in scores.values() for n in s.contested]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tensoregg.testing.mutate",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--family", action="append", help="only this family (repeatable)")
    parser.add_argument("--rule", action="append", help="only this rule (repeatable)")
    parser.add_argument("--examples", type=int, default=6, help="witness cases per mutant")
    parser.add_argument("--premise-cases", type=int, default=8, help="premise-breaking cases per mutant")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per CPU)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a mutant's check may take (then it is stopped, reported as timed out)")
    parser.add_argument("--slice", default="",
                        help="K/N: only the K-th of N equal slices of the selected rules (K from 1)")
    parser.add_argument("--escalate", type=int, default=5,
                        help="check a surviving mutant again on this many times the cases (1: not again)")
    parser.add_argument("--mutant", action="append", default=[], help="only this mutant (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every mutant's outcome")
    args = parser.parse_args(argv)
    os.environ["RUST_BACKTRACE"] = "0"  # a mutant's egglog panic is a kill, not pages of stack
    named = {m.split("~")[0] for m in args.mutant}
    rules = [r for f in RULESETS.values() if not args.family or f.name in args.family for r in f.rules
             if (not args.rule or r.name in args.rule) and (not named or r.name in named)]
    if args.slice:
        k, n = (int(v) for v in args.slice.split("/"))
        rules = rules[(k - 1) * len(rules) // n:k * len(rules) // n]
    start = time.perf_counter()
    scores = score(rules, args.examples, args.premise_cases, log=print if args.verbose else None,
                   jobs=args.jobs, timeout=args.timeout, escalate=args.escalate, only=args.mutant)
    print(report(scores))
    print(f"{len(rules)} rules in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
