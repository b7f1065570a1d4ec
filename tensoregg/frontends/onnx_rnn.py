"""RNN, GRU and LSTM imported as their time steps unrolled (shapes are static, so is the sequence
length): one MatMul of the whole sequence by W, then per step a MatMul by R, the gates' activations
and the state update; the step outputs are concatenated into Y.

Supported: directions forward/reverse/bidirectional, layout 0/1, the bias, initial states, LSTM
peepholes and ``input_forget`` (f = 1 - i, as onnxruntime), GRU ``linear_before_reset``, ``clip``
(on the input of the gates' activations, not of the LSTM cell's: as onnxruntime), every ONNX
activation, ``activation_alpha``/``activation_beta`` consumed in order by those that take them.
``sequence_lens`` must be a constant (each length 1 .. the sequence length).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from tensoregg.errors import InvalidModel, ShapeError
from tensoregg.frontends.onnx_expand import Expanding, Expansion
from tensoregg.ir import Attr

_ARGS = {"relu": (0, 0), "tanh": (0, 0), "sigmoid": (0, 0), "softsign": (0, 0), "softplus": (0, 0),
         "affine": (1, 1), "scaledtanh": (1, 1), "hardsigmoid": (1, 1), "leakyrelu": (1, 0),
         "thresholdedrelu": (1, 0), "elu": (1, 0)}
"""How many of activation_alpha/activation_beta each activation takes."""
_DEFAULTS = {"leakyrelu": (0.01, 0.0), "thresholdedrelu": (1.0, 0.0), "hardsigmoid": (0.2, 0.5),
             "elu": (1.0, 0.0)}
"""The alpha and beta of an activation the attributes leave without (the ONNX ops' defaults)."""
_PLAIN = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softsign": "Softsign",
          "softplus": "Softplus"}

_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}
"""Whether each direction runs in reverse."""

Act = Callable[[str], str]


@dataclass(frozen=True)
class _Kind:
    gates: int
    activations: tuple[str, ...]
    step: Callable[[_Rnn, int, str, list[str]], list[str]]
    """(rnn, direction, x_t (the step's input times W, plus the bias), state) -> new state."""
    states: int = 1
    clipped: int = 2
    """How many of the activations get ``clip`` on their input (LSTM's h, of the cell, does not:
    as onnxruntime)."""


