"""The host machine as a Target: CPU name and features from LLVM, caches from sysfs, and the fp32
FMA peak, memory bandwidth and each GEMM micro-kernel's share of the peak measured once (about a
second) and cached on disk.

The cache file (``$XDG_CACHE_HOME/tensoregg/host-<key>.json``, key = CPU name, features and CPU count)
holds plain JSON (``cachefiles``: no symlinks, written atomically); a corrupted or foreign file, or
one whose figures no CPU core has (``PLAUSIBLE``), is measured again, never trusted.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import llvmlite.ir as ir
import numpy as np

from tensoregg.runtime.threads import available_cpus
from tensoregg.targets import RULE_FAMILIES as DEFAULT_FAMILIES
from tensoregg.targets import Target
from tensoregg.targets.llvm.cachefiles import cache_dir, read_json, write_json
from tensoregg.targets.llvm.irtypes import F32, I32, I64
from tensoregg.targets.llvm.jit import JitModule, fastest, host_cpu
from tensoregg.targets.llvm.ukernels import measure_efficiency, microkernels_for

CACHE_VERSION = 3
PLAUSIBLE = {"core_flops": (1e7, 1e13), "bandwidth": (1e7, 1e13)}
"""The open ranges a cached figure must lie in (FLOP/s of one core, bytes/s of a copy)."""

RULE_FAMILIES = (*DEFAULT_FAMILIES[:DEFAULT_FAMILIES.index("fusion")], "winograd",
                 *DEFAULT_FAMILIES[DEFAULT_FAMILIES.index("fusion"):])
"""The default families plus ``winograd`` (its batched MatMul is what this target's GEMM schedules
tile), after linalg and parallel (folded and merged Convs get a Winograd form too) and before fusion
(which then fuses an activation into the Conv, the Winograd form staying the alternative). The
extraction's roofline picks it where it pays: measured on one thread, 3x3 Convs with 256 or more
channels take 0.59-0.77 of the direct time (256x256 at 14x14: 1.59 -> 1.03 ms), 128 channels at 28x28
break even, and the smaller ones it leaves direct."""


def vector_bits(features: str) -> int:
    """The widest float vector register the features offer."""
    on = {f[1:] for f in features.split(",") if f.startswith("+")}
    return 512 if "avx512f" in on else 256 if "avx" in on else 128


def vector_registers(bits: int) -> int:
    """Architectural float vector registers of an x86 CPU whose widest is ``bits`` (32 zmm, 16 ymm)."""
    return 32 if bits == 512 else 16


def cache_sizes() -> dict[str, int]:
    """Data/unified cache sizes per level (``L1``, ``L2``, ``L3``) from sysfs, where it exists."""
    sizes: dict[str, int] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        sizes[f"L{level}"] = int(size.rstrip("KMG")) * scale
    return sizes


def _peak_kernel(lanes: int) -> JitModule:
    """``float peak(i64 n)``: n steps of 12 independent FMA chains on <lanes x float>."""
    f32, i64 = F32, I64
    vec = ir.VectorType(f32, lanes)
    module = ir.Module("peak")
    fn = ir.Function(module, ir.FunctionType(f32, [i64]), "peak")
    fma = ir.Function(module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.v{lanes}f32")
    entry, loop, done = (fn.append_basic_block(x) for x in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    accs = [b.phi(vec) for _ in range(12)]
    mul, add = ir.Constant(vec, [1.0000001] * lanes), ir.Constant(vec, [1e-7] * lanes)
    nexts = [b.call(fma, [acc, mul, add]) for acc in accs]
    for k, (acc, nxt) in enumerate(zip(accs, nexts)):
        acc.add_incoming(ir.Constant(vec, [float(k)] * lanes), entry)
        acc.add_incoming(nxt, loop)
    step = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(step, loop)
    b.cbranch(b.icmp_signed("<", step, fn.args[0]), loop, done)
    b.position_at_end(done)
    total = nexts[0]
    for v in nexts[1:]:
        total = b.fadd(total, v)
    b.ret(b.extract_element(total, ir.Constant(I32, 0)))
    return JitModule(module)


def measure_peak_flops(lanes: int) -> float:
    """fp32 FLOP/s of one core running independent vector FMA chains (best of 5)."""
    jit = _peak_kernel(lanes)
    peak = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64)(jit.address("peak"))
    steps = 2_000_000
    return steps * 12 * lanes * 2 / fastest(lambda: peak(steps))


def measure_bandwidth(nbytes: int = 64 << 20) -> float:
    """Bytes per second read plus written by a large copy on one thread (best of 5)."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    return 2 * nbytes / fastest(lambda: np.copyto(dst, src))


def _cache_file(key: str) -> Path:
    return cache_dir() / f"host-{key}.json"


def _number_in(value: object, low: float, high: float) -> bool:
    """A finite int or float (not a bool) in the open range (low, high)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low < value < high)


def _load(path: Path, key: str) -> dict[str, Any] | None:
    data = read_json(path)
    ok = (isinstance(data, dict) and data.get("version") == CACHE_VERSION and data.get("key") == key
          and all(_number_in(data.get(f), *PLAUSIBLE[f]) for f in PLAUSIBLE)
          and isinstance(data.get("ukernels"), dict)
          and all(_number_in(v, 0, 1) or v == 1 for v in data["ukernels"].values()))
    return data if ok else None


@functools.cache
def host_target() -> Target:
    """This machine as the ``llvm`` Target (peak and bandwidth measured on first use, then cached)."""
    cpu, features = host_cpu()
    cores = len(available_cpus())
    bits = vector_bits(features)
    key = hashlib.sha256(f"{cpu}|{features}|{cores}".encode()).hexdigest()[:16]
    path = _cache_file(key)
    data = _load(path, key)
    tiles = microkernels_for(bits, vector_registers(bits))
    if data is None or set(data["ukernels"]) != {u.name for u in tiles}:
        peak = measure_peak_flops(bits // 32)
        rates = measure_efficiency(tiles, bits // 32, peak)
        data = {"version": CACHE_VERSION, "key": key, "cpu": cpu, "core_flops": peak,
                "bandwidth": measure_bandwidth(), "ukernels": {u.name: u.efficiency for u in rates}}
        write_json(path, data)
    return llvm_target(cpu, features, cores, core_flops=data["core_flops"], bandwidth=data["bandwidth"],
                       caches=tuple(sorted(cache_sizes().items())), efficiency=data["ukernels"])


def llvm_target(cpu: str, features: str, cores: int, *, core_flops: float, bandwidth: float,
                caches: tuple[tuple[str, int], ...], efficiency: Mapping[str, float]) -> Target:
    """The ``llvm`` Target of a machine with these facts: the vector width and registers its features
    give, the micro-kernels they fit (each with its measured share of the peak, ``efficiency`` by
    name, 0 where unknown) and this target's rule families."""
    bits = vector_bits(features)
    registers = vector_registers(bits)
    tiles = tuple(dataclasses.replace(u, efficiency=float(efficiency.get(u.name, 0.0)))
                  for u in microkernels_for(bits, registers))
    return Target("llvm", peak_flops=core_flops * cores, mem_bandwidth=bandwidth, kernel_overhead_s=2e-7,
                  cpu=cpu, features=features, vector_bits=bits, cores=cores, caches=caches,
                  vector_registers=registers, microkernels=tiles, rule_families=RULE_FAMILIES)
