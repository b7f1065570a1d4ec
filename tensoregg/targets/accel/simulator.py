"""The accelerator's simulator (numpy): executes an instruction stream bit-exactly on its scratchpads
and main memory, and times it (``docs/accelerator.md``).

The stream is split among three in-order modules: ``load`` (loads of inputs and weights),
``compute`` (GEMM, ALU, finish, and loads of uops, accumulators and scales) and ``store``. They
synchronise only through four dependency-token FIFOs; an instruction starts when its module is free
and the tokens it pops have arrived (a token arrives when the instruction pushing it ends). The
simulator runs whichever module's next instruction can start first, so the results are those of the
order the tokens enforce. It rejects, with ``AcceleratorError`` and before any effect, an
instruction whose scratchpad or main-memory range is out of bounds, one that reads main memory
nothing initialised, a token protocol that deadlocks or leaves tokens behind, and a race: two
modules touching one entry of a scratchpad they share (inputs and weights: load and compute;
accumulators: compute and store), one of them writing, with no chain of tokens ordering the two
(vector clocks carried by the tokens tell).

Imports numpy, the standard library, ``tensoregg.errors`` and the accelerator's own ISA only.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from tensoregg.errors import AcceleratorError
from tensoregg.targets.accel.isa import FLAGS, UOP_FIELDS, Instruction, format_instruction
from tensoregg.targets.accel.machines import Accel

MODULES = ("load", "compute", "store")
UNITS = ("load", "compute-load", "gemm", "alu", "store")
"""What the busy cycles are counted per: the load module's DMA, the compute module's own loads
(uops, accumulators, scales), the GEMM core, the vector ALU, and the store module's DMA."""
_TOKENS = {  # module -> flag -> (FIFO, pop or push)
    "load": {"pop_next": ("g2l", "pop"), "push_next": ("l2g", "push")},
    "compute": {"pop_prev": ("l2g", "pop"), "push_prev": ("g2l", "push"),
                "pop_next": ("s2g", "pop"), "push_next": ("g2s", "push")},
    "store": {"pop_prev": ("g2s", "pop"), "push_prev": ("s2g", "push")},
}
DEFAULT_WORK_LIMIT = 1 << 26
"""Tiles moved plus micro-ops executed, past which a run stops (a guard against runaway loops)."""


@dataclass
class Stats:
    """What a run counted: cycles (the last module's end), busy cycles per unit, cycles each module
    waited on tokens (and ``bus``: cycles loads and stores waited for the DMA bus), DMA bytes,
    GEMM-core MACs and instructions by opcode."""

    macs_per_cycle: int
    cycles: int = 0
    busy: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(UNITS, 0)))
    stalls: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys((*MODULES, "bus"), 0)))
    dma_read: int = 0
    dma_written: int = 0
    macs: int = 0
    instructions: Counter[str] = field(default_factory=Counter)

    @property
    def utilization(self) -> float:
        """The GEMM core's share of its peak over the run: MACs / (MACs per cycle x cycles). Every
        micro-op step counts its whole tile, so MACs on padding (channels rounded up to blocks)
        count as work: divide a layer's own MACs by the peak for the useful share."""
        return self.macs / (self.macs_per_cycle * self.cycles) if self.cycles else 0.0


def module_of(insn: Instruction) -> str:
    """The module whose queue runs ``insn``."""
    if insn.op == "load" and insn.memory in ("inp", "wgt"):
        return "load"
    return "store" if insn.op == "store" else "compute"


