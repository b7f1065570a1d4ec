"""Running a CUDA program: its launches (kernel, grid, and where each parameter lives in the memory
plan) on an NVIDIA GPU through the driver API (``cuda-bindings``), or its CUDA C compiled for this
CPU (``HostBackend``: a check of the generated C without a GPU). Both start from a
:class:`CudaCode`, which a compiled ``cuda`` module makes and a ``cuda`` artifact holds; neither
needs the compiler.

On the device, the whole memory plan is one allocation: the weights (copied once), the workspace,
then each input and output; a run copies the inputs in, launches every kernel on one stream, and
copies the outputs out.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from tensoregg.errors import ArtifactError, CompileError
from tensoregg.runtime.artifact import Artifact, require, require_fields
from tensoregg.runtime.device_arrays import DeviceArray, DeviceView, same_kind
from tensoregg.runtime.signature import TensorSpec, collect_outputs

C_TYPES = {"bool": "bool", "int8": "signed char", "uint8": "unsigned char", "int16": "short",
           "uint16": "unsigned short", "int32": "int", "uint32": "unsigned int", "int64": "long long",
           "uint64": "unsigned long long", "float32": "float", "float64": "double",
           "float16": "unsigned short", "bfloat16": "unsigned short"}
"""The C type of each element type the cuda target supports, in memory (16-bit floats as their bits)."""
ALIGN = 256
VECTOR_ALIGN = 16
"""The alignment the kernels assume of every buffer: their 16-byte accesses (``cp.async``, ``float4``)."""
EMULATE = "TENSOREGG_CUDA_EMULATE"
"""Set to 1: a ``cuda`` module runs without a GPU (compiled: its kernel programs in the ``interp``
emulation; loaded from an artifact: its CUDA C on this CPU)."""


def emulating() -> bool:
    return os.environ.get(EMULATE, "") not in ("", "0")


@dataclass(frozen=True)
class Param:
    """A kernel parameter: where its buffer lives (``input``/``output`` k, or an offset into the
    ``weights`` or ``work`` area), its element type, and whether the kernel writes it."""

    kind: str
    at: int
    dtype: str
    written: bool


@dataclass(frozen=True)
class LaunchSpec:
    """One kernel launch: the ``__global__`` function, its grid and block, its static shared memory,
    whether its threads wait for each other (barriers, warp MMAs), and its parameters in order."""

    name: str
    blocks: int
    threads: int
    shared_bytes: int
    barriers: bool
    params: tuple[Param, ...]


@dataclass
class CudaCode:
    """A CUDA program: its source, its cubin per architecture, its launches in order, the packed
    weights, the workspace size, the signature, and which outputs the kernels write (``written``:
    name -> output slot) or are constants."""

    source: str
    cubins: dict[str, bytes]
    launches: list[LaunchSpec]
    weights: np.ndarray
    workspace_nbytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    written: dict[str, int]
    constants: dict[str, np.ndarray]

    def run_with(self, backend: Backend, feeds: Mapping[str, np.ndarray | DeviceView]) -> list[Any]:
        """The outputs of a run on ``feeds``: numpy arrays, or where an input lies in device memory
        (``DeviceView``), arrays in device memory of its kind (graph inputs returned as given,
        constants as numpy arrays)."""
        views = [v for v in feeds.values() if isinstance(v, DeviceView)]
        inputs = [v if isinstance(v, DeviceView) else np.ascontiguousarray(v)
                  for v in (feeds[t.name] for t in self.inputs)]
        written = [t for t in self.outputs if t.name in self.written]
        if not views:
            produced = {t.name: np.empty(t.shape, t.dtype) for t in written}
            backend.run(self, inputs, [produced.get(t.name) for t in self.outputs])
            known = {**{t.name: cast("np.ndarray", feeds[t.name]) for t in self.inputs}, **self.constants}
            return collect_outputs([t.name for t in self.outputs], produced, known)
        on_device = {t.name: backend.allocate(t.shape, t.dtype) for t in written}
        backend.run(self, inputs, [on_device.get(t.name) for t in self.outputs])
        given = {**{t.name: getattr(feeds[t.name], "value", feeds[t.name]) for t in self.inputs},
                 **self.constants}
        return [same_kind(views[0].kind, on_device[t.name]) if t.name in on_device else given[t.name]
                for t in self.outputs]


class Backend:
    """Runs a program's launches on given input and output arrays (numpy arrays, or device memory:
    ``DeviceView`` inputs, ``DeviceArray`` outputs, read and written where they lie)."""

    def run(self, code: CudaCode, inputs: Sequence[np.ndarray | DeviceView],
            outputs: Sequence[np.ndarray | DeviceArray | None]) -> None:
        raise NotImplementedError

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> DeviceArray:
        """An output array in the backend's device memory."""
        raise NotImplementedError


