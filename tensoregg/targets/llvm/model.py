"""Whole-model native code: a kernel per node (an LLVM module per distinct kernel) and one entry point.

``void model(ptr inputs, ptr outputs, ptr weights, ptr workspace, i64 tid, i64 nthreads, ptr barrier)``
runs the nodes in order, on up to ``nthreads`` threads that call it, sharing out each kernel's work
through the two words at ``barrier``, 0 when a run starts (see ``sharing``; a thread that calls it
late skips the work already done):
``inputs``/``outputs`` are arrays of pointers to the graph's input and output arrays, ``weights`` is
the packed buffer of every constant and ``workspace`` holds every intermediate value, at the offsets
of the static memory plan (``tensoregg.ir.memory_plan``). Graph outputs are written straight into
the caller's arrays.

A kernel that finds an index out of range (``bound``) sets the global ``tensoregg_fault``; the entry
point, after that kernel, stores the node's position + 2 there and returns, and the run raises
``IndexOutOfRange`` naming the node (``NativeExecutor.check_fault``; the flag is the model's: runs
of one model in several Python threads at once may see each other's fault).

In guard mode (``run_guarded``) every buffer is surrounded by poisoned bytes (0xFF: NaN for floats)
that are checked after each kernel; kernels then run one by one, so a violation names the node at
fault. Writes outside a buffer are caught; reads outside one see the poison (NaN in float results).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import llvmlite.ir as ir
import numpy as np

from tensoregg.errors import CompileError, GuardViolation
from tensoregg.ir.graph import Graph
from tensoregg.ir.loops import Kernel, bounds_checked
from tensoregg.ir.lower import Chooser
from tensoregg.ir.memory_plan import POISON, MemoryPlan, Place, align
from tensoregg.ir.program import LoopProgram, canonical_text, collect_outputs, lower_graph
from tensoregg.ir.schedules import GemmSchedule
from tensoregg.runtime.memory import ALIGN, aligned_empty
from tensoregg.runtime.native import FAULT, NativeExecutor
from tensoregg.runtime.signature import specs
from tensoregg.targets import Target
from tensoregg.targets.llvm.capi import HEADER, glue_source
from tensoregg.targets.llvm.codegen import emit_kernel, fault_flag, kernel_type
from tensoregg.targets.llvm.gemm_schedules import choose_gemm_schedule
from tensoregg.targets.llvm.host import host_target
from tensoregg.targets.llvm.irtypes import I8, I64, PTR
from tensoregg.targets.llvm.jit import JitModule, emit_objects, host_cpu, missing_features
from tensoregg.targets.llvm.pipeline import NO_UNROLL
from tensoregg.targets.llvm.team import emit_team, jit_functions

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
        offered = {u.name for u in self.target.microkernels}
        for node in graph.nodes:
            if isinstance(node.schedule, GemmSchedule) and node.schedule.ukernel.name not in offered:
                raise CompileError(f"{node.op} node {node.label!r} is scheduled on micro-kernel "
                                   f"{node.schedule.ukernel.name}, which target {self.target.name!r} "
                                   f"({self.target.cpu or 'CPU'}) does not offer: optimize the graph "
                                   "for this target")
        if choose is None and schedule:
            description = self.target
            choose = lambda problem: choose_gemm_schedule(problem, description)  # noqa: E731
        self.program = lower_graph(graph, row=row, choose=choose, fuse=fuse, tile=schedule, concats=True)
        self.lowered, self.aliases, self.plan = self.program.lowered, self.program.aliases, self.program.plan
        self.views = self.program.skipped
        self.work = self.program.work
        self.ir = emit_model(self.program, self.target.lanes)
        self.kernel_names = self.ir.kernel_names
        self.jit = JitModule(self.ir.modules, self.target.cpu, self.target.features)
        self._kernels = {k: self._cfunc(name, len(low.kernel.params))  # the nodes whose kernel runs
                         for k, (name, low) in enumerate(zip(self.kernel_names, self.lowered)) if name}
        self._barrier = np.zeros(2, np.int64)
        g = graph
        self.executor = NativeExecutor(
            self.jit.address("model"), jit_functions(), self.plan.weights_blob[self.plan.weights_base:],
            self.plan.work_size, inputs=specs(g, g.inputs), outputs=specs(g, g.outputs),
            slots={n: p.at for n, p in self.plan.places.items() if p.kind == "output"},
            constants={n: g.initializers[n] for n in g.outputs if n in g.initializers},
            parallel=self.work >= PARALLEL_MIN_WORK, owner=self.jit,
            fault=self.jit.global_address(FAULT) if FAULT in self.ir.entry.globals else 0,
            nodes=[f"{n.op} {n.label}" for n in g.nodes])
        """Runs the model's entry point (``run``)."""

    def _cfunc(self, name: str, n: int) -> Callable[..., None]:
        signature = [ctypes.c_void_p] * n + [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        return ctypes.CFUNCTYPE(None, *signature)(self.jit.address(name))

    @property
    def num_threads(self) -> int:
        """Threads each run uses (default: every CPU this process may use)."""
        return self.executor.num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        self.executor.num_threads = n

    # ---- artifacts --------------------------------------------------------------------------------

    def write_shared_library(self, path: str | os.PathLike[str]) -> Path:
        """The model's code as a shared library at ``path`` (position-independent objects linked with
        ``cc -shared``; it needs only libc and libm). It exports ``model`` and the kernels
        (``kernel_names``, one per node that runs) with the signatures above, the thread team's functions
        (``tensoregg.runtime.team``) and the C API of ``capi.HEADER``. Weights are not in it."""
        path = Path(path)
        team = ir.Module("tensoregg_team")
        emit_team(team)
        ex = self.executor
        modules = [*self.ir.modules, team]
        objects = [f"m{k}.o" for k in range(len(modules))]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name, code in zip(objects, emit_objects(modules, self.target.cpu, self.target.features)):
                (root / name).write_bytes(code)
            (root / "tensoregg.h").write_text(HEADER)
            (root / "capi.c").write_text(glue_source(ex.inputs, ex.outputs, ex.slots, ex.constants,
                                                     ex.work_size, ex.weights.nbytes))
            cc = os.environ.get("CC", "cc")
            done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-std=c11", "-o", str(path), *objects,
                                   "capi.c", "-lm"], capture_output=True, text=True, cwd=root)
        if done.returncode:
            raise CompileError(f"linking {path} with {cc} failed: {done.stderr.strip()}")
        return path

    # ---- running ----------------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feeds`` (already checked against the graph's input types)."""
        if self.guard:
            return self.run_guarded(feeds, self.guard)
        return self.executor.run(feeds)

    def profile(self, feeds: Mapping[str, np.ndarray], repeat: int = 5) -> list[tuple[str, float]]:
        """(``op node-label``, median seconds) per node, running kernels one by one on one thread."""
        g, plan = self.graph, self.plan
        inputs = {n: np.ascontiguousarray(feeds[n]) for n in g.inputs}
        outputs = {n: np.empty(g.types[n].shape, g.types[n].dtype) for n, p in plan.places.items()
                   if p.kind == "output"}
        work = aligned_empty(plan.work_size)

        io = {n: int(a.ctypes.data) for n, a in [*inputs.items(), *outputs.items()]}
        times: list[list[float]] = [[] for _ in self.lowered]
        calls = {k: (kernel, [plan.address(p, io, int(work.ctypes.data))
                              for p in plan.param_places(self.lowered[k])])
                 for k, kernel in self._kernels.items()}
        barrier = self._barrier.ctypes.data
        for _ in range(repeat):
            for k in range(len(self.lowered)):
                if k not in calls:
                    times[k].append(0.0)
                    continue
                kernel, args = calls[k]
                start = time.perf_counter()
                kernel(*args, 0, 1, barrier)
                times[k].append(time.perf_counter() - start)
                self.executor.check_fault(k)
        return [(f"{n.op} {n.label}", float(np.median(t))) for n, t in zip(g.nodes, times)]


    def run_guarded(self, feeds: Mapping[str, np.ndarray], guard: int = 64) -> list[np.ndarray]:
        """Run kernel by kernel, every buffer between ``guard`` poisoned bytes (rounded up to 64),
        checking after each kernel that no guard byte and no weight changed; raise GuardViolation
        naming the node otherwise. The same machine code as ``run``, on its own memory plan."""
        g = self.graph
        plan = MemoryPlan(g, self.lowered, guard, self.aliases, self.plan.inside)
        inner = {plan.places[n] for n in plan.inside}  # no guard bytes between a Concat's parts
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

        for k, (node, low) in enumerate(zip(g.nodes, self.lowered)):
            if k not in self._kernels:
                continue
            kernel = self._kernels[k]
            places = plan.param_places(low)
            for p in (p for p in places if p.kind == "work" and p not in inner):  # guards may hold an
                work[p.at - pad:p.at] = POISON                   # earlier value that shared these bytes
                work[p.at + p.nbytes:p.at + p.nbytes + pad] = POISON
            kernel(*[plan.address(p, io, work_at) for p in places], 0, 1, self._barrier.ctypes.data)
            self.executor.check_fault(k)
            where = f"{node.op} node {node.label!r}"
            _check_guards(where, arenas, work, pad,
                          [(p, b.name) for p, b in zip(places, low.kernel.params)
                           if p.kind == "work" and p not in inner])
            _check_guards(where, {}, weights, pad, [(p, "of the weights") for p in constants])
        if not np.array_equal(weights, weights_before):  # inside a constant: too costly after each kernel
            raise GuardViolation("a kernel wrote into the weights")
        produced = {}
        for n, p in plan.places.items():
            if p.kind == "output":
                raw, start, nbytes = arenas[n]
                t = g.types[n]
                produced[n] = raw[start:start + nbytes].view(t.dtype).reshape(t.shape).copy()
        return collect_outputs(self.graph, produced, feeds)


