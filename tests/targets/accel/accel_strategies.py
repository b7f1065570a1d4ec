"""Hypothesis strategies for the accelerator's tests."""

from __future__ import annotations

from hypothesis import strategies as st

from tensoregg.targets.accel.isa import ALU_OPS, LAYOUTS, LOADABLE, MEMORIES, STORABLE, Instruction


@st.composite
def instructions(draw: st.DrawFn, small: bool = False) -> Instruction:
    """Well-formed instructions: every field within its bounds, drawn as one 128-bit word (cheap to
    generate). ``small``: each field's value is reduced modulo a small cap drawn per instruction,
    pad values only on input loads, and ``uop_bgn <= uop_end``, so that programs of them often run."""
    op = draw(st.sampled_from(sorted(LAYOUTS)))
    word = draw(st.integers(0, (1 << 128) - 1))
    cap = draw(st.sampled_from([3, 9, 33, 0])) if small else 0
    fields = {}
    for f in LAYOUTS[op][1:]:
        value = (word >> f.lsb) & ((1 << f.width) - 1)
        if f.name == "memory":
            kinds = LOADABLE if op == "load" else STORABLE
            value = MEMORIES[kinds[value % len(kinds)]]
        elif f.name == "alu":
            value %= len(ALU_OPS)
        elif cap:
            value = value % cap - (cap // 2 if f.signed else 0)
        elif f.signed and value >> (f.width - 1):
            value -= 1 << f.width
        if value:
            fields[f.name] = value
    if small and fields.get("memory") != MEMORIES["inp"]:
        fields.pop("pad_value", None)
    if small and fields.get("uop_bgn", 0) > fields.get("uop_end", 0):
        fields["uop_bgn"], fields["uop_end"] = fields.get("uop_end", 0), fields["uop_bgn"]
    return Instruction(op, {name: value for name, value in fields.items() if value})