class Simulator:
    """One accelerator's scratchpads over a main memory (``dram``, bytes, with a mask of the bytes
    initialised): ``run`` executes instruction streams on them."""

    def __init__(self, config: Accel, dram: np.ndarray, initialized: np.ndarray, *,
                 work_limit: int = DEFAULT_WORK_LIMIT) -> None:
        c = config
        self.config, self.dram, self.initialized, self.work_left = c, dram, initialized, work_limit
        self.sram: dict[str, np.ndarray] = {
            "uop": np.zeros(c.uop_entries, np.uint32),
            "wgt": np.zeros((c.wgt_entries, c.block_out, c.block_in), np.int8),
            "inp": np.zeros((c.inp_entries, c.batch, c.block_in), np.int8),
            "acc": np.zeros((c.acc_entries, c.batch, c.block_out), np.int32),
            "scale": np.zeros((c.scale_entries, c.block_out), np.float32),
        }
        shared = {"inp": c.inp_entries, "wgt": c.wgt_entries, "acc": c.acc_entries}
        self._reads = {memory: np.zeros((len(MODULES), n), np.int64) for memory, n in shared.items()}
        self._writes = {memory: np.zeros((len(MODULES), n), np.int64) for memory, n in shared.items()}
        self._module, self._clock = 0, np.zeros(len(MODULES), np.int64)
        self._bus_free = 0

    def run(self, program: list[Instruction]) -> Stats:
        """Execute ``program`` (which ends with its only ``finish``); its Stats."""
        _check_protocol(program)
        stats = Stats(self.config.macs_per_cycle)
        queues = {m: deque(k for k, insn in enumerate(program) if module_of(insn) == m) for m in MODULES}
        fifos: dict[str, deque[tuple[int, np.ndarray]]] = {q: deque() for q in ("l2g", "g2l", "g2s", "s2g")}
        free = dict.fromkeys(MODULES, 0)
        clocks = {m: np.zeros(len(MODULES), np.int64) for m in MODULES}  # what each module has seen
        while any(queues.values()):
            ready = []
            for m in MODULES:
                if queues[m]:
                    head = program[queues[m][0]]
                    pops = [q for f, (q, kind) in _TOKENS[m].items() if kind == "pop" and head[f]]
                    if all(fifos[q] for q in pops):
                        ready.append((max([free[m], *(fifos[q][0][0] for q in pops)]), m, pops))
            if not ready:
                raise AcceleratorError("token deadlock: " + "; ".join(
                    f"{m} waits at instruction {queues[m][0]} ({format_instruction(program[queues[m][0]])})"
                    for m in MODULES if queues[m]))
            start, m, pops = min(ready)
            insn = program[queues[m].popleft()]
            for q in pops:
                np.maximum(clocks[m], fifos[q].popleft()[1], out=clocks[m])
            clocks[m][MODULES.index(m)] += 1
            self._module, self._clock = MODULES.index(m), clocks[m]
            end = start + self._execute(insn, stats, start)
            stats.stalls[m] += start - free[m]
            stats.instructions[insn.op] += 1
            free[m] = end
            for f, (q, kind) in _TOKENS[m].items():
                if kind == "push" and insn[f]:
                    fifos[q].append((end, clocks[m].copy()))
        left = {q: len(t) for q, t in fifos.items() if t}
        if left:
            raise AcceleratorError(f"token protocol: tokens pushed and never popped at the end: {left}")
        stats.cycles = max(free.values())
        return stats

    def _touch(self, insn: Instruction, memory: str, index: np.ndarray | slice, write: bool) -> None:
        """Record that the running instruction reads or writes entries ``index`` of a scratchpad two
        modules share; AcceleratorError (a race) where another module's last access to one of them
        is not ordered before this one by tokens (vector clocks carried by the tokens)."""
        if memory not in self._writes:
            return
        me, seen = self._module, self._clock
        for other in range(len(MODULES)):
            if other != me and ((self._writes[memory][other][index] > seen[other]).any() or
                                (write and (self._reads[memory][other][index] > seen[other]).any())):
                raise AcceleratorError(f"{format_instruction(insn)}: a race: the {MODULES[me]} module "
                                       f"{'writes' if write else 'reads'} {memory} entries that the "
                                       f"{MODULES[other]} module uses, with no token ordering the two")
        (self._writes if write else self._reads)[memory][me][index] = seen[me]

    def _bus(self, transfer: int, start: int, stats: Stats) -> int:
        """Reserve the one DMA bus for ``transfer`` cycles after the request latency of a load or
        store starting at ``start``; the cycles it waits for the bus (counted as ``bus`` stalls)."""
        if not transfer:
            return 0
        begin = max(start + self.config.dma_latency, self._bus_free)
        self._bus_free = begin + transfer
        wait = begin - start - self.config.dma_latency
        stats.stalls["bus"] += wait
        return wait

    def _spend(self, work: int) -> None:
        self.work_left -= work
        if self.work_left < 0:
            raise AcceleratorError("the program exceeds the simulator's work limit (tiles moved + micro-ops)")

    def _execute(self, insn: Instruction, stats: Stats, start: int) -> int:
        """Perform ``insn``, starting at cycle ``start``; the cycles it takes."""
        if insn.op in ("load", "store"):
            cycles = self._load(insn, stats) if insn.op == "load" else self._store(insn, stats)
            stats.busy["store" if insn.op == "store" else "load" if module_of(insn) == "load"
                       else "compute-load"] += cycles
            return cycles + self._bus(cycles - self.config.dma_latency, start, stats)
        elif insn.op == "gemm":
            n = self._gemm(insn, stats)
            cycles = n + self.config.gemm_depth
            stats.busy["gemm"] += cycles
        elif insn.op == "alu":
            cycles = self._alu(insn) * self.config.alu_ii + self.config.alu_depth
            stats.busy["alu"] += cycles
        else:
            cycles = 1
        return cycles

    def _dram_tiles(self, insn: Instruction, tile: int) -> np.ndarray:
        """Byte addresses (y_size, x_size, tile) that a load or store moves; checked in range."""
        ys, xs, stride, base = insn["y_size"], insn["x_size"], insn["x_stride"], insn["dram"]
        if ys and xs and (base + (ys - 1) * stride + xs) * tile > self.dram.size:
            raise AcceleratorError(f"{format_instruction(insn)}: main memory [{base * tile}, "
                                   f"{(base + (ys - 1) * stride + xs) * tile}) is outside its "
                                   f"{self.dram.size} bytes")
        tiles = base + np.arange(ys)[:, None] * stride + np.arange(xs)[None, :]
        return tiles[:, :, None] * tile + np.arange(tile)

    def _sram_range(self, insn: Instruction, memory: str, count: int) -> slice:
        entries = self.config.entries(memory)
        if insn["sram"] + count > entries:
            raise AcceleratorError(f"{format_instruction(insn)}: {count} entries from {insn['sram']} "
                                   f"overflow the {memory} scratchpad of {entries}")
        return slice(insn["sram"], insn["sram"] + count)

    def _load(self, insn: Instruction, stats: Stats) -> int:
        memory, c = insn.memory, self.config
        ys, xs = insn["y_size"], insn["x_size"]
        rows, cols = ys + insn["y_pad0"] + insn["y_pad1"], xs + insn["x_pad0"] + insn["x_pad1"]
        if insn["pad_value"] and memory != "inp":
            raise AcceleratorError(f"{format_instruction(insn)}: only input loads take a pad_value")
        target = self._sram_range(insn, memory, rows * cols)
        self._spend(rows * cols)
        self._touch(insn, memory, target, True)
        tile = c.tile_bytes(memory)
        addresses = self._dram_tiles(insn, tile)
        if not self.initialized[addresses].all():
            first = int(addresses[~self.initialized[addresses]][0])
            raise AcceleratorError(f"{format_instruction(insn)}: reads main memory at byte {first}, "
                                   f"which nothing initialised")
        buffer = self.sram[memory]
        data = self.dram[addresses].reshape(ys, xs, tile).view(buffer.dtype.newbyteorder("<"))
        grid = np.full((rows, cols, *buffer.shape[1:]), insn["pad_value"], buffer.dtype)
        grid[insn["y_pad0"]:insn["y_pad0"] + ys, insn["x_pad0"]:insn["x_pad0"] + xs] = \
            data.reshape(ys, xs, *buffer.shape[1:])
        buffer[target] = grid.reshape(-1, *buffer.shape[1:])
        stats.dma_read += addresses.size
        return c.dma_latency + math.ceil(rows * cols * tile / c.bus_bytes)

    def _store(self, insn: Instruction, stats: Stats) -> int:
        c = self.config
        if any(insn[f] for f in ("y_pad0", "y_pad1", "x_pad0", "x_pad1", "pad_value")):
            raise AcceleratorError(f"{format_instruction(insn)}: a store takes no padding")
        ys, xs = insn["y_size"], insn["x_size"]
        source = self._sram_range(insn, "acc", ys * xs)
        self._spend(ys * xs)
        self._touch(insn, "acc", source, False)
        tile = c.tile_bytes(insn.memory)
        addresses = self._dram_tiles(insn, tile)
        acc = self.sram["acc"][source]
        data = acc.astype(np.int8) if insn.memory == "out" else acc.astype("<i4")  # out: the low 8 bits
        self.dram[addresses] = data.view(np.uint8).reshape(addresses.shape)
        self.initialized[addresses] = True
        stats.dma_written += addresses.size
        return c.dma_latency + math.ceil(ys * xs * tile / c.bus_bytes)

    def _indexes(self, insn: Instruction, names: tuple[str, ...]) -> list[np.ndarray]:
        """The scratchpad indexes of each uop operand in ``names`` at every step of ``insn``'s
        loops (outer, inner, uop), flattened in execution order."""
        bgn, end = insn["uop_bgn"], insn["uop_end"]
        if not bgn <= end <= self.config.uop_entries:
            raise AcceleratorError(f"{format_instruction(insn)}: uops [{bgn}, {end}) outside the uop "
                                   f"scratchpad of {self.config.uop_entries}")
        steps = insn["iter_out"] * insn["iter_in"] * (end - bgn)
        self._spend(steps)
        uops = self.sram["uop"][bgn:end].astype(np.int64)
        o = np.arange(insn["iter_out"])[:, None, None]
        i = np.arange(insn["iter_in"])[None, :, None]
        out = []
        for name in names:
            f = next(f for f in UOP_FIELDS if f.name == name)
            base = (uops >> f.lsb) & ((1 << f.width) - 1)
            key = "dst" if name == "dst" else "wgt" if name == "wgt" else "src"
            out.append((base[None, None, :] + o * insn[f"{key}_out"] + i * insn[f"{key}_in"]).reshape(-1))
        return out

    def _check(self, insn: Instruction, index: np.ndarray, memory: str) -> None:
        if index.size and index.max() >= self.config.entries(memory):
            raise AcceleratorError(f"{format_instruction(insn)}: {memory} index {int(index.max())} "
                                   f"outside the scratchpad of {self.config.entries(memory)}")

    def _gemm(self, insn: Instruction, stats: Stats) -> int:
        dst, src, wgt = self._indexes(insn, ("dst", "src", "wgt"))
        for index, memory in ((dst, "acc"), (src, "inp"), (wgt, "wgt")):
            self._check(insn, index, memory)
        self._touch(insn, "acc", dst, True)
        if not insn["reset"]:
            self._touch(insn, "inp", src, False)
            self._touch(insn, "wgt", wgt, False)
        acc = self.sram["acc"]
        if insn["reset"]:
            acc[dst] = 0
            return dst.size
        for k in range(0, dst.size, 1 << 14):
            part = slice(k, k + (1 << 14))
            x = self.sram["inp"][src[part]].astype(np.int32)
            w = self.sram["wgt"][wgt[part]].astype(np.int32)
            np.add.at(acc, dst[part], np.matmul(x, w.transpose(0, 2, 1)))  # int32 wraps, as the hardware
        stats.macs += dst.size * self.config.macs_per_cycle
        return dst.size

    def _alu(self, insn: Instruction) -> int:
        dst, src = self._indexes(insn, ("dst", "src"))
        op = insn.alu
        self._check(insn, dst, "acc")
        if insn["reset"]:
            self._touch(insn, "acc", dst, True)
            self.sram["acc"][dst] = 0
            return dst.size
        if op == "req":
            self._check(insn, src, "scale")
            if not np.isfinite(self.sram["scale"][src]).all():
                raise AcceleratorError(f"{format_instruction(insn)}: a requantization scale is not finite")
        elif not insn["use_imm"]:
            self._check(insn, src, "acc")
        _check_immediate(insn)
        self._touch(insn, "acc", dst, True)
        acc = self.sram["acc"]
        independent = np.unique(dst).size == dst.size and (op == "req" or insn["use_imm"] or not (
            np.isin(src, dst) & (src != dst)).any())
        if independent:
            acc[dst] = self._alu_op(insn, acc[dst], src)
        else:  # a step reads or writes what another step writes: one step at a time, in order
            for d, s in zip(dst, src):
                acc[d] = self._alu_op(insn, acc[d:d + 1], s[None])[0]
        return dst.size

    def _alu_op(self, insn: Instruction, x: np.ndarray, src: np.ndarray) -> np.ndarray:
        op, imm = insn.alu, insn["imm"]
        if op == "req":  # y = saturate(round_half_even(f32(acc) * scale) + z), as onnxruntime
            y = np.rint(x.astype(np.float32) * self.sram["scale"][src][:, None, :])
            return np.clip(y, -128 - imm, 127 - imm).astype(np.int32) + imm
        if op == "clip":
            return np.clip(x, *_clip_bounds(imm))
        if op == "shr":
            wide = x.astype(np.int64)
            y = (wide + (1 << (imm - 1))) >> imm if imm > 0 else wide << -imm
            return y.astype(np.int32)
        operand = np.int64(imm) if insn["use_imm"] else self.sram["acc"][src].astype(np.int64)
        fn = {"min": np.minimum, "max": np.maximum, "add": np.add, "mul": np.multiply}[op]
        return fn(x.astype(np.int64), operand).astype(np.int32)  # wraps to 32 bits


