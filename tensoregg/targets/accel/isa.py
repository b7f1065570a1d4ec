"""The accelerator's instruction set: 128-bit instructions (VTA's layout, ``docs/accelerator.md``),
32-bit micro-ops, and the assembler and disassembler between their text and binary forms.

An instruction's text is its opcode then its fields, ``name=value`` for the fields that are not
zero and bare names for the one-bit flags that are set; ``memory`` and ``alu`` are named
(``memory=inp``, ``alu=add``)::

    load memory=inp sram=0 dram=64 y_size=4 x_size=4 x_stride=16 y_pad0=1 x_pad1=1 pad_value=-128 pop_next
    gemm uop_end=9 iter_out=4 dst_out=1 src_out=1 push_prev push_next

Imports the standard library and ``tensoregg.errors`` only: the simulator reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tensoregg.errors import AcceleratorError

INSN_BYTES = 16
OPCODES = {"load": 0, "store": 1, "gemm": 2, "finish": 3, "alu": 4}
MEMORIES = {"uop": 0, "wgt": 1, "inp": 2, "acc": 3, "out": 4, "scale": 5}
LOADABLE = ("uop", "wgt", "inp", "acc", "scale")
STORABLE = ("out", "acc")
ALU_OPS = {"min": 0, "max": 1, "add": 2, "shr": 3, "mul": 4, "clip": 5, "req": 6}
FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


@dataclass(frozen=True)
class Field:
    """A field of an instruction word: its name, lowest bit, width and whether it is signed."""

    name: str
    lsb: int
    width: int
    signed: bool = False

    @property
    def bounds(self) -> tuple[int, int]:
        """The smallest and largest value the field holds."""
        if self.signed:
            return -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        return 0, (1 << self.width) - 1


_HEAD = (Field("opcode", 0, 3), *(Field(f, 3 + k, 1) for k, f in enumerate(FLAGS)))
_DMA = (Field("memory", 7, 3), Field("sram", 10, 16), Field("dram", 26, 30), Field("pad_value", 56, 8, True),
        Field("y_size", 64, 16), Field("x_size", 80, 16), Field("x_stride", 96, 16),
        Field("y_pad0", 112, 4), Field("y_pad1", 116, 4), Field("x_pad0", 120, 4), Field("x_pad1", 124, 4))
_LOOP = (Field("reset", 7, 1), Field("uop_bgn", 8, 13), Field("uop_end", 21, 14),
         Field("iter_out", 35, 14), Field("iter_in", 49, 14), Field("dst_out", 64, 11),
         Field("dst_in", 75, 11), Field("src_out", 86, 11), Field("src_in", 97, 11))
LAYOUTS: dict[str, tuple[Field, ...]] = {
    "load": _HEAD + _DMA,
    "store": _HEAD + _DMA,
    "gemm": _HEAD + _LOOP + (Field("wgt_out", 108, 10), Field("wgt_in", 118, 10)),
    "finish": _HEAD,
    "alu": _HEAD + _LOOP + (Field("alu", 108, 3), Field("use_imm", 111, 1), Field("imm", 112, 16, True)),
}
"""Each opcode's fields, low bits first; the bits no field covers must be zero."""
UOP_FIELDS = (Field("dst", 0, 11), Field("src", 11, 11), Field("wgt", 22, 10))
"""A micro-op: accumulator, input (or ALU source) and weight indexes, before the loop offsets."""
_NAMED = {"memory": MEMORIES, "alu": ALU_OPS}


@dataclass(frozen=True)
class Instruction:
    """One instruction: its opcode and its fields by name (a field not given is zero; the decoder
    and the parser give only the fields that are not)."""

    op: str
    fields: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> int:
        return self.fields.get(name, 0)

    @property
    def memory(self) -> str:
        """The scratchpad a load or store moves (``inp``, ``wgt``...)."""
        return _name(MEMORIES, self["memory"])

    @property
    def alu(self) -> str:
        """The ALU operation (``add``, ``req``...)."""
        return _name(ALU_OPS, self["alu"])


def _name(table: dict[str, int], code: int) -> str:
    return next(k for k, v in table.items() if v == code)


def encode(insn: Instruction) -> bytes:
    """The 16 bytes (little-endian) of ``insn``; AcceleratorError for an unknown opcode or field,
    a value out of its field's range, or a memory type or ALU operation the opcode does not take."""
    if insn.op not in LAYOUTS:
        raise AcceleratorError(f"unknown opcode {insn.op!r}; known: {', '.join(OPCODES)}")
    layout = {f.name: f for f in LAYOUTS[insn.op]}
    unknown = set(insn.fields) - set(layout) - {"opcode"}
    if unknown:
        raise AcceleratorError(f"{insn.op}: no field {', '.join(sorted(unknown))}")
    word = OPCODES[insn.op]
    for name, value in insn.fields.items():
        if name == "opcode":
            continue
        f = layout[name]
        lo, hi = f.bounds
        if not lo <= value <= hi:
            raise AcceleratorError(f"{insn.op}: field {name}={value} outside [{lo}, {hi}]")
        word |= (value & ((1 << f.width) - 1)) << f.lsb
    _check_kinds(insn)
    return word.to_bytes(INSN_BYTES, "little")