def address(array: np.ndarray | DeviceView | DeviceArray) -> int:
    """Where ``array``'s first element lies."""
    return int(array.ctypes.data) if isinstance(array, np.ndarray) else array.pointer


class CudaExecutor:
    """A ``cuda`` program ready to run: on the device, or with ``TENSOREGG_CUDA_EMULATE=1`` (set when
    it is made) its CUDA C on this CPU."""

    def __init__(self, code: CudaCode) -> None:
        self.code = code
        self.backend: Backend = HostBackend(code) if emulating() else DriverBackend(code)

    takes_device_arrays = True
    """Inputs may lie in device memory (``tensoregg.runtime.device_arrays``)."""

    def run(self, feeds: Mapping[str, np.ndarray | DeviceView]) -> list[Any]:
        return self.code.run_with(self.backend, feeds)


# ---- the CPU ---------------------------------------------------------------------------------------

HOST_HEADER = Path(__file__).with_name("cuda_host.h")


class HostBackend(Backend):
    """The program's CUDA C compiled by the host C++ compiler and run block by block; kernels with
    barriers or warp MMAs run each block's threads as fibers taking turns at every barrier, and a
    warp's at every MMA (``cuda_host.h``)."""

    def __init__(self, code: CudaCode) -> None:
        compiler = shutil.which("g++") or shutil.which("c++")
        if compiler is None:
            raise CompileError("no C++ compiler (g++) to run the CUDA C on this CPU")
        wrappers = []
        for k, launch in enumerate(code.launches):
            args = ", ".join(f"({'' if p.written else 'const '}{C_TYPES[p.dtype]}*)a[{j}]"
                             for j, p in enumerate(launch.params))
            wrappers.append(f'extern "C" void te_launch_{k}(void** a) {{\n'
                            f"  te_launch({launch.blocks}, {launch.threads}, {str(launch.barriers).lower()}, "
                            f"[=] {{ {launch.name}({args}); }});\n}}")
        self._dir = tempfile.TemporaryDirectory(prefix="tensoregg-cuda-host-")
        src, lib = Path(self._dir.name, "model.cpp"), Path(self._dir.name, "model.so")
        src.write_text(HOST_HEADER.read_text() + code.source + "\n" + "\n".join(wrappers) + "\n")
        command = [compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off",
                   "-o", str(lib), str(src)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise CompileError(f"the host C++ compiler rejected the CUDA C:\n{done.stderr[-4000:]}")
        self.library = ctypes.CDLL(str(lib))
        self.work = np.empty(code.workspace_nbytes + ALIGN, np.uint8)

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> DeviceArray:
        """Host memory: the device of the emulation."""
        return DeviceArray.on_host(np.empty(shape, dtype))

    def run(self, code: CudaCode, inputs: Sequence[np.ndarray | DeviceView],
            outputs: Sequence[np.ndarray | DeviceArray | None]) -> None:
        self.work.fill(0xFF)  # what no kernel wrote reads as NaN
        bases = {"weights": int(code.weights.ctypes.data), "work": int(self.work.ctypes.data)}
        arrays: dict[str, Sequence[np.ndarray | DeviceView | DeviceArray | None]] = \
            {"input": inputs, "output": outputs}
        for k, launch in enumerate(code.launches):
            pointers = []
            for p in launch.params:
                if p.kind in arrays:
                    array = arrays[p.kind][p.at]
                    if array is None:
                        raise CompileError(f"{launch.name}: output {p.at} is not one the kernels write")
                    pointers.append(address(array))
                else:
                    pointers.append(bases[p.kind] + p.at)
            argv = (ctypes.c_void_p * max(len(pointers), 1))(*pointers)
            getattr(self.library, f"te_launch_{k}")(argv)


# ---- the GPU ---------------------------------------------------------------------------------------

def _driver() -> Any:
    from cuda.bindings import driver

    return driver


def check(result: Any, call: str, where: str = "") -> Any:
    """The values of a driver call's result tuple; CompileError naming the call (and ``where``: the
    kernel and its launch configuration) when it failed."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        _, name = _driver().cuGetErrorName(status)
        detail = name.decode() if isinstance(name, bytes) else str(status)
        raise CompileError(f"CUDA {call} failed: {detail}" + (f" ({where})" if where else ""))
    return values[0] if len(values) == 1 else tuple(values)


def device_missing() -> str | None:
    """Why no CUDA device can run here (no bindings, no driver, no device), or None."""
    try:
        driver = _driver()
        check(driver.cuInit(0), "cuInit")
        if check(driver.cuDeviceGetCount(), "cuDeviceGetCount") < 1:
            return "no CUDA device"
    except Exception as exc:  # ImportError, the driver library missing (a RuntimeError), a CUDA error
        return f"no CUDA device ({exc})"
    return None


def device_facts(ordinal: int = 0) -> dict[str, Any]:
    """The device's name, architecture (``sm_90``) and the counts the cost model reads."""
    driver = _driver()
    check(driver.cuInit(0), "cuInit")
    device = check(driver.cuDeviceGet(ordinal), "cuDeviceGet")
    a = driver.CUdevice_attribute

    def attribute(name: str) -> int:
        return int(check(driver.cuDeviceGetAttribute(getattr(a, name), device),
                         f"cuDeviceGetAttribute {name}"))

    major, minor = attribute("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR"), \
        attribute("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR")
    name = check(driver.cuDeviceGetName(256, device), "cuDeviceGetName")
    return {"name": bytes(name).split(b"\0")[0].decode(), "arch": f"sm_{major}{minor}",
            "sms": attribute("CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT"),
            "clock_hz": attribute("CU_DEVICE_ATTRIBUTE_CLOCK_RATE") * 1e3,
            "l2_bytes": attribute("CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE"),
            "shared_per_block_optin": attribute("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN")}


class DriverBackend(Backend):
    """The program on device 0 (its primary context): the cubin for the device's architecture loaded,
    one allocation for the memory plan, the weights copied in once, one stream."""

    def __init__(self, code: CudaCode) -> None:
        missing = device_missing()
        if missing:
            raise CompileError(f"{missing}; set {EMULATE}=1 to run the CUDA C on this CPU")
        driver = _driver()
        self.driver = driver
        device = check(driver.cuDeviceGet(0), "cuDeviceGet")
        context = check(driver.cuDevicePrimaryCtxRetain(device), "cuDevicePrimaryCtxRetain")
        check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        arch = device_facts()["arch"]
        if arch not in code.cubins:
            raise CompileError(f"the program has cubins for {sorted(code.cubins)}, the device is {arch}")
        self.module = check(driver.cuModuleLoadData(code.cubins[arch]), "cuModuleLoadData")
        self.functions = [check(driver.cuModuleGetFunction(self.module, launch.name.encode()),
                                "cuModuleGetFunction", launch.name) for launch in code.launches]
        sizes = [code.weights.nbytes, code.workspace_nbytes, *(t.nbytes for t in code.inputs),
                 *(t.nbytes for t in code.outputs)]
        offsets, total = [], 0
        for size in sizes:
            offsets.append(total)
            total += -(-max(size, 1) // ALIGN) * ALIGN
        self.base = int(check(driver.cuMemAlloc(total), "cuMemAlloc", f"{total} bytes"))
        n_in = len(code.inputs)
        self.bases = {"weights": self.base + offsets[0], "work": self.base + offsets[1]}
        self.inputs = [self.base + o for o in offsets[2:2 + n_in]]
        self.outputs = [self.base + o for o in offsets[2 + n_in:]]
        if code.weights.nbytes:
            check(driver.cuMemcpyHtoD(self.bases["weights"], code.weights, code.weights.nbytes),
                  "cuMemcpyHtoD weights")
        self.stream = check(driver.cuStreamCreate(0), "cuStreamCreate")

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> DeviceArray:
        """Device memory of its own (freed when the array is)."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        memory = _Allocation(self.driver, max(nbytes, 1))
        return DeviceArray(memory.pointer, tuple(shape), np.dtype(dtype), memory)

    def run(self, code: CudaCode, inputs: Sequence[np.ndarray | DeviceView],
            outputs: Sequence[np.ndarray | DeviceArray | None]) -> None:
        """numpy inputs copied into the plan's input areas, device ones read where they lie (after
        the context's pending work: the stream that made them) unless they are not 16-byte aligned
        (``VECTOR_ALIGN``: a view at an odd offset), then copied there on the device; numpy outputs
        copied out."""
        driver = self.driver
        ins, outs = list(self.inputs), list(self.outputs)
        if any(isinstance(a, (DeviceView, DeviceArray)) for a in [*inputs, *outputs]):
            check(driver.cuCtxSynchronize(), "cuCtxSynchronize")
        for k, array in enumerate(inputs):
            if isinstance(array, DeviceView) and array.pointer % VECTOR_ALIGN == 0:
                ins[k] = array.pointer
            elif isinstance(array, DeviceView):
                check(driver.cuMemcpyDtoDAsync(ins[k], array.pointer, code.inputs[k].nbytes, self.stream),
                      "cuMemcpyDtoDAsync", f"input {code.inputs[k].name}")
            else:
                check(driver.cuMemcpyHtoDAsync(ins[k], array, array.nbytes, self.stream), "cuMemcpyHtoDAsync")
        for k, out in enumerate(outputs):
            if isinstance(out, DeviceArray):
                outs[k] = out.pointer
        self.launch_all(code, ins, outs)
        for out, at in zip(outputs, outs):
            if isinstance(out, np.ndarray):
                check(driver.cuMemcpyDtoHAsync(out, at, out.nbytes, self.stream), "cuMemcpyDtoHAsync")
        check(driver.cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    def kernel_seconds(self, code: CudaCode, repeats: int) -> list[float]:
        """Seconds each of ``repeats`` runs of the kernels alone takes (CUDA events; the inputs are
        those of the last run)."""
        driver = self.driver
        start, end = (check(driver.cuEventCreate(0), "cuEventCreate") for _ in range(2))
        times = []
        for _ in range(repeats):
            check(driver.cuEventRecord(start, self.stream), "cuEventRecord")
            self.launch_all(code)
            check(driver.cuEventRecord(end, self.stream), "cuEventRecord")
            check(driver.cuEventSynchronize(end), "cuEventSynchronize")
            times.append(check(driver.cuEventElapsedTime(start, end), "cuEventElapsedTime") / 1e3)
        return times

    def launch_all(self, code: CudaCode, inputs: Sequence[int] | None = None,
                   outputs: Sequence[int] | None = None) -> None:
        """Every launch, the inputs and outputs at the plan's areas unless given elsewhere."""
        driver = self.driver
        at = {"input": inputs or self.inputs, "output": outputs or self.outputs}

        def place(p: Param) -> int:
            return at[p.kind][p.at] if p.kind in at else self.bases[p.kind] + p.at

        for function, launch in zip(self.functions, code.launches):
            values = [np.array([place(p)], np.uint64) for p in launch.params]  # alive until launched
            params = np.array([v.ctypes.data for v in values], np.uint64)
            where = f"kernel {launch.name}, grid {launch.blocks}, block {launch.threads}"
            check(driver.cuLaunchKernel(function, launch.blocks, 1, 1, launch.threads, 1, 1, 0, self.stream,
                                        params.ctypes.data, 0), "cuLaunchKernel", where)


class _Allocation:
    """``nbytes`` of device memory, freed with this object."""

    def __init__(self, driver: Any, nbytes: int) -> None:
        self.driver = driver
        self.pointer = int(check(driver.cuMemAlloc(nbytes), "cuMemAlloc", f"{nbytes} bytes"))

    def __del__(self) -> None:
        self.driver.cuMemFree(self.pointer)


# ---- artifacts -------------------------------------------------------------------------------------

CODE_FIELDS = {"source": str, "cubins": dict, "weights": str, "weights_nbytes": int,
               "workspace_nbytes": int, "launches": list, "written": dict, "constants": dict}
"""The ``code`` object of a ``cuda`` artifact's manifest (``tensoregg.targets.cuda.export``): the
CUDA C's part, each architecture's cubin part, the packed weights' part and size, the workspace
size, the launches (name, blocks, threads, shared bytes, barriers, params as [kind, at, dtype,
written]), each output the kernels write -> its output slot, each constant output -> its part."""
LAUNCH_FIELDS = {"name": str, "blocks": int, "threads": int, "shared_bytes": int, "barriers": bool,
                 "params": list}


def load_cuda(artifact: Artifact) -> CudaExecutor:
    """The program of a ``cuda`` artifact (checked by ``read_artifact``), its manifest checked."""
    code = artifact.manifest["code"]
    require_fields(code, CODE_FIELDS, ".code")
    outputs, inputs = artifact.outputs, artifact.inputs
    launches = []
    for k, entry in enumerate(code["launches"]):
        where = f".code.launches[{k}]"
        require_fields(require(entry, dict, where), LAUNCH_FIELDS, where)
        params = []
        for j, p in enumerate(entry["params"]):
            at = f"{where}.params[{j}]"
            if not (isinstance(p, list) and len(p) == 4 and p[0] in ("input", "output", "weights", "work")
                    and isinstance(p[1], int) and p[2] in C_TYPES and isinstance(p[3], bool)):
                raise ArtifactError(f"manifest {at}: not [kind, offset, dtype, written]")
            count = {"input": len(inputs), "output": len(outputs)}.get(p[0])
            limit = count if count is not None else (code["weights_nbytes"] if p[0] == "weights"
                                                       else code["workspace_nbytes"])
            if not 0 <= p[1] < max(limit, 1):
                raise ArtifactError(f"manifest {at}: {p[0]} {p[1]} is outside the program's memory")
            params.append(Param(p[0], p[1], p[2], p[3]))
        if not (entry["blocks"] > 0 and 0 < entry["threads"] <= 1024):
            raise ArtifactError(f"manifest {where}: grid {entry['blocks']} x {entry['threads']} threads")
        launches.append(LaunchSpec(entry["name"], entry["blocks"], entry["threads"], entry["shared_bytes"],
                                   entry["barriers"], tuple(params)))
    weights = np.array(artifact.array(code["weights"]))
    if weights.dtype != np.uint8 or weights.shape != (code["weights_nbytes"],):
        raise ArtifactError(f"part {code['weights']!r}: not {code['weights_nbytes']} bytes of weights")
    written = {require(n, str, ".code.written"): require(k, int, f".code.written[{n!r}]")
               for n, k in code["written"].items()}
    constants = {n: np.array(artifact.array(require(part, str, f".code.constants[{n!r}]")))
                 for n, part in code["constants"].items()}
    cubins = {arch: _part(artifact, require(part, str, f".code.cubins[{arch!r}]"))
              for arch, part in code["cubins"].items()}
    source = _part(artifact, code["source"]).decode()
    return CudaExecutor(CudaCode(source, cubins, launches, weights, code["workspace_nbytes"], inputs,
                                 outputs, written, constants))



def _part(artifact: Artifact, name: str) -> bytes:
    if name not in artifact.parts:
        raise ArtifactError(f"part {name!r}: missing")
    return bytes(artifact.parts[name])
