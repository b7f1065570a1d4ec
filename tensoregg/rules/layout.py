"""Layout: Transposes sunk through element-wise ops toward the outputs, so that a Transpose meets
its inverse and both cancel, as TVM's and onnxruntime's transpose optimizers do.

Every rule reads ``f(Transpose(x, p)) = Transpose(f(x), p)`` in that one direction: a Transpose only
moves toward the outputs, past one op per match, so saturation ends (the e-graph keeps both forms,
extraction picks). Attributes pass through unchanged, as do the inputs that are not element-wise
data (Clip's bounds, CastLike's target). An op with several data operands moves a Transpose when
each operand is transposed by the same explicit perm, which gives all of them its rank
(broadcasting aligns trailing axes, which a Transpose of a lower-rank operand would misplace), or
has shape () or (1,), which broadcasts alike along any axes (then an explicit perm must have an axis:
a scalar's ``T(x, [])`` broadcast to shape (1,) cannot be written ``T(op(x, s), [])``).

Transposes meet through algebra's ``transpose-*`` rules (compose, identity). Phases run one after
another, so this family's ruleset runs those rules too: the Transposes it moves cancel within its
own phase. The terms the rules create get no shape facts; no rule here needs them.

Not here: blocked layouts (NCHW <-> NCHWc), which belong to targets that ask for them (ref does not).
"""

from __future__ import annotations

import re
from functools import partial
from itertools import product
from typing import Any

import numpy as np
from egglog import Ruleset, Vec, eq, i64, var
from onnx import TensorProto

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.terms import CONSTRUCTORS, Tensor, attr_vars, shape_of, term
from tensoregg.ir.types import TensorType
from tensoregg.rules.algebra import algebra
from tensoregg.rules.registry import Family, ruleset_of
from tensoregg.rules.witness import Case, chain, merged, permutations


class LayoutFamily(Family):
    """A family whose ruleset also runs algebra's transpose rules (see the module docstring)."""

    @property
    def ruleset(self) -> Ruleset:
        meet = [r for r in algebra.rules if r.name.startswith("transpose-")]
        return ruleset_of(self.rules + meet, self.name)


layout = LayoutFamily("layout", __doc__ or "")

UNARY = ("Abs", "Neg", "Sign", "Sqrt", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos",
         "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Not", "BitwiseNot",
         "IsNaN", "IsInf", "Erf", "Relu", "LeakyRelu", "ThresholdedRelu", "Clip", "Shrink", "Elu", "Selu",
         "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "Gelu",
         "Swish", "Cast", "CastLike")
"""Ops computing each output element from the same element of input 0 (other inputs pass through)."""
BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
          "And", "Or", "Xor", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "PRelu",
          "SwiGLU", "Where")
"""Broadcasting element-wise ops over all their inputs."""
VARIADIC = ("Sum", "Max", "Min", "Mean")
"""Broadcasting element-wise ops over a variadic input; the rules match two operands."""
AXIS_OPS = ("Softmax", "LogSoftmax", "Hardmax")
"""Ops along one ``axis``: past a Transpose, the axis becomes the input axis it was."""
FORMS = {"PRelu": ("tt", "ts"), "SwiGLU": ("tt",)}
"""Operand forms (``t`` transposed, ``s`` scalar-shaped) other than all those with a ``t``: PRelu's
slope broadcasts to X, never the reverse; SwiGLU does not broadcast."""

EXAMPLE_ATTRS: dict[str, dict[str, Any]] = {
    "LeakyRelu": {"alpha": 0.2}, "ThresholdedRelu": {"alpha": 0.5}, "Shrink": {"bias": 0.3, "lambd": 0.7},
    "Elu": {"alpha": 0.5}, "Selu": {"alpha": 1.5, "gamma": 1.2}, "Celu": {"alpha": 0.7},
    "HardSigmoid": {"alpha": 0.25, "beta": 0.4}, "Gelu": {"approximate": "tanh"}, "Swish": {"alpha": 0.5},
    "IsInf": {"detect_negative": 0}, "Cast": {"to": TensorProto.FLOAT16}, "CastLike": {"saturate": 0},
    "Mod": {"fmod": 1}, "BitShift": {"direction": "RIGHT"}, "SwiGLU": {"alpha": 0.5}}
