"""The GPUs the ``cuda`` target compiles for: each one's facts (the CUDA Programming Guide's per-SM
limits of its compute capability, the datasheet's rates), and the same facts read from a device
through the driver API when one is present."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tensoregg.ir.target import Target


@dataclass(frozen=True)
class Gpu:
    """One GPU's facts (per SM limits as the compute capability sets them)."""

    name: str
    arch: str
    """The compute capability as NVRTC names it (``sm_90``)."""
    sms: int
    clock_hz: float
    """The boost clock of the SMs."""
    warp_size: int = 32
    registers_per_sm: int = 65536
    registers_per_thread: int = 255
    threads_per_sm: int = 2048
    threads_per_block: int = 1024
    blocks_per_sm: int = 32
    shared_per_sm: int = 228 << 10
    shared_per_block: int = 48 << 10
    """Static shared memory of one block (more is dynamic, opted into per kernel)."""
    shared_per_block_optin: int = 227 << 10
    l2_bytes: int = 50 << 20
    dram_bandwidth: float = 3.35e12
    """Bytes per second of device memory (HBM)."""
    peak_flops: dict[str, float] = field(default_factory=dict)
    """Dense FLOP/s by arithmetic: ``fp32`` (CUDA cores), ``tf32``, ``fp16``, ``bf16`` (tensor cores,
    fp32 accumulation)."""
    launch_s: float = 4e-6
    """Fixed cost of one kernel launch on a stream (host enqueue and the device's start)."""
    tf32: bool = False
    """Whether float32 contractions may run on the tensor cores in tf32 (inputs rounded to 10
    mantissa bits: other numerics than float32's, so off unless asked for, as in PyTorch and
    onnxruntime; ``TENSOREGG_CUDA_TF32=1``)."""


H100 = Gpu("H100 SXM5", "sm_90", sms=132, clock_hz=1.83e9, shared_per_sm=228 << 10,
           shared_per_block_optin=227 << 10, l2_bytes=50 << 20, dram_bandwidth=3.35e12,
           peak_flops={"fp32": 66.9e12, "tf32": 494.7e12, "fp16": 989.4e12, "bf16": 989.4e12})
"""NVIDIA H100 SXM5 80 GB (compute capability 9.0)."""

A100 = Gpu("A100 SXM4", "sm_80", sms=108, clock_hz=1.41e9, shared_per_sm=164 << 10,
           shared_per_block_optin=163 << 10, l2_bytes=40 << 20, dram_bandwidth=2.04e12,
           peak_flops={"fp32": 19.5e12, "tf32": 156e12, "fp16": 312e12, "bf16": 312e12})
"""NVIDIA A100 SXM4 80 GB (compute capability 8.0; 64 K registers, 2048 threads per SM as on 9.0)."""

GPUS = {"sm_90": H100, "sm_80": A100}
"""The GPU assumed for each architecture when no device says otherwise."""


def description(gpu: Gpu) -> Target:
    """The target description the graph cost model reads: CUDA-core peak, device memory bandwidth,
    launch cost, the SMs as cores, shared memory and L2 as the caches; ``+tf32`` among the features
    where float32 contractions may run in tf32 (compiled modules differ: so do their cache keys)."""
    return Target("cuda", peak_flops=gpu.peak_flops["fp32"], mem_bandwidth=gpu.dram_bandwidth,
                  kernel_overhead_s=gpu.launch_s, cpu=gpu.arch, features="+tf32" if gpu.tf32 else "",
                  vector_bits=32 * gpu.warp_size,
                  cores=gpu.sms, caches=(("L1", gpu.shared_per_sm), ("L2", gpu.l2_bytes)))


def scaled(gpu: Gpu, *, sms: int, clock_hz: float, l2_bytes: int, shared_per_block_optin: int,
           name: str) -> Gpu:
    """``gpu``'s architecture with a device's own counts (a PCIe H100 has 114 SMs, not 132): peak
    rates scale with SMs x clock."""
    factor = sms * clock_hz / (gpu.sms * gpu.clock_hz)
    return replace(gpu, name=name, sms=sms, clock_hz=clock_hz, l2_bytes=l2_bytes,
                   shared_per_block_optin=shared_per_block_optin,
                   peak_flops={k: v * factor for k, v in gpu.peak_flops.items()})
