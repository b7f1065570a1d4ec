"""Running a model's native entry point: its workspace, its thread team, its input and output tables.

The entry point (``void model(ptr inputs, ptr outputs, ptr weights, ptr workspace, i64 tid,
i64 nthreads, ptr barrier)``, see ``tensoregg.targets.llvm.model``) comes from the JIT for a compiled
model, or from an artifact's shared library for a loaded one; both run through ``NativeExecutor``,
which needs ctypes and numpy only.
"""

from __future__ import annotations

import ctypes
import platform
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tensoregg.errors import ArtifactError, IndexOutOfRange
from tensoregg.runtime.artifact import Artifact, require, require_fields
from tensoregg.runtime.memory import aligned_empty, huge_zeros
from tensoregg.runtime.signature import TensorSpec, collect_outputs
from tensoregg.runtime.team import Team, TeamFunctions
from tensoregg.runtime.threads import available_cpus, thread_count

FAULT = "tensoregg_fault"
"""The code's fault flag (``tensoregg.targets.llvm.codegen.FAULT``): 0, or a node's position + 2
after an index out of range."""
ENTRY = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
"""The entry point's C signature."""


class NativeExecutor:
    """Runs the entry point at address ``entry`` on ``weights`` (64-byte aligned, kept alive here) with
    a workspace of ``work_size`` bytes. Graph output ``name`` is written by the code into the output
    table's slot ``slots[name]``; outputs the code does not write are graph inputs or ``constants``.
    With ``parallel`` false every run stays on the calling thread (a model too small to gain from
    the team). ``owner`` is what keeps the code alive (a JIT engine, a loaded library). ``fault`` is
    the address of the code's i64 fault flag (0: it bounds no index), ``nodes`` each node as
    ``"Op label"`` in the entry point's order, to name the node whose index was out of range."""

    def __init__(self, entry: int, team: TeamFunctions, weights: np.ndarray, work_size: int, *,
                 inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], slots: Mapping[str, int],
                 constants: Mapping[str, np.ndarray], parallel: bool, owner: object, fault: int = 0,
                 nodes: Sequence[str] = ()) -> None:
        self.entry_address, self.team_functions, self.owner = entry, team, owner
        self._entry = ENTRY(entry)
        self.weights, self.work_size = weights, work_size
        self.inputs, self.outputs, self.slots = list(inputs), list(outputs), dict(slots)
        self.constants, self.parallel = dict(constants), parallel
        self._barrier = np.zeros(2, np.int64)
        self._work = huge_zeros(work_size)
        self._addresses = (int(weights.ctypes.data), int(self._work.ctypes.data),
                           int(self._barrier.ctypes.data))
        """Weights, workspace and barrier: fixed for the model's life, looked up once (a ``.ctypes``
        lookup costs about 1 us, a few % of a 0.2 ms run)."""
        self._fault = ctypes.c_int64.from_address(fault) if fault else None
        self.nodes = list(nodes)
        self._work_lock = threading.Lock()
        self._team = Team(len(available_cpus()), team)

    @property
    def num_threads(self) -> int:
        """Threads each run uses (default: every CPU this process may use; ``thread_count`` checks a
        new value). Set during a run in another thread, it waits for that run to end."""
        return self._team.size

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        self._team.resize(thread_count(n))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feeds`` (already checked against the input specs)."""
        inputs = [np.ascontiguousarray(feeds[t.name]) for t in self.inputs]
        specs = {t.name: t for t in self.outputs}
        produced = {n: np.empty(specs[n].shape, specs[n].dtype) for n in self.slots}
        weights, work_address, barrier = self._addresses
        own = self._work_lock.acquire(blocking=False)  # the model's own workspace (pages stay mapped),
        work = self._work if own else aligned_empty(self.work_size)  # unless another thread's run has it
        in_table = (ctypes.c_void_p * max(len(inputs), 1))(*[a.ctypes.data for a in inputs])
        out_table = (ctypes.c_void_p * max(len(self.outputs), 1))()
        for name, k in self.slots.items():
            out_table[k] = produced[name].ctypes.data
        args = (in_table, out_table, weights, work_address if own else work.ctypes.data)
        try:
            if not self.parallel or self._team.size == 1:
                self._entry(*args, 0, 1, barrier)
            else:
                tables = [ctypes.addressof(in_table), ctypes.addressof(out_table)]
                self._team.run(self.entry_address, [*tables, *args[2:]], barrier)
        finally:
            if own:
                self._work_lock.release()
        self.check_fault()
        return collect_outputs([t.name for t in self.outputs], produced, {**self.constants, **feeds})


    def check_fault(self, node: int | None = None) -> None:
        """Raise IndexOutOfRange if the code found an index out of range (clearing the flag), naming
        node ``node`` (default: the node the entry point recorded)."""
        if self._fault is None or not self._fault.value:
            return
        code, self._fault.value = self._fault.value, 0
        at = code - 2 if node is None else node
        op, _, label = self.nodes[at].partition(" ") if 0 <= at < len(self.nodes) else ("a", "", "node")
        raise IndexOutOfRange(f"{op} node {label!r}: an index is out of range for the axis it indexes")


# ---- loading an artifact of the llvm target -----------------------------------------------------

CPUINFO_FLAGS = {"sse4.1": "sse4_1", "sse4.2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma",
                 "f16c": "f16c", "bmi2": "bmi2", "avx512f": "avx512f", "avx512bw": "avx512bw",
                 "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512cd": "avx512cd",
                 "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16"}
"""LLVM's x86 feature names -> /proc/cpuinfo's, for the features whose absence would stop code with
an illegal instruction."""

CODE_FIELDS = {"library": str, "weights": str, "machine": str, "cpu": str, "features": str,
               "weights_nbytes": int, "workspace_nbytes": int, "parallel": bool, "slots": dict,
               "constants": dict, "memory_plan": dict, "kernels": list}
"""The ``code`` object of an ``llvm`` artifact's manifest (written by ``tensoregg.targets.llvm.export``):
the shared library's part, the packed weights' part (a 1-D uint8 ``.npy``) and size, the machine
(``platform.machine()``), LLVM CPU and features the code is for, the workspace size, whether runs use
the thread team, each output the code writes -> its output slot, each output that is a constant ->
its ``.npy`` part; and for readers, the memory plan (every value's place) and the kernel order."""


def missing_cpu_features(features: str) -> list[str]:
    """The features of ``features`` (LLVM's ``+avx2,+fma,...``) this CPU lacks, as far as
    /proc/cpuinfo tells (none where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith("flags")), []))
    wanted = [f[1:] for f in features.split(",") if f.startswith("+") and f[1:] in CPUINFO_FLAGS]
    return [f for f in wanted if CPUINFO_FLAGS[f] not in flags] if flags else []


def load_native(artifact: Artifact) -> NativeExecutor:
    """The program of an ``llvm`` artifact (already checked by ``read_artifact``): its library loaded
    by ctypes after its weights, constants and facts are checked against the manifest, and the
    library's own tables checked against the manifest before anything runs."""
    code = artifact.manifest["code"]
    require_fields(code, CODE_FIELDS, ".code")
    if code["machine"] != platform.machine():
        raise ArtifactError(f"manifest .code.machine: the code is for {code['machine']}, this is "
                            f"{platform.machine()}")
    missing = missing_cpu_features(code["features"])
    if missing:
        raise ArtifactError(f"manifest .code.features: the code is for a {code['cpu']} with "
                            f"{', '.join(missing)}, which this CPU lacks")
    inputs, outputs = artifact.inputs, artifact.outputs
    out_names = [t.name for t in outputs]
    slots: dict[str, int] = {}
    for name, k in code["slots"].items():
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(outputs) or out_names[k] != name:
            raise ArtifactError(f"manifest .code.slots[{name!r}]: not the position of output {name!r}")
        slots[name] = k
    constants = {}
    for name, part in code["constants"].items():
        spec = next((t for t in outputs if t.name == name), None)
        value = artifact.array(require(part, str, f".code.constants[{name!r}]"))
        if spec is None or value.dtype != spec.dtype or value.shape != spec.shape:
            raise ArtifactError(f"part {part!r}: not the value of output {name!r}")
        constants[name] = value
    unknown = [n for n in out_names if n not in slots and n not in constants
               and n not in {t.name for t in inputs}]
    if unknown:
        raise ArtifactError(f"manifest .code: outputs {unknown} come from nowhere")
    packed = artifact.array(code["weights"])
    if packed.dtype != np.uint8 or packed.shape != (code["weights_nbytes"],):
        raise ArtifactError(f"part {code['weights']!r}: not {code['weights_nbytes']} bytes of weights")
    weights = huge_zeros(packed.size)
    weights[:] = packed
    library = _open_library(artifact, code["library"])
    _check_library(library, code, inputs, outputs)
    entry = ctypes.cast(library.model, ctypes.c_void_p).value
    team = TeamFunctions(library.tensoregg_team_worker, library.tensoregg_team_run, library)
    try:  # the fault flag, in code that bounds an index
        fault = ctypes.addressof(ctypes.c_int64.in_dll(library, FAULT))
    except ValueError:
        fault = 0
    nodes = [str(k.get("node", "")) if isinstance(k, dict) else "" for k in code["kernels"]]
    return NativeExecutor(int(entry or 0), team, weights, code["workspace_nbytes"], inputs=inputs,
                          outputs=outputs, slots=slots, constants=constants, parallel=code["parallel"],
                          owner=library, fault=fault, nodes=nodes)


def _open_library(artifact: Artifact, part: str) -> ctypes.CDLL:
    """The (hash-checked) library part loaded by the dynamic loader, from a private temporary file."""
    if part not in artifact.parts:
        raise ArtifactError(f"manifest .code.library: part {part!r} is missing")
    with tempfile.TemporaryDirectory(prefix="tensoregg-") as tmp:
        path = Path(tmp) / "libtensoregg_model.so"
        path.write_bytes(artifact.parts[part])
        try:
            library = ctypes.CDLL(str(path))
            library.tensoregg_team_worker.argtypes = [ctypes.c_void_p, ctypes.c_int64]
            library.tensoregg_team_run.argtypes = [ctypes.c_void_p]
        except (OSError, AttributeError) as exc:
            raise ArtifactError(f"part {part!r}: not a loadable model library ({exc})") from exc
    for name in ("tensoregg_team_worker", "tensoregg_team_run"):
        getattr(library, name).restype = None
    return library


def _check_library(library: ctypes.CDLL, code: Mapping[str, Any], inputs: Sequence[TensorSpec],
                   outputs: Sequence[TensorSpec]) -> None:
    """ArtifactError unless the library's own tables (its C API) agree with the manifest."""
    size = ctypes.c_size_t
    facts: list[tuple[str, Any, Any]] = [("tegg_weights_nbytes", size, code["weights_nbytes"]),
                                         ("tegg_workspace_nbytes", size, code["workspace_nbytes"]),
                                         ("tegg_num_inputs", ctypes.c_int, len(inputs)),
                                         ("tegg_num_outputs", ctypes.c_int, len(outputs))]
    try:
        for name, restype, want in facts:
            fn = getattr(library, name)
            fn.restype = restype
            if fn() != want:
                raise ArtifactError(f"manifest .code: the library's {name}() is {fn()}, the manifest "
                                    f"says {want}")
        for kind, specs in (("input", inputs), ("output", outputs)):
            nbytes, name = getattr(library, f"tegg_{kind}_nbytes"), getattr(library, f"tegg_{kind}_name")
            nbytes.restype, name.restype = size, ctypes.c_char_p
            for k, t in enumerate(specs):
                if nbytes(k) != t.nbytes or name(k) != t.name.encode():
                    raise ArtifactError(f"manifest .{kind}s[{k}]: {t.name!r} of {t.nbytes} bytes is not the "
                                        f"library's {name(k)!r} of {nbytes(k)} bytes")
    except AttributeError as exc:
        raise ArtifactError(f"part {code['library']!r}: not a model library ({exc})") from exc