"""Attributes other than the defaults, so the examples show them passed through."""
EXAMPLE_DTYPES: dict[str, tuple[str, ...]] = {
    **{op: ("bool",) * 2 for op in ("Not", "And", "Or", "Xor")},
    **{op: ("int32",) * 2 for op in ("BitwiseNot", "BitwiseAnd", "BitwiseOr", "BitwiseXor")},
    "BitShift": ("uint8",) * 2, "Where": ("bool", "float32", "float32")}
"""Dtypes of the data operands in the examples (float32 by default)."""

Transpose = CONSTRUCTORS["Transpose"].fn
p = var("p", Vec[Vec[i64]])


def _kebab(op: str) -> str:
    """``LeakyRelu`` -> ``leaky-relu``, ``IsNaN`` -> ``is-nan``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "-", op).lower()


def _scalar_shaped(t: Any) -> list[Any]:
    """Facts: ``t`` has shape () or (1,), so it broadcasts against any tensor of rank >= 1 without
    changing its shape, along whichever axes."""
    shape = var(f"{t}_shape", Vec[i64])
    return [eq(shape_of(t)).to(shape), shape.length() < i64(2), eq(shape.push(i64(1))[0]).to(i64(1))]


def _law(op: str, form: str, unary: bool) -> str:
    names = ["x"] if unary else ["a", "b", "c"][:len(form)]
    lhs = ", ".join(f"T({n}, p)" if k == "t" else n for n, k in zip(names, form))
    scalars = [n for n, k in zip(names, form) if k == "s"]
    where = f" for {' and '.join(scalars)} of shape () or (1,)" if scalars else ""
    return f"{op}({lhs}) = T({op}({', '.join(names)}), p){where}"


def _sink(op: str, form: str) -> None:
    """``op`` of operands in ``form`` (per data operand: ``t`` transposed by p, ``s`` scalar-shaped)
    = Transpose(op of the untransposed operands, p)."""
    ctor, attrs = CONSTRUCTORS[op], attr_vars(op)
    data = [var(f"in{i}", Tensor) for i in range(len(form))]
    outer = [Transpose(v, p) if k == "t" else v for v, k in zip(data, form)]
    facts = [fact for v, k in zip(data, form) if k == "s" for fact in _scalar_shaped(v)]
    if "s" in form:  # an explicit perm has >= 1 axis: T(x, []) of a scalar x, broadcast to (1,), is
        facts.append(p.push(Vec[i64](i64(0)))[0].length() > i64(0))  # not T(op(x, s), []) (ill typed)
    if form.count("t") > 1:
        facts.append(eq(p.length()).to(i64(1)))  # an explicit perm: every transposed operand has its rank
    if ctor.variadic:
        operands = var("operands", Vec[Tensor])
        lhs, inner = term(op, operands, **attrs), term(op, Vec[Tensor](*data), **attrs)
        facts += [eq(operands.length()).to(i64(len(form)))]
        facts += [eq(operands[i]).to(t) for i, t in enumerate(outer)]
    else:
        rest = [var(f"arg{i}", Tensor) for i in range(len(form), len(ctor.opdef.inputs))]
        lhs, inner = term(op, *outer, *rest, **attrs), term(op, *data, *rest, **attrs)
    unary = op in UNARY
    suffix = "" if set(form) == {"t"} else "-" + form
    layout.rewrite(f"{_kebab(op)}-transpose-sink{suffix}", _law(op, form, unary), lhs, Transpose(inner, p),
                   *facts, example=partial(_example, op, form),
                   counter=partial(_counter, op, form) if "s" in form or form.count("t") > 1 else None)


def _sink_axis(op: str) -> None:
    """op(T(x, p), axis) = T(op(x, p[axis]), p): output axis i of T(x, p) is axis p[i] of x."""
    fn, x, axis = CONSTRUCTORS[op].fn, var("x", Tensor), var("axis", i64)
    rank = p[0].length()
    layout.rewrite(f"{_kebab(op)}-transpose-sink", f"{op}(T(x, p), axis) = T({op}(x, p[axis]), p)",
                   fn(Transpose(x, p), axis), Transpose(fn(x, p[0][(axis + rank) % rank]), p),
                   eq(p.length()).to(i64(1)), example=partial(_axis_example, op),
                   counter=partial(_axis_example, op, True))


def forms(op: str) -> tuple[str, ...]:
    """The operand forms ``op`` gets a rule for."""
    if op in UNARY:
        return ("t",)
    n = 2 if op in VARIADIC else len(CONSTRUCTORS[op].opdef.inputs)
    return FORMS.get(op) or tuple("".join(f) for f in product("ts", repeat=n) if "t" in f)


# ---- witnesses ----------------------------------------------------------------------------------

def _extra_inputs(op: str, draw: Any, consts: dict[str, np.ndarray]) -> list[str]:
    """The non-data inputs of ``op``'s example: Clip's bounds (each maybe omitted), CastLike's target."""
    from hypothesis import strategies as st

    if op == "CastLike":
        consts["target"] = np.zeros((1,), np.float16)
        return ["target"]
    if op != "Clip":
        return []
    names = []
    for name, bound, shape in (("low", -1.0, ()), ("high", 1.5, (1,))):
        if draw(st.booleans()):
            consts[name] = np.full(shape, bound, np.float32)
        names.append(name if name in consts else "")
    return names