def _check_kinds(insn: Instruction) -> None:
    code = insn["memory"] if insn.op in ("load", "store") else insn["alu"] if insn.op == "alu" else None
    if code is None:
        return
    allowed = {"load": LOADABLE, "store": STORABLE, "alu": tuple(ALU_OPS)}[insn.op]
    table = ALU_OPS if insn.op == "alu" else MEMORIES
    if code not in [table[k] for k in allowed]:
        kind = "alu" if insn.op == "alu" else "memory"
        raise AcceleratorError(f"{insn.op}: {kind} code {code} is not one of {', '.join(allowed)}")


def decode(raw: bytes) -> Instruction:
    """The instruction of 16 bytes; AcceleratorError for an unknown opcode, a set reserved bit or
    an unknown memory type or ALU operation."""
    if len(raw) != INSN_BYTES:
        raise AcceleratorError(f"an instruction is {INSN_BYTES} bytes, not {len(raw)}")
    word = int.from_bytes(raw, "little")
    code = word & 7
    op = next((k for k, v in OPCODES.items() if v == code), None)
    if op is None:
        raise AcceleratorError(f"unknown opcode {code} in instruction {raw.hex()}")
    fields, covered = {}, 0
    for f in LAYOUTS[op][1:]:
        mask = (1 << f.width) - 1
        value = (word >> f.lsb) & mask
        covered |= mask << f.lsb
        if f.signed and value >> (f.width - 1):
            value -= 1 << f.width
        if value:
            fields[f.name] = value
    if word & ~(covered | 7):
        raise AcceleratorError(f"{op}: reserved bits set in instruction {raw.hex()}")
    insn = Instruction(op, fields)
    _check_kinds(insn)
    return insn


def encode_uop(dst: int, src: int, wgt: int = 0) -> int:
    """A micro-op as its 32-bit word."""
    word = 0
    for f, value in zip(UOP_FIELDS, (dst, src, wgt)):
        if not 0 <= value < 1 << f.width:
            raise AcceleratorError(f"uop: {f.name}={value} outside [0, {(1 << f.width) - 1}]")
        word |= value << f.lsb
    return word


def format_instruction(insn: Instruction) -> str:
    """``insn`` as one line of assembly (its canonical text)."""
    words = [insn.op]
    for f in (*LAYOUTS[insn.op][1 + len(FLAGS):], *LAYOUTS[insn.op][1:1 + len(FLAGS)]):  # flags last
        value = insn[f.name]
        if f.name in _NAMED and (value or insn.op in ("load", "store", "alu")):
            words.append(f"{f.name}={_name(_NAMED[f.name], value)}")
        elif value and f.width == 1:
            words.append(f.name)
        elif value:
            words.append(f"{f.name}={value}")
    return " ".join(words)


def parse_instruction(line: str) -> Instruction:
    """One line of assembly as an instruction (the inverse of ``format_instruction``)."""
    op, *words = line.split()
    if op not in LAYOUTS:
        raise AcceleratorError(f"unknown opcode {op!r} in {line!r}; known: {', '.join(OPCODES)}")
    widths = {f.name: f.width for f in LAYOUTS[op]}
    fields: dict[str, int] = {}
    for word in words:
        name, eq, text = word.partition("=")
        if name in fields or name not in widths or name == "opcode":
            raise AcceleratorError(f"{op}: unknown or repeated field {name!r} in {line!r}")
        if not eq and widths[name] != 1:
            raise AcceleratorError(f"{op}: field {name!r} needs a value in {line!r}")
        try:
            fields[name] = _NAMED[name][text] if name in _NAMED else int(text, 0) if eq else 1
        except (KeyError, ValueError):
            raise AcceleratorError(f"{op}: bad value {text!r} of field {name!r} in {line!r}") from None
    return Instruction(op, {name: value for name, value in fields.items() if value})


def assemble(text: str) -> bytes:
    """Assembly text (one instruction a line; ``#`` starts a comment) as the binary stream."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return b"".join(encode(parse_instruction(line)) for line in lines if line)


def decode_stream(binary: bytes) -> list[Instruction]:
    """A binary instruction stream as instructions."""
    if len(binary) % INSN_BYTES:
        raise AcceleratorError(f"an instruction stream of {len(binary)} bytes is not a whole number "
                               f"of {INSN_BYTES}-byte instructions")
    return [decode(binary[k:k + INSN_BYTES]) for k in range(0, len(binary), INSN_BYTES)]


def disassemble(binary: bytes) -> str:
    """A binary instruction stream as assembly text, one canonical line per instruction."""
    return "".join(format_instruction(insn) + "\n" for insn in decode_stream(binary))
