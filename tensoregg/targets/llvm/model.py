"""Whole-model native code: one LLVM module per Graph, a kernel per node and one entry point.

``void model(ptr inputs, ptr outputs, ptr weights, ptr workspace, i64 tid, i64 nthreads, ptr barrier)``
runs the nodes in order, on ``nthreads`` threads that all call it (see ``codegen``):
``inputs``/``outputs`` are arrays of pointers to the graph's input and output arrays, ``weights`` is
the packed buffer of every constant and ``workspace`` holds every intermediate value, at the offsets
of the static memory plan (``tensoregg.ir.memory_plan``). Graph outputs are written straight into
the caller's arrays.

In guard mode (``run_guarded``) every buffer is surrounded by poisoned bytes (0xFF: NaN for floats)
that are checked after each kernel; kernels then run one by one, so a violation names the node at
fault. Writes outside a buffer are caught; reads outside one see the poison (NaN in float results).
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import llvmlite.ir as ir
import numpy as np

from tensoregg.errors import CompileError, GuardViolation
from tensoregg.ir.compute import Buffer, Const, Expr, Load, walk
from tensoregg.ir.graph import Graph
from tensoregg.ir.loops import For, Invoke, Kernel, Local, Store, format_kernel, statements, work
from tensoregg.ir.lower import Chooser, Inlined, LoweredNode, lower_node
from tensoregg.ir.memory_plan import POISON, MemoryPlan, Place, align
from tensoregg.ir.registry import get_op
from tensoregg.runtime.memory import ALIGN, aligned_empty, huge_zeros
from tensoregg.runtime.threads import available_cpus
from tensoregg.targets import Target
from tensoregg.targets.llvm.codegen import PTR, emit_kernel
from tensoregg.targets.llvm.gemm_schedules import choose_gemm_schedule
from tensoregg.targets.llvm.host import host_target
from tensoregg.targets.llvm.jit import JitModule, emit_object, host_cpu, missing_features
from tensoregg.targets.llvm.team import NativeTeam

PARALLEL_MIN_WORK = 1 << 22
"""Models that execute fewer stores than this run on one thread: handing a run to the thread team
costs more than it saves."""


class NativeModel:
    """A Graph compiled to native code (see the module docstring). With ``guard``, ``run`` runs in
    guard mode with that many guard bytes. Contractions are scheduled by ``choose`` (default: the
    target's cost model over the schedules the rules enumerate; ``schedule=False``: all untiled).
    With ``fuse``, a node that is element-wise in the wide sense and whose output only one node
    reads is computed inside that node's kernel when it is element-wise too (BatchNorm + Relu, a
    Mul/Add/Relu chain: one pass over memory instead of one per op)."""

    def __init__(self, graph: Graph, *, guard: int = 0, row: bool = True, target: Target | None = None,
                 choose: Chooser | None = None, schedule: bool = True, fuse: bool = True) -> None:
        self.graph, self.guard = graph, guard
        self.target = target if target is not None else host_target()
        missing = missing_features(self.target.features)
        if missing:
            raise CompileError(f"target {self.target.name!r} describes a {self.target.cpu or 'CPU'} with "
                               f"{', '.join(missing)}, which this host ({host_cpu()[0]}) lacks: its code "
                               "would not run here")
        if choose is None and schedule:
            description = self.target
            choose = lambda problem: choose_gemm_schedule(problem, description)  # noqa: E731
        self.lowered: list[LoweredNode] = []
        uses = Counter(n for node in graph.nodes for n in node.inputs)
        uses.update(graph.outputs)
        inlinable: dict[str, tuple[int, Inlined]] = {}  # value -> (its node, the node as an expression)
        fused: set[int] = set()
        for k, node in enumerate(graph.nodes):
            opdef = get_op(node.op, node.domain)
            producers = {n: inlinable[n][1] for n in node.inputs if n in inlinable}
            low = lower_node(opdef, node, graph.types, graph.initializers, name=f"k{k}", row=row,
                             choose=choose if schedule else None, producers=producers)
            self.lowered.append(low)
            fused.update(inlinable[n][0] for n in low.fused)
            if low.inline is not None and fuse and uses[node.outputs[0]] == 1:
                inlinable[node.outputs[0]] = (k, low.inline)
        self.aliases, self.views = reuse_memory(graph, self.lowered)
        self.views |= fused
        self.plan = MemoryPlan(graph, self.lowered, aliases=self.aliases)
        self.work = sum(work(low.kernel.body) for low in self.lowered)
        self.module = self._build()
        self.jit = JitModule(self.module, self.target.cpu, self.target.features)
        self._kernels = [self._cfunc(name, len(low.kernel.params))
                         for name, low in zip(self.kernel_names, self.lowered)]
        self._entry_address = self.jit.address("model")
        self._entry = self._cfunc("model", 4)
        self._barrier = np.zeros(2, np.int64)
        self._work = huge_zeros(self.plan.work_size)
        self._addresses = (self.plan.weights_address, self._work.ctypes.data, self._barrier.ctypes.data)
        """Weights, workspace and barrier: fixed for the model's life, looked up once (a ``.ctypes``
        lookup costs about 1 us, a few % of a 0.2 ms run)."""
        self._work_lock = threading.Lock()
        self._team = NativeTeam(1)
        self.num_threads = len(available_cpus())

    def _cfunc(self, name: str, n: int) -> Callable[..., None]:
        signature = [ctypes.c_void_p] * n + [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        return ctypes.CFUNCTYPE(None, *signature)(self.jit.address(name))

    @property
    def num_threads(self) -> int:
        """Threads each run uses (default: every CPU this process may use)."""
        return self._team.size

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_threads must be a positive int, got {n!r}")
        if n != self._team.size:
            self._team.close()
            self._team = NativeTeam(n)

    # ---- code -------------------------------------------------------------------------------------

    def _build(self) -> ir.Module:
        module = ir.Module(name=self.graph.name)
        kernels, by_text = [], {}
        for low in self.lowered:  # identical kernels (same op, attributes, shapes) share one function
            key = canonical_text(low.kernel)
            if key not in by_text:
                by_text[key] = emit_kernel(module, low.kernel, self.target.lanes)
            kernels.append(by_text[key])
        self.kernel_names = [fn.name for fn in kernels]
        i8, i64 = ir.IntType(8), ir.IntType(64)
        entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR] * 4 + [i64, i64, PTR]), "model")
        entry.attributes.add("nounwind")
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        ins, outs, weights, work, *team = entry.args

        def pointer(place: Place) -> ir.Value:
            if place.kind in ("input", "output"):
                table = ins if place.kind == "input" else outs
                slot = b.gep(table, [ir.Constant(i64, place.at)], inbounds=True, source_etype=PTR)
                return b.load(slot, typ=PTR)
            base = weights if place.kind == "weights" else work
            return b.gep(base, [ir.Constant(i64, place.at)], inbounds=True, source_etype=i8)

        for k, (fn, low) in enumerate(zip(kernels, self.lowered)):
            if k not in self.views:
                b.call(fn, [pointer(p) for p in self.plan.param_places(low)] + team)
        b.ret_void()
        return module

    # ---- artifacts --------------------------------------------------------------------------------

    def write_shared_library(self, path: str | os.PathLike[str]) -> Path:
        """The model's code as a shared library at ``path`` (position-independent object linked with
        ``cc -shared``): it exports ``model`` and the kernels (``kernel_names``, one per node) with
        the signatures above and needs only libc and libm. Weights and the workspace size are not in it."""
        path = Path(path)
        with tempfile.TemporaryDirectory() as tmp:
            obj = Path(tmp) / "model.o"
            obj.write_bytes(emit_object(self.module, self.target.cpu, self.target.features))
            cc = os.environ.get("CC", "cc")
            done = subprocess.run([cc, "-shared", "-o", str(path), str(obj), "-lm"],
                                  capture_output=True, text=True)
        if done.returncode:
            raise CompileError(f"linking {path} with {cc} failed: {done.stderr.strip()}")
        return path

    # ---- running ----------------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feeds`` (already checked against the graph's input types)."""
        if self.guard:
            return self.run_guarded(feeds, self.guard)
        g, plan = self.graph, self.plan
        inputs = [np.ascontiguousarray(feeds[n]) for n in g.inputs]
        produced = {n: np.empty(g.types[n].shape, g.types[n].dtype) for n, p in plan.places.items()
                    if p.kind == "output"}
        weights, work_address, barrier = self._addresses
        own = self._work_lock.acquire(blocking=False)  # the model's own workspace (pages stay mapped),
        work = self._work if own else aligned_empty(plan.work_size)  # unless another thread's run has it
        in_table = (ctypes.c_void_p * max(len(inputs), 1))(*[a.ctypes.data for a in inputs])
        outs = [produced.get(n) for n in g.outputs]
        out_table = (ctypes.c_void_p * max(len(outs), 1))(*[0 if a is None else a.ctypes.data for a in outs])
        args = (in_table, out_table, weights, work_address if own else work.ctypes.data)
        try:
            if self.work < PARALLEL_MIN_WORK or self._team.size == 1:
                self._entry(*args, 0, 1, barrier)
            else:
                tables = [ctypes.addressof(in_table), ctypes.addressof(out_table)]
                self._team.run(self._entry_address, [*tables, *args[2:]], barrier)
        finally:
            if own:
                self._work_lock.release()
        return self._collect(produced, feeds)

    def profile(self, feeds: Mapping[str, np.ndarray], repeat: int = 5) -> list[tuple[str, float]]:
        """(``op node-label``, median seconds) per node, running kernels one by one on one thread."""
        g, plan = self.graph, self.plan
        inputs = {n: np.ascontiguousarray(feeds[n]) for n in g.inputs}
        outputs = {n: np.empty(g.types[n].shape, g.types[n].dtype) for n, p in plan.places.items()
                   if p.kind == "output"}
        work = aligned_empty(plan.work_size)

        io = {n: int(a.ctypes.data) for n, a in [*inputs.items(), *outputs.items()]}
        times: list[list[float]] = [[] for _ in self.lowered]
        calls = [(kernel, [plan.address(p, io, int(work.ctypes.data)) for p in plan.param_places(low)])
                 for low, kernel in zip(self.lowered, self._kernels)]
        barrier = self._barrier.ctypes.data
        for _ in range(repeat):
            for k, (kernel, args) in enumerate(calls):
                if k in self.views:
                    times[k].append(0.0)
                    continue
                start = time.perf_counter()
                kernel(*args, 0, 1, barrier)
                times[k].append(time.perf_counter() - start)
        return [(f"{n.op} {n.label}", float(np.median(t))) for n, t in zip(g.nodes, times)]

    def _collect(self, produced: Mapping[str, np.ndarray],
                 feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs: computed ones, inputs and constants passed through (copied)."""
        result = []
        seen: set[str] = set()
        for n in self.graph.outputs:
            if n in produced and n not in seen:
                result.append(produced[n])
            elif n in produced:
                result.append(produced[n].copy())
            else:
                source = feeds[n] if n in feeds else self.graph.initializers[n]
                result.append(np.array(source, copy=True))
            seen.add(n)
        return result

    def run_guarded(self, feeds: Mapping[str, np.ndarray], guard: int = 64) -> list[np.ndarray]:
        """Run kernel by kernel, every buffer between ``guard`` poisoned bytes (rounded up to 64),
        checking after each kernel that no guard byte and no weight changed; raise GuardViolation
        naming the node otherwise. The same machine code as ``run``, on its own memory plan."""
        g = self.graph
        plan = MemoryPlan(g, self.lowered, guard, self.aliases)
        pad = plan.guard
        arenas: dict[str, tuple[np.ndarray, int, int]] = {}  # graph input/output -> (bytes, start, nbytes)

        def guarded(nbytes: int) -> tuple[np.ndarray, int]:
            raw = np.full(align(nbytes) + 2 * pad + 2 * ALIGN, POISON, np.uint8)
            return raw, (-raw.ctypes.data) % ALIGN + pad

        for n in g.inputs:
            data = np.ascontiguousarray(feeds[n]).view(np.uint8).reshape(-1)
            raw, start = guarded(data.size)
            raw[start:start + data.size] = data
            arenas[n] = (raw, start, data.size)
        for n, p in plan.places.items():
            if p.kind == "output":
                arenas[n] = (*guarded(p.nbytes), p.nbytes)
        work_raw, work_start = guarded(plan.work_size)
        work = work_raw[work_start:]
        weights = plan.weights_blob[plan.weights_base:]
        weights_before = weights.copy()
        every = [*plan.places.values(), *plan.constant_places.values()]
        constants = [p for p in every if p.kind == "weights"]

        io = {n: int(raw.ctypes.data) + start for n, (raw, start, _) in arenas.items()}
        work_at = int(work.ctypes.data)

        for k, (node, low, kernel) in enumerate(zip(g.nodes, self.lowered, self._kernels)):
            if k in self.views:
                continue
            places = plan.param_places(low)
            for p in (p for p in places if p.kind == "work"):  # guards may hold an earlier value
                work[p.at - pad:p.at] = POISON                     # that shared these bytes
                work[p.at + p.nbytes:p.at + p.nbytes + pad] = POISON
            kernel(*[plan.address(p, io, work_at) for p in places], 0, 1, self._barrier.ctypes.data)
            where = f"{node.op} node {node.label!r}"
            _check_guards(where, arenas, work, pad,
                          [(p, b.name) for p, b in zip(places, low.kernel.params) if p.kind == "work"])
            _check_guards(where, {}, weights, pad, [(p, "of the weights") for p in constants])
        if not np.array_equal(weights, weights_before):  # inside a constant: too costly after each kernel
            raise GuardViolation("a kernel wrote into the weights")
        produced = {}
        for n, p in plan.places.items():
            if p.kind == "output":
                raw, start, nbytes = arenas[n]
                t = g.types[n]
                produced[n] = raw[start:start + nbytes].view(t.dtype).reshape(t.shape).copy()
        return self._collect(produced, feeds)


VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
"""Ops whose output is their first input's bytes as they are (row-major order kept)."""


def reuse_memory(graph: Graph, lowered: Sequence[LoweredNode]) -> tuple[dict[str, str], set[int]]:
    """Values that can live in the memory of an input that dies at their node: (aliases for the
    memory plan, indices of the nodes that then need no kernel call). A view op's output is its input;
    an element-wise kernel that reads an input only at the index it writes (same shape and dtype)
    writes over that input (its stores are redirected to it). Only workspace values take part: graph
    inputs, outputs and constants are never overwritten."""
    last_use: dict[str, int] = {}
    for k, low in enumerate(lowered):  # what kernels read (a fused kernel reads its producers' inputs)
        for n in low.inputs:
            last_use[n] = k
    fixed = {*graph.inputs, *graph.outputs, *graph.initializers}
    aliases: dict[str, str] = {}
    views: set[int] = set()

    def root(n: str) -> str:
        while n in aliases:
            n = aliases[n]
        return n

    def dies_here(n: str, k: int) -> bool:  # n and every value sharing its memory
        r = root(n)
        return r not in fixed and all(last_use.get(v, -1) <= k for v in [r, *aliases] if root(v) == r)

    for k, (node, low) in enumerate(zip(graph.nodes, lowered)):
        outs = [o for o in low.outputs if o]
        if len(low.outputs) != 1 or not outs or outs[0] in fixed:
            continue
        out_buf = low.kernel.params[len(low.inputs)]
        for name, buf in zip(low.inputs, low.kernel.params):
            if not dies_here(name, k) or buf.nbytes != out_buf.nbytes:
                continue
            if node.op in VIEWS and node.domain == "" and name == node.inputs[0]:
                aliases[outs[0]] = name
                views.add(k)
                break
            if writes_in_place(low, buf, out_buf):
                aliases[outs[0]] = name
                break
    return aliases, views


def writes_in_place(low: LoweredNode, source: Buffer, out: Buffer) -> bool:
    """Whether ``low``'s kernel may store into ``source`` instead of ``out`` (and if so, redirect its
    stores): no stages or locals, same dtype and shape, every store into ``out`` and every load of
    ``source`` at the very index being stored."""
    if low.scratch or source.dtype != out.dtype or source.shape != out.shape:
        return False
    stores = [s for s in statements(low.kernel.body) if isinstance(s, Store)]
    if any(isinstance(s, (Local, Invoke)) for s in statements(low.kernel.body)):
        return False
    if any(s.buffer is not out for s in stores):
        return False
    for s in statements(low.kernel.body):
        bounds = [s.start, s.stop] if isinstance(s, For) else []
        if any(isinstance(e, Load) and e.buffer is source for x in bounds for e in walk(x)):
            return False
    for s in stores:
        for e in [e for x in [*s.index, s.value] for e in walk(x)]:
            if isinstance(e, Load) and e.buffer is source and not _same_index(e.index, s.index):
                return False
    for s in stores:
        s.buffer = source
    return True


def _same_index(a: Sequence[Expr], b: Sequence[Expr]) -> bool:
    def same(x: Expr, y: Expr) -> bool:
        return x is y or (isinstance(x, Const) and isinstance(y, Const) and x.value == y.value)
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def _check_guards(where: str, arenas: Mapping[str, tuple[np.ndarray, int, int]], work: np.ndarray, pad: int,
                  in_work: Sequence[tuple[Place, str]]) -> None:
    """Raise GuardViolation if a guard byte of a graph input/output or of a workspace buffer changed."""
    for name, (raw, start, nbytes) in arenas.items():
        if (raw[:start] != POISON).any() or (raw[start + nbytes:] != POISON).any():
            raise GuardViolation(f"{where} wrote outside buffer {name!r}")
    for p, name in in_work:
        end = p.at + p.nbytes
        if (work[p.at - pad:p.at] != POISON).any() or (work[end:end + pad] != POISON).any():
            raise GuardViolation(f"{where} wrote outside its buffer {name}")


def canonical_text(kernel: Kernel) -> str:
    """The kernel's text without its name, its own names (loop variables, locals, params) renamed in
    order of appearance: equal exactly for kernels that compute the same thing on buffers of the same
    dtypes and shapes."""
    names = {b.name for b in kernel.params}
    for s in statements(kernel.body):
        if isinstance(s, For):
            names |= {s.var.name, *(v.name for v, _ in s.unpack)}
        elif isinstance(s, Local):
            names.add(s.buffer.name)
    text = format_kernel(kernel).split("(", 1)[1]
    renamed: dict[str, str] = {}
    pattern = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.sub(rf"(?<![\w.])(?:{pattern})(?![\w.])",
                  lambda m: renamed.setdefault(m.group(0), f"#{len(renamed)}"), text) if names else text
