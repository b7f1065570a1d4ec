"""A load's or store's index, compiled: the flat element offset it addresses in a run, with every
coordinate checked against its axis (against the whole buffer for a flat index).

Each axis is a linear form of terms (``analysis.linear``), split by what they depend on: lane terms
(lane variables only, no loads) are summed once per binding of those variables and their bounds
taken then; scalar terms (serial variables only) are numpy scalars, cheap to add each time; the
other terms (loads, or a non-linear mix of both kinds) are computed every time. A coordinate whose
bounds fall outside its axis is checked lane by lane (lanes the mask turns off may lie outside:
they do not run); a lane that runs out of range raises GuardViolation naming the kernel and buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tensoregg.errors import CompileError, GuardViolation
from tensoregg.ir.compute import Buffer, Expr, Var, walk
from tensoregg.targets.interp.analysis import axes, free_vars, has_load, linear
from tensoregg.targets.interp.frame import Fn, Frame, cached

if TYPE_CHECKING:
    from tensoregg.targets.interp.gpu import GpuScope

Terms = list[tuple[int, Fn]]


@dataclass
class Scope:
    """What compiling a statement knows: how each bound variable is held (``lane``: an array along
    its vectorized loop's axis, ``serial``: a scalar, ``varying``: an array over the lanes that
    changes with each iteration of a GPU thread's own loop), how many vectorized loops enclose it,
    the buffers it may touch (params; locals with the number of vectorized loops around each), and
    in a GPU kernel where it is (``gpu.GpuScope``)."""

    kinds: dict[int, str]
    level: int
    locals: dict[int, int]
    params: set[int]
    gpu: GpuScope | None = None

    def inside(self, var_kinds: dict[int, str], axes: int, gpu: GpuScope | None = None) -> Scope:
        """The scope in a loop binding ``var_kinds`` along ``axes`` new lane axes (in ``gpu`` if given)."""
        return Scope({**self.kinds, **var_kinds}, self.level + axes, self.locals, self.params,
                     self.gpu if gpu is None else gpu)

    def with_local(self, buf: Buffer, gpu: GpuScope | None = None) -> Scope:
        return Scope(self.kinds, self.level, {**self.locals, id(buf): self.level}, self.params,
                     self.gpu if gpu is None else gpu)


class Layout(NamedTuple):
    """A strided view of a buffer: the elements ``start + sum(i_k * strides_k / itemsize)``."""

    start: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    distinct: bool
    """Whether its elements are distinct along every axis longer than 1 (no zero stride there)."""


@dataclass
class _Lanes:
    """An access's lane part for one binding of its lane variables."""

    flat: Any
    coords: list[Any]
    lows: list[int]
    highs: list[int]
    outside: list[int]
    """Axes whose lane part alone leaves the axis somewhere (fine if only in lanes that do not run)."""
    layout: Layout | None
    """How ``flat`` lies in memory when it is affine in the lane axes: a strided view of the buffer
    then reads and writes it without gathering."""
    verified: int = -1
    """The mask generation under which the ``outside`` axes were checked."""
    windows: tuple[np.ndarray, np.ndarray, int] | None = None
    """(memory, its strided views at every offset that stays inside it stacked, the first offset)."""

    def window(self, view: np.ndarray, offset: int) -> np.ndarray | None:
        """The strided view of ``view`` (``layout``) shifted by ``offset`` elements; None if the
        buffer is too small to hold it."""
        if self.windows is None or self.windows[0] is not view:
            assert self.layout is not None
            self.windows = (view, *_stack(view, self.layout))
        _, stack, first = self.windows
        at = offset - first
        return stack[at] if 0 <= at < len(stack) else None


def _sum(terms: Terms) -> Fn | None:
    """The closure computing ``sum(coef * term)``, or None when there are no terms."""
    if not terms:
        return None
    if len(terms) == 1 and terms[0][0] == 1:
        return terms[0][1]

    def total(f: Frame) -> Any:
        value: Any = 0
        for coef, fn in terms:
            value = value + (fn(f) if coef == 1 else coef * fn(f))
        return value
    return total


class Access:
    """``buf[index]`` compiled in ``scope`` (``compile_expr`` compiles non-linear terms); ``what``
    (``load``/``store``) and ``where`` (the kernel) name it in errors."""

    def __init__(self, buf: Buffer, index: tuple[Expr, ...], scope: Scope,
                 compile_expr: Callable[[Expr], Fn], where: str, what: str, slot: int) -> None:
        if len(index) != len(buf.shape):
            raise CompileError(f"{where}: {what} of {buf.name} (rank {len(buf.shape)}) with "
                               f"{len(index)} indices")
        self.name, self.where, self.what, self.itemsize = buf.name, where, what, buf.dtype.itemsize
        spec = axes(buf, index)
        self.flat_form = len(spec) == 1 and len(buf.shape) > 1
        self.extents = [extent for _, extent, _ in spec]
        self.strides = [stride for _, _, stride in spec]
        lanes: list[tuple[int, Terms]] = []
        self.dynamic: list[tuple[int, Fn | None, Fn | None]] = []
        for d, (e, _, _) in enumerate(spec):
            form = linear(e)
            lane_terms: Terms = []
            scalar_terms: Terms = []
            other_terms: Terms = []
            for coef, atom in form.terms:
                uses = free_vars(atom)
                unbound = uses - scope.kinds.keys()
                if unbound:
                    raise CompileError(f"{where}: index {_name(atom, unbound)} used outside its loop")
                kinds = {scope.kinds[v] for v in uses}
                fn = _var(id(atom)) if isinstance(atom, Var) else compile_expr(atom)
                if has_load(atom) or "varying" in kinds or kinds == {"lane", "serial"}:
                    other_terms.append((coef, fn))
                elif "serial" in kinds:
                    scalar_terms.append((coef, fn))
                else:
                    lane_terms.append((coef, fn))
            lanes.append((form.const, lane_terms))
            if scalar_terms or other_terms:
                self.dynamic.append((d, _sum(scalar_terms), _sum(other_terms)))
        self.lane_parts = lanes
        self.row = id(buf) if scope.locals.get(id(buf), 0) > 0 else None
        self.lanes = cached(self._lanes, slot)

    def _lanes(self, f: Frame) -> _Lanes:
        coords: list[Any] = []
        flat: Any = 0
        for (const, terms), stride in zip(self.lane_parts, self.strides):
            c: Any = const
            for coef, fn in terms:
                c = c + (fn(f) if coef == 1 else coef * fn(f))
            coords.append(c)
            flat = flat + (c if stride == 1 else c * stride)
        if self.row is not None:
            flat = flat + f.values[self.row]
        lows = [int(np.min(c)) for c in coords]
        highs = [int(np.max(c)) for c in coords]
        dynamic = {d for d, _, _ in self.dynamic}
        outside = [d for d, ext in enumerate(self.extents)
                   if d not in dynamic and (lows[d] < 0 or highs[d] >= ext)]
        return _Lanes(flat, coords, lows, highs, outside, _layout(flat, self.itemsize))

    def _locate(self, f: Frame) -> tuple[_Lanes, Any, bool]:
        """The lane part, the offset the other terms add (a scalar or an array), and whether every
        lane, running or not, lies inside the buffer; GuardViolation if a running lane does not."""
        lanes = self.lanes(f)
        inside = not lanes.outside
        if lanes.outside and (f.mask is None or lanes.verified != f.mask_gen):
            for d in lanes.outside:
                self.check(f, d, lanes.coords[d])
            lanes.verified = f.mask_gen
        offset: Any = 0
        for d, scalar, other in self.dynamic:
            shift: Any = 0 if scalar is None else scalar(f)
            low, high = lanes.lows[d] + shift, lanes.highs[d] + shift
            if other is not None:
                extra = other(f)
                low, high = low + np.min(extra), high + np.max(extra)
                shift = shift + extra
            if low < 0 or high >= self.extents[d]:
                self.check(f, d, lanes.coords[d] + shift)
                inside = False
            stride = self.strides[d]
            offset = offset + (shift if stride == 1 else shift * stride)
        return lanes, offset, inside

    def positions(self, f: Frame) -> Any:
        """The flat offsets (in the buffer's memory, a local's rows included) that the lanes address."""
        lanes, offset, _ = self._locate(f)
        return lanes.flat + offset

    def read(self, f: Frame, view: np.ndarray) -> Any:
        """The loaded value (a numpy scalar, or an array over the lanes)."""
        lanes, offset, inside = self._locate(f)
        if inside and lanes.layout is not None and _scalar(offset):
            window = lanes.window(view, int(offset))
            if window is not None:
                return window
        flat = lanes.flat + offset
        if _scalar(flat):
            return view[flat]
        return np.take(view, flat, mode="clip")

    def write(self, f: Frame, view: np.ndarray, value: Any, proven: bool) -> None:
        """Store ``value`` in the running lanes; unless ``proven`` (distinct lanes write distinct
        elements), first check that no two lanes store different values into one element."""
        lanes, offset, inside = self._locate(f)
        mask = f.mask
        target = (lanes.window(view, int(offset)) if proven and inside and lanes.layout is not None
                  and lanes.layout.distinct and _scalar(offset) else None)
        if target is not None:
            try:
                if mask is None:
                    target[...] = value
                else:
                    np.copyto(target, value, where=mask)
                return
            except ValueError:  # the value or the mask varies over lanes the index does not
                pass
        flat = lanes.flat + offset
        if mask is None and proven:
            try:
                view[flat] = value
                return
            except ValueError:
                pass
        shape = np.broadcast_shapes(np.shape(flat), np.shape(value), () if mask is None else mask.shape)
        at, values = np.broadcast_to(flat, shape), np.broadcast_to(value, shape)
        if mask is not None:
            running = np.broadcast_to(mask, shape)
            at, values = at[running], values[running]
        if not proven or np.shape(flat) != shape:
            self._distinct(np.ravel(at), np.ravel(values))
        view[at] = values

    def _distinct(self, at: np.ndarray, values: np.ndarray) -> None:
        """CompileError if two lanes store different values into one element (a race in the program)."""
        if at.size < 2:
            return
        order = np.argsort(at, kind="stable")
        ordered = at[order]
        twice = ordered[1:] == ordered[:-1]
        if twice.any():
            stored = values[order]
            if stored[1:][twice].tobytes() != stored[:-1][twice].tobytes():
                raise CompileError(f"{self.where}: iterations of a parallel loop store different values into "
                                   f"one element of {self.name} (element {int(ordered[1:][twice][0])})")

    def check(self, f: Frame, d: int, coord: Any) -> None:
        """GuardViolation if a running lane's coordinate ``coord`` lies outside axis ``d``."""
        coord = np.asarray(coord)
        extent = self.extents[d]
        bad = (coord < 0) | (coord >= extent)
        if f.mask is not None:
            bad = bad & f.mask
        if np.any(bad):
            value = int(np.broadcast_to(coord, bad.shape)[bad].flat[0])
            axis = "flat index" if self.flat_form else f"index on axis {d}"
            raise GuardViolation(f"{self.where}: {self.what} of {self.name} out of range: {axis} {value} "
                                 f"not in [0, {extent})")


def _layout(flat: Any, itemsize: int) -> Layout | None:
    """The strided view whose elements are at ``flat``, if there is one."""
    if np.ndim(flat) == 0:
        return None
    flat = np.asarray(flat)
    start = int(flat.flat[0])
    steps, grid = [], np.asarray(start)
    for k, n in enumerate(flat.shape):
        corner = tuple(1 if j == k else 0 for j in range(flat.ndim))
        step = int(flat[corner]) - start if n > 1 else 0
        steps.append(step * itemsize)
        grid = grid + np.arange(n).reshape((n,) + (1,) * (flat.ndim - k - 1)) * step
    if not np.array_equal(grid, flat):
        return None
    return Layout(start, flat.shape, tuple(steps), all(s or n == 1 for s, n in zip(steps, flat.shape)))


def _stack(view: np.ndarray, layout: Layout) -> tuple[np.ndarray, int]:
    """The strided views ``layout`` of ``view`` at every offset that keeps them inside it, along a
    first axis, and the first such offset (selecting one is then a cheap basic index)."""
    start, shape, strides, _ = layout
    item = view.itemsize
    reach = [(n - 1) * s // item for n, s in zip(shape, strides)]
    low = start + sum(min(0, r) for r in reach)
    high = start + sum(max(0, r) for r in reach)
    first, count = -low, max(view.size - (high - low), 0)
    at = (start + first) * item if count else 0
    stack = np.ndarray((count, *shape), view.dtype, buffer=view, offset=at, strides=(item, *strides))
    return stack, first


def _scalar(x: Any) -> bool:
    return not isinstance(x, np.ndarray) or x.ndim == 0


def _var(vid: int) -> Fn:
    return lambda f: f.values[vid]


def _name(atom: Expr, ids: set[int]) -> str:
    return next(x.name for x in walk(atom) if isinstance(x, Var) and id(x) in ids)
