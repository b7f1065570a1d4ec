"""The accelerator's ISA: encoding, text and binary round trips, and what the assembler rejects."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.errors import AcceleratorError
from tensoregg.targets.accel.isa import (
    INSN_BYTES,
    LAYOUTS,
    UOP_FIELDS,
    Instruction,
    assemble,
    decode,
    disassemble,
    encode,
    format_instruction,
    parse_instruction,
)

sys.path.insert(0, str(Path(__file__).parent))
from accel_strategies import instructions


@given(instructions())
def test_binary_and_text_round_trips(insn: Instruction) -> None:
    raw = encode(insn)
    assert len(raw) == INSN_BYTES
    assert decode(raw) == insn
    assert parse_instruction(format_instruction(insn)) == insn
    assert assemble(disassemble(raw)) == raw


@settings(max_examples=100)
@given(st.binary(min_size=INSN_BYTES, max_size=INSN_BYTES))
def test_any_word_decodes_to_itself_or_is_rejected(raw: bytes) -> None:
    try:
        insn = decode(raw)
    except AcceleratorError:
        return
    assert encode(insn) == raw


def test_layouts_fit_128_bits_without_overlap() -> None:
    for op, layout in LAYOUTS.items():
        used = 0
        for f in layout:
            mask = ((1 << f.width) - 1) << f.lsb
            assert not used & mask, (op, f.name)
            used |= mask
        assert used < 1 << (8 * INSN_BYTES), op


def test_assembly_text() -> None:
    text = """
    # a comment line
    load memory=inp sram=2 dram=64 y_size=4 x_size=4 x_stride=16 y_pad0=1 x_pad1=1 pad_value=-128 pop_next
    alu alu=clip use_imm imm=0x7f80 uop_end=1 iter_out=8   # clip to [-128, 127]
    finish
    """
    binary = assemble(text)
    assert len(binary) == 3 * INSN_BYTES
    assert disassemble(binary).splitlines() == [
        "load memory=inp sram=2 dram=64 pad_value=-128 y_size=4 x_size=4 x_stride=16 y_pad0=1 x_pad1=1 "
        "pop_next",
        "alu uop_end=1 iter_out=8 alu=clip use_imm imm=32640",
        "finish",
    ]


@pytest.mark.parametrize(("text", "message"), [
    ("jump 3", "unknown opcode 'jump'"),
    ("load memory=inp sram=70000", r"sram=70000 outside \[0, 65535\]"),
    ("load memory=out", "memory code 4 is not one of uop, wgt, inp, acc, scale"),
    ("store memory=wgt", "memory code 1 is not one of out, acc"),
    ("gemm imm=3", "unknown or repeated field 'imm'"),
    ("gemm reset reset", "unknown or repeated field 'reset'"),
    ("alu alu=div", "bad value 'div' of field 'alu'"),
    ("load memory=inp sram", "field 'sram' needs a value"),
])
def test_assembler_rejects(text: str, message: str) -> None:
    with pytest.raises(AcceleratorError, match=message):
        assemble(text)


def test_decoder_rejects() -> None:
    with pytest.raises(AcceleratorError, match="unknown opcode 7"):
        decode(bytes([7]) + bytes(15))
    with pytest.raises(AcceleratorError, match="reserved bits"):
        decode((3 | 1 << 100).to_bytes(16, "little"))  # finish has no field at bit 100
    with pytest.raises(AcceleratorError, match="not a whole number"):
        disassemble(bytes(17))


def test_the_documented_encoding_is_the_encoding() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "accelerator.md").read_text()
    sections = re.split(r"^### ", doc, flags=re.M)
    for op, layout in LAYOUTS.items():
        section = next(s for s in sections if re.match(rf"`[^\n]*\b{op}\b", s))
        rows = re.findall(r"^\| `(\w+)` \| (\d+)\u2013(\d+) \|", section, flags=re.M)
        assert rows == [(f.name, str(f.lsb), str(f.lsb + f.width - 1)) for f in layout], op
    uop = re.findall(r"`(\w+)` bits (\d+)\u2013(\d+)", next(s for s in sections if s.startswith("Micro-ops")))
    assert uop == [(f.name, str(f.lsb), str(f.lsb + f.width - 1)) for f in UOP_FIELDS]