class _Rnn:
    """One RNN/GRU/LSTM node's shapes, weights and activations, in layout 0."""

    def __init__(self, ex: Expanding, kind: _Kind) -> None:
        self.ex, self.kind = ex, kind
        a = ex.attrs
        x, w, r = ex.type(0), ex.type(1), ex.type(2)
        if a["layout"] not in (0, 1) or x.rank != 3:
            raise InvalidModel(f"{ex.where}: layout {a['layout']} and X of rank {x.rank}")
        self.seq, self.batch, n_in = (x.shape[1], x.shape[0], x.shape[2]) if a["layout"] else x.shape
        self.dtype = x.dtype
        self.hidden = r.shape[-1]
        if a["direction"] not in _DIRECTIONS:
            raise InvalidModel(f"{ex.where}: unknown direction {a['direction']!r}")
        self.dirs = _DIRECTIONS[a["direction"]]
        g = kind.gates * self.hidden
        if (w.shape != (len(self.dirs), g, n_in) or r.shape != (len(self.dirs), g, self.hidden)
                or a["hidden_size"] not in (None, self.hidden)):
            raise ShapeError(f"{ex.where}: W {w.shape}, R {r.shape}, hidden_size {a['hidden_size']} do "
                             f"not fit X {x.shape} with {len(self.dirs)} direction(s)")
        lens = ex.value(4, "sequence_lens").astype(np.int64) if ex.has(4) else np.full(self.batch, self.seq)
        if lens.shape != (self.batch,) or not ((lens >= 1) & (lens <= self.seq)).all():
            ex.unsupported(f"sequence_lens {lens.tolist()}: each must lie in 1 .. {self.seq}")
        self.lens = None if (lens == self.seq).all() else lens
        """The sequence lengths when some are shorter than X: steps past an entry's end keep its
        state and output zeros, and the reverse direction reverses each entry's own steps."""
        self._once: dict[tuple, str] = {}
        self.acts = self.activations()

    def c(self, value: object) -> str:
        return self.ex.const(value, self.dtype)

    def i64(self, value: object) -> str:
        return self.ex.const(value, np.int64)

    def once(self, op: str, inputs: list[str], **attrs: Any) -> str:
        """``ex.add``, emitting a node the steps ask for again (a weight's slice) only once."""
        key = (op, tuple(inputs), tuple(sorted(attrs.items())))
        if key not in self._once:
            self._once[key] = self.ex.add(op, inputs, **attrs)
        return self._once[key]

    def cols(self, v: str, k: int, n: int = 1) -> str:
        """Gate columns k .. k+n-1 of ``v`` (its last axis holds the gates, ``hidden`` each)."""
        h = self.hidden
        return self.once("Slice", [v, self.i64([k * h]), self.i64([(k + n) * h]), self.i64([-1])])

    def pick(self, v: str, d: int) -> str:
        """Direction ``d`` of a per-direction input."""
        return self.once("Gather", [v, self.i64(d)], axis=0)

    def layout0(self, i: int) -> str:
        v = self.ex.input(i)
        return self.once("Transpose", [v], perm=(1, 0, 2)) if self.ex.attrs["layout"] else v

    def clipped(self, act: Act) -> Act:
        clip = self.ex.attrs["clip"]
        if clip is None:
            return act
        return lambda v: act(self.ex.add("Clip", [v, self.c(-clip), self.c(clip)]))

    def activations(self) -> list[list[Act]]:
        """The activations of each direction, clip included."""
        ex, n = self.ex, len(self.kind.activations)
        names = [s.lower() for s in ex.attrs["activations"] or self.kind.activations * len(self.dirs)]
        if len(names) == n:
            names *= len(self.dirs)
        alphas, betas = list(ex.attrs["activation_alpha"] or ()), list(ex.attrs["activation_beta"] or ())
        acts = []
        for k, name in enumerate(names):
            if name not in _ARGS or len(names) != n * len(self.dirs):
                ex.unsupported(f"activations {ex.attrs['activations']!r}")
            n_alpha, n_beta = _ARGS[name]
            alpha, beta = _DEFAULTS.get(name, (None, None))
            alpha = alphas.pop(0) if n_alpha and alphas else alpha
            beta = betas.pop(0) if n_beta and betas else beta
            if (n_alpha and alpha is None) or (n_beta and beta is None):
                ex.unsupported(f"activation {name!r} without its activation_alpha/activation_beta")
            act = partial(self.activation, name, alpha, beta)
            acts.append(self.clipped(act) if k % n < self.kind.clipped else act)
        return [acts[d * n:(d + 1) * n] for d in range(len(self.dirs))]

    def activation(self, name: str, alpha: float | None, beta: float | None, v: str) -> str:
        add = self.ex.add
        if name in _PLAIN:
            return add(_PLAIN[name], [v])
        if name == "affine":
            return add("Add", [add("Mul", [v, self.c(alpha)]), self.c(beta)])
        if name == "scaledtanh":
            return add("Mul", [add("Tanh", [add("Mul", [v, self.c(beta)])]), self.c(alpha)])
        if name == "hardsigmoid":
            return add("HardSigmoid", [v], alpha=alpha, beta=beta)
        return add({"leakyrelu": "LeakyRelu", "thresholdedrelu": "ThresholdedRelu", "elu": "Elu"}[name],
                   [v], alpha=alpha)

    def initial(self, i: int, d: int) -> str:
        if self.ex.has(i):
            return self.pick(self.layout0(i), d)
        return self.c(np.zeros((self.batch, self.hidden)))

    def direction(self, d: int, reverse: bool) -> tuple[str, list[str]]:
        """Direction ``d``'s hidden states [seq, batch, hidden] (in time order) and its last state."""
        ex, g = self.ex, self.kind.gates * self.hidden
        x = self.layout0(0)
        if reverse and self.lens is not None:
            x = ex.add("ReverseSequence", [x, self.i64(self.lens)], batch_axis=1, time_axis=0)
        x_w = ex.add("MatMul", [x, ex.add("Transpose", [self.pick(ex.input(1), d)])])
        if ex.has(3):
            b = self.pick(ex.input(3), d)
            w_b, r_b = (ex.add("Slice", [b, self.i64([k * g]), self.i64([(k + 1) * g])]) for k in (0, 1))
            if self.kind.gates == 3 and ex.attrs["linear_before_reset"]:  # R's h bias stays inside r * (.)
                r_b = ex.add("Mul", [r_b, self.c(np.repeat([1, 1, 0], self.hidden))])
            x_w = ex.add("Add", [x_w, ex.add("Add", [w_b, r_b])])
        state = [self.initial(5, d)] + ([self.initial(6, d)] if self.kind.states == 2 else [])
        hs: dict[int, str] = {}
        for t in reversed(range(self.seq)) if reverse and self.lens is None else range(self.seq):
            new = self.kind.step(self, d, ex.add("Gather", [x_w, self.i64(t)], axis=0), state)
            if self.lens is None:
                state, hs[t] = new, new[0]
                continue
            live = ex.const((t < self.lens)[:, None])
            state = [ex.add("Where", [live, n, old]) for n, old in zip(new, state)]
            hs[t] = ex.add("Where", [live, new[0], self.c(0)])
        ys = ex.add("Concat", [ex.add("Unsqueeze", [hs[t], self.i64([0])]) for t in range(self.seq)], axis=0)
        if reverse and self.lens is not None:
            ys = ex.add("ReverseSequence", [ys, self.i64(self.lens)], batch_axis=1, time_axis=0)
        return ys, state

    def r_t(self, d: int) -> str:
        return self.once("Transpose", [self.pick(self.ex.input(2), d)])

    def output(self, k: int, parts: list[str], axis: int, perm: tuple[int, ...]) -> None:
        """Output ``k``: ``parts`` concatenated on ``axis``, in layout 1 transposed by ``perm``."""
        ex = self.ex
        if ex.attrs["layout"]:
            ex.add("Transpose", [ex.add("Concat", parts, axis=axis)], out=k, perm=perm)
        else:
            ex.add("Concat", parts, out=k, axis=axis)

    def expand(self) -> None:
        ex = self.ex
        runs = [self.direction(d, rev) for d, rev in enumerate(self.dirs)]
        if ex.wants(0):
            self.output(0, [ex.add("Unsqueeze", [ys, self.i64([1])]) for ys, _ in runs], 1, (2, 0, 1, 3))
        for k in range(1, 1 + self.kind.states):
            if ex.wants(k):
                lasts = [ex.add("Unsqueeze", [last[k - 1], self.i64([0])]) for _, last in runs]
                self.output(k, lasts, 0, (1, 0, 2))