@dataclass(frozen=True)
class ModelIR:
    """A loop program as LLVM modules: ``entry`` defines the entry point ``model`` (see the module
    docstring) and the fault flag; each of ``kernels`` defines one distinct kernel function, named
    after its text (``te_`` and a digest), or one micro-kernel or packing routine the kernels call
    (named after its parameters), so that the same kernel or routine is the same module in every
    model: compiled once (``jit.machine_codes`` keeps object code by text) and on several cores at
    once. ``kernel_names`` is each node's kernel function, "" for a node whose kernel never runs (a
    view, or a producer its consumer's kernel computes: ``LoopProgram.skipped``), which has none."""

    entry: ir.Module
    kernels: tuple[ir.Module, ...]
    kernel_names: tuple[str, ...]

    @property
    def modules(self) -> list[ir.Module]:
        """Every module, the entry's first: linked together they are the model's code."""
        return [self.entry, *self.kernels]


def emit_model(program: LoopProgram, lanes: int) -> ModelIR:
    """``program`` as LLVM modules (``ModelIR``), vector intrinsics of ``lanes`` fp32 lanes."""
    entry_module = ir.Module(name=program.graph.name)
    kernels, names, functions = [], [], {}
    shared: dict[Hashable, ir.Module] = {}
    for k, low in enumerate(program.lowered):  # identical kernels (same op, attributes, shapes) share one
        if k in program.skipped:                 # function; one that never runs has none
            names.append("")
            continue
        key = canonical_text(low.kernel)
        if key not in functions:
            name = "te_" + hashlib.sha256(key.encode()).hexdigest()[:24]
            kernels.append(_kernel_module(low.kernel, lanes, name, shared))
            functions[key] = ir.Function(entry_module, kernel_type(low.kernel), name)
        names.append(functions[key].name)
    i8, i64 = I8, I64
    entry = ir.Function(entry_module, ir.FunctionType(ir.VoidType(), [PTR] * 4 + [i64, i64, PTR]), "model")
    entry.attributes.add("nounwind")
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    ins, outs, weights, work, tid, nthreads, barrier = entry.args
    context = b.alloca(ir.ArrayType(i64, 2), name="context")  # this thread's (``sharing``)
    context.type = PTR  # llvmlite's alloca keeps a typed pointer even with opaque pointers on
    b.store(b.ptrtoint(barrier, i64), context)
    b.store(ir.Constant(i64, 0), b.gep(context, [ir.Constant(i64, 1)], inbounds=True, source_etype=i64))
    team = [tid, nthreads, context]

    def pointer(place: Place) -> ir.Value:
        if place.kind in ("input", "output"):
            table = ins if place.kind == "input" else outs
            slot = b.gep(table, [ir.Constant(i64, place.at)], inbounds=True, source_etype=PTR)
            return b.load(slot, typ=PTR)
        base = weights if place.kind == "weights" else work
        return b.gep(base, [ir.Constant(i64, place.at)], inbounds=True, source_etype=i8)

    for k, (name, low) in enumerate(zip(names, program.lowered)):
        if k not in program.skipped:
            b.call(entry_module.globals[name], [pointer(p) for p in program.plan.param_places(low)] + team)
            if bounds_checked(low.kernel):
                _report_fault(b, fault_flag(entry_module), k)
    b.ret_void()
    return ModelIR(entry_module, (*kernels, *shared.values()), tuple(names))