def _broken_ways(op: str, form: str) -> list[tuple[str, int]]:
    """The (way, scalar operand) pairs in which ``_counter`` breaks a premise of ``op``'s rule for
    ``form`` (see ``_example``)."""
    scalars = [i for i, k in enumerate(form) if k == "s"]
    ways = [(how, i) for i in scalars for how in ("wide", "wide-row")]
    ways += [("empty-perm", -1)] if scalars else []
    ways += [("unset", -1)] if form.count("t") > 1 else []
    if op in VARIADIC:
        ways += [("third", -1)] + ([("other-scalar", -1)] if scalars else [])
    return ways


def _counter(op: str, form: str) -> Any:
    """Strategy of (Graph, feeds): one graph breaking the premises of ``op``'s rule for ``form`` in
    each way of ``_broken_ways`` (those that give a valid graph for ``op``), so that every draw
    breaks each premise."""
    from hypothesis import strategies as st

    def union(cases: tuple[Case | None, ...]) -> Case | None:
        valid = [c for c in cases if c is not None]
        return merged(valid) if valid else None

    return st.tuples(*[_example(op, form, how, wide) for how, wide in _broken_ways(op, form)]).map(union)


def _example(op: str, form: str, how: str = "", wide: int = -1) -> Any:
    """Strategy of (Graph, feeds): ``op`` over operands of ``form``: each ``t`` operand a graph input
    of one rank (after the first, some sides 1) transposed by one random perm (for a single ``t``
    operand: or by the unset perm, which reverses its axes), each ``s`` operand a constant of shape ()
    or (1,).

    ``how`` a premise is broken (then None where that gives no valid graph for ``op``): ("wide",
    "wide-row") the ``s`` operand ``wide`` (the others scalar-shaped) of shape (n,) or (1, n) for the
    transposed value's last side n > 1; ("empty-perm") a scalar x transposed by the explicit perm
    []; ("unset") the perms left unset (each reverses its operand's axes), the ``t`` operands after
    the first (but SwiGLU's) with their leading axis dropped (all sides equal, so that both sides
    broadcast); for a variadic op, ("third") a third operand (the rules match two), or
    ("other-scalar") another scalar-shaped constant in the graph, of another value (a rule that did
    not tie its ``s`` to the operand would take it)."""
    from hypothesis import assume
    from hypothesis import strategies as st

    from tensoregg.errors import TensoreggError
    from tensoregg.strategies import arrays, shapes

    dtypes = EXAMPLE_DTYPES.get(op, ("float32",) * 3)

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]] | None:
        base = draw(shapes(1, 4))
        if how == "unset":
            base = (draw(st.integers(2, 3)),) * draw(st.integers(2, 3))
        elif how.startswith("wide"):
            base = (*base[:-1], draw(st.integers(2, 3)), base[-1])
        elif how == "empty-perm":
            base = ()
        perm = draw(permutations(len(base)))
        if how.startswith("wide"):  # the transposed value's last side is n > 1
            perm = [*(a for a in perm if a != len(base) - 2), len(base) - 2]
        unset = how == "unset" or (not how and form.count("t") == 1 and draw(st.booleans()))
        first = form.index("t")
        feeds: dict[str, np.ndarray] = {}
        consts: dict[str, np.ndarray] = {}
        nodes, operands = [], []
        for i, (kind, dtype) in enumerate(zip(form, dtypes)):
            if kind == "t":
                full = i == 0 or op == "SwiGLU"  # PRelu's slope broadcasts to X; SwiGLU does not broadcast
                shape = base if full else tuple(draw(st.sampled_from([d, 1])) for d in base)
                if how == "unset":
                    shape = base if i == first or op == "SwiGLU" else base[1:]
                feeds[f"a{i}"] = draw(arrays(dtype, shape))
                attrs = {} if unset else {"perm": perm}
                nodes.append(Node("Transpose", (f"a{i}",), (f"t{i}",), attrs))
                operands.append(f"t{i}")
            else:
                shape = draw(st.sampled_from([(), (1,)]))
                if i == wide:
                    shape = (base[-2],) if how == "wide" else (1, base[-2])
                elif how == "empty-perm":
                    shape = (1,)
                consts[f"c{i}"] = draw(arrays(dtype, shape))
                operands.append(f"c{i}")
        if how == "third":  # a third operand of the variadic op, of the first's shape
            first_shape = consts[operands[0]].shape if operands[0] in consts else tuple(base[a] for a in perm)
            consts["c3"] = draw(arrays(dtypes[0], first_shape))
            operands.append("c3")
        operands += _extra_inputs(op, draw, consts)
        nodes.append(Node(op, tuple(operands), ("y",), EXAMPLE_ATTRS.get(op, {})))
        if how == "other-scalar":
            s = consts[operands[form.index("s")]]
            value = 3.5 if s.reshape(-1)[0] != 3.5 else -2.0
            consts["other"] = np.full(draw(st.sampled_from([(), (1,)])), value, s.dtype)
            nodes.append(Node("Identity", ("other",), ("z",)))
        inputs = {k: TensorType.of(v) for k, v in feeds.items()}
        try:
            return Graph(inputs, consts, nodes, ["y", "z"] if how == "other-scalar" else ["y"]), feeds
        except TensoreggError:  # a broken case that is no valid graph for this op
            assume(how)
            return None

    return build()


def _axis_example(op: str, unset: bool = False) -> Any:
    """Strategy of (Graph, feeds): x -> Transpose(random perm; ``unset``: the perm left unset, which
    the rule's premise refuses) -> ``op`` along a random axis."""
    from hypothesis import strategies as st

    steps = st.integers(1, 4).flatmap(lambda rank: st.tuples(st.just(rank), permutations(rank),
                                                            st.integers(-rank, rank - 1)))
    return steps.flatmap(lambda s: chain([("Transpose", {} if unset else {"perm": s[1]}),
                                          (op, {"axis": s[2]})], rank=s[0]))


for _op in UNARY + BINARY + VARIADIC:
    for _form in forms(_op):
        _sink(_op, _form)
for _op in AXIS_OPS:
    _sink_axis(_op)