def _rnn_step(rnn: _Rnn, d: int, x_t: str, state: list[str]) -> list[str]:
    # H = f(x W^T + H R^T + b)
    add = rnn.ex.add
    return [rnn.acts[d][0](add("Add", [x_t, add("MatMul", [state[0], rnn.r_t(d)])]))]


def _gru_step(rnn: _Rnn, d: int, x_t: str, state: list[str]) -> list[str]:
    # z, r = f(x Wzr^T + H Rzr^T + b); h~ = g(x Wh^T + (r H) Rh^T + b_h) or, with linear_before_reset,
    # g(x Wh^T + r (H Rh^T + Rb_h) + Wb_h); H' = h~ + z (H - h~)
    ex, add, (f, g) = rnn.ex, rnn.ex.add, rnn.acts[d]
    h, r_t = state[0], rnn.r_t(d)
    lbr = ex.attrs["linear_before_reset"]
    h_r = add("MatMul", [h, r_t if lbr else rnn.cols(r_t, 0, 2)])
    zr = f(add("Add", [rnn.cols(x_t, 0, 2), rnn.cols(h_r, 0, 2) if lbr else h_r]))
    z, r = rnn.cols(zr, 0), rnn.cols(zr, 1)
    if lbr:
        h_h = rnn.cols(h_r, 2)
        if ex.has(3):
            h_h = add("Add", [h_h, rnn.cols(rnn.pick(ex.input(3), d), 5)])
        h_h = add("Mul", [r, h_h])
    else:
        h_h = add("MatMul", [add("Mul", [r, h]), rnn.cols(r_t, 2)])
    cand = g(add("Add", [rnn.cols(x_t, 2), h_h]))
    return [add("Add", [cand, add("Mul", [z, add("Sub", [h, cand])])])]


def _lstm_step(rnn: _Rnn, d: int, x_t: str, state: list[str]) -> list[str]:
    # i, f = f(. + P (.) C); c~ = g(.); C' = f C + i c~; o = f(. + Po C'); H' = o h(C'); gates i o f c
    ex, add, (f, g, h) = rnn.ex, rnn.ex.add, rnn.acts[d]
    hid, cell = state
    gates = add("Add", [x_t, add("MatMul", [hid, rnn.r_t(d)])])
    p = rnn.pick(ex.input(7), d) if ex.has(7) else None

    def peep(k: int, c: str) -> str:  # gate k (i, o or f) plus its peephole (P holds i, o, f) times c
        v = rnn.cols(gates, k)
        return v if p is None else add("Add", [v, add("Mul", [rnn.cols(p, k), c])])

    i = f(peep(0, cell))
    forget = add("Sub", [rnn.c(1), i]) if ex.attrs["input_forget"] else f(peep(2, cell))
    cell = add("Add", [add("Mul", [forget, cell]), add("Mul", [i, g(rnn.cols(gates, 3))])])
    return [add("Mul", [f(peep(1, cell)), h(cell)]), cell]


_COMMON = {"activation_alpha": Attr("floats", None), "activation_beta": Attr("floats", None),
           "activations": Attr("strings", None), "clip": Attr("float", None),
           "direction": Attr("string", "forward"), "hidden_size": Attr("int", None),
           "layout": Attr("int", 0)}


def _expand(kind: _Kind, ex: Expanding) -> None:
    _Rnn(ex, kind).expand()


def _expansion(kind: _Kind, **attrs: Attr) -> Expansion:
    return Expansion(partial(_expand, kind), {**_COMMON, **attrs}, static_inputs=frozenset({4}), since=7)


EXPANSIONS = {
    "RNN": _expansion(_Kind(1, ("Tanh",), _rnn_step, clipped=1)),
    "GRU": _expansion(_Kind(3, ("Sigmoid", "Tanh"), _gru_step), linear_before_reset=Attr("int", 0)),
    "LSTM": _expansion(_Kind(4, ("Sigmoid", "Tanh", "Tanh"), _lstm_step, states=2),
                       input_forget=Attr("int", 0)),
}
"""The recurrent operators by name."""