def _kernel_module(kernel: Kernel, lanes: int, name: str, shared: dict[Hashable, ir.Module]) -> ir.Module:
    """A module defining ``kernel`` as the function ``name``; the micro-kernels and packing routines
    it calls are declared (defined in ``shared``'s modules), its other helpers private to it, the fault
    flag the entry module's. A kernel that calls a routine is a tiled GEMM: its module is built
    without loop unrolling (``pipeline.NO_UNROLL``), which halves its build time (measured on
    ResNet-50's 34 such modules: 6.6 CPU-s of O3 and code generation, 2.9 without) where its time is
    in the routines."""
    module = ir.Module(name=name)
    emit_kernel(module, kernel, lanes, name, shared)
    routines = {m.name for m in shared.values()}
    for value in module.globals.values():
        if isinstance(value, ir.Function) and not value.is_declaration and value.name != name:
            value.linkage = "internal"
        elif isinstance(value, ir.Function) and value.name in routines:
            module.add_named_metadata(NO_UNROLL)
    flag = module.globals.get(FAULT)
    if isinstance(flag, ir.GlobalVariable):
        flag.initializer = None  # a declaration: defined by the entry module
    return module


def _report_fault(b: ir.IRBuilder, flag: ir.GlobalVariable, k: int) -> None:
    """After node ``k``'s kernel (all of it done: every thread sees the same flag): on a
    fault, record ``k + 2`` and return (the first fault stops the run)."""
    fault = b.load(flag, typ=I64)
    with b.if_then(b.icmp_signed("!=", fault, ir.Constant(I64, 0)), likely=False):
        b.store(ir.Constant(I64, k + 2), flag)
        b.ret_void()


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