def _clip_bounds(imm: int) -> tuple[int, int]:
    """A clip's bounds: its immediate's low byte (the lower) and high byte, each signed."""
    lo, hi = imm & 0xFF, (imm >> 8) & 0xFF
    return lo - 256 * (lo > 127), hi - 256 * (hi > 127)


def _check_immediate(insn: Instruction) -> None:
    op, imm = insn.alu, insn["imm"]
    if op in ("shr", "clip", "req") and not insn["use_imm"]:
        raise AcceleratorError(f"{format_instruction(insn)}: alu {op} takes an immediate (use_imm)")
    if op == "shr" and not -31 <= imm <= 31:
        raise AcceleratorError(f"{format_instruction(insn)}: shift {imm} outside [-31, 31]")
    if op == "clip" and _clip_bounds(imm)[0] > _clip_bounds(imm)[1]:
        raise AcceleratorError(f"{format_instruction(insn)}: clip bounds {_clip_bounds(imm)} are reversed")
    if op == "req" and not -128 <= imm <= 127:
        raise AcceleratorError(f"{format_instruction(insn)}: zero point {imm} outside int8")


def _check_protocol(program: list[Instruction]) -> None:
    """The checks that need no execution: one ``finish``, last; each flag one its module has."""
    finishes = [k for k, insn in enumerate(program) if insn.op == "finish"]
    if finishes != [len(program) - 1]:
        raise AcceleratorError(f"a program ends with its only finish; finish at {finishes} of "
                               f"{len(program)} instructions")
    for k, insn in enumerate(program):
        m = module_of(insn)
        bad = [f for f in FLAGS if insn[f] and f not in _TOKENS[m]]
        if bad:
            raise AcceleratorError(f"instruction {k} ({format_instruction(insn)}) runs on the {m} module, "
                                   f"which has no {', '.join(bad)} token queue")
