"""Proofs of the llvm target's conversions of the ml_dtypes float formats (``targets/llvm/formats.py``)
for every input: the emitted LLVM IR itself is evaluated symbolically (bit-vectors; a float held as its
bits) and compared with z3's IEEE conversions. ``encode`` rounds every float32 to the nearest value of
the format, ties to even (infinity on overflow, NaN to NaN); ``decode`` gives every bit pattern's value
exactly. For the IEEE-like formats (bfloat16, float8_e5m2); the others have no z3 sort (no infinity,
or no NaN) and stay property-tested. ``round_to_odd_float`` (double -> float before a second rounding
to a small format) is proved to round once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import llvmlite.ir as ir
import numpy as np
import z3

from tensoregg.targets.llvm.formats import SmallFloat, decode, encode, format_of, round_to_odd_float
from tensoregg.testing.proofs import Proof
from tensoregg.testing.proofs.symbolic import Obligation

FLOAT32 = z3.Float32()
RNE = z3.RNE()
IEEE_FORMATS = ("bfloat16", "float8_e5m2")

_ARITH: dict[str, Callable[[z3.BitVecRef, z3.BitVecRef], z3.BitVecRef]] = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "shl": lambda a, b: a << b, "lshr": z3.LShR, "ashr": lambda a, b: a >> b,
    "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b}
_ICMP = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "ugt": z3.UGT, "uge": z3.UGE, "ult": z3.ULT,
         "ule": z3.ULE, "sgt": lambda a, b: a > b, "sge": lambda a, b: a >= b, "slt": lambda a, b: a < b,
         "sle": lambda a, b: a <= b}


_FCMP = {"one": lambda a, b: z3.And(z3.Not(z3.fpIsNaN(a)), z3.Not(z3.fpIsNaN(b)), z3.fpNEQ(a, b)),
         "ogt": z3.fpGT, "olt": z3.fpLT, "oeq": z3.fpEQ}


def _sort_of(t: ir.Type) -> z3.FPSortRef:
    return z3.Float64() if isinstance(t, ir.DoubleType) else FLOAT32


def _width(t: ir.Type) -> int:
    return 64 if isinstance(t, ir.DoubleType) else 32 if isinstance(t, ir.FloatType) else t.width


def _fp(bits: z3.BitVecRef, t: ir.Type) -> z3.FPRef:
    return z3.fpBVToFP(bits, _sort_of(t))


def _ctlz(x: z3.BitVecRef) -> z3.BitVecRef:
    n = x.size()
    out = z3.BitVecVal(n, n)
    for k in range(n):  # the highest set bit wins
        out = z3.If(z3.Extract(k, k, x) == 1, z3.BitVecVal(n - 1 - k, n), out)
    return out


def evaluate(fn: ir.Function, args: list[z3.ExprRef]) -> z3.ExprRef:
    """The value ``fn`` (one basic block of integer, select, cast, float compare, fsub and fabs
    instructions) returns for ``args``: integers as bit-vectors, i1 as Bool, floats as their bits
    (a NaN result's bits are any NaN's: z3 leaves them unspecified, so proofs only ask it be NaN)."""
    env: dict[int, z3.ExprRef] = {id(a): v for a, v in zip(fn.args, args)}

    def get(v: ir.Value) -> z3.ExprRef:
        if isinstance(v, ir.Constant):
            if isinstance(v.type, (ir.FloatType, ir.DoubleType)):
                return z3.fpToIEEEBV(z3.FPVal(v.constant, _sort_of(v.type)))
            if v.type.width == 1:
                return z3.BoolVal(bool(v.constant))
            return z3.BitVecVal(v.constant, v.type.width)
        return env[id(v)]

    for ins in fn.blocks[0].instructions:
        if ins.opname == "ret":
            return get(ins.operands[0])
        if ins.opname == "call":
            x = get(ins.args[0])
            name = ins.callee.name
            env[id(ins)] = (z3.fpToIEEEBV(z3.fpAbs(_fp(x, ins.type))) if name.startswith("llvm.fabs")
                            else _ctlz(x) if name.startswith("llvm.ctlz") else _unknown(ins))
        else:
            env[id(ins)] = _step(ins, [get(o) for o in ins.operands])
    raise ValueError(f"{fn.name} does not return")


def _unknown(ins: ir.Instruction) -> z3.ExprRef:
    raise NotImplementedError(f"instruction {ins.opname} ({ins})")


def _step(ins: ir.Instruction, xs: list[z3.ExprRef]) -> z3.ExprRef:
    """One instruction's value from its operands'."""
    op = ins.opname
    if op in _ARITH:
        if ins.type == ir.IntType(1):
            return {"and": z3.And, "or": z3.Or, "xor": z3.Xor}[op](*xs)
        return _ARITH[op](*xs)
    if op == "icmp":
        return _ICMP[ins.op](*xs)
    if op == "fcmp":
        return _FCMP[ins.op](*(_fp(x, ins.operands[0].type) for x in xs))
    if op == "select":
        return z3.If(*xs)
    if op == "zext":
        width = ins.type.width
        x = xs[0]
        return (z3.If(x, z3.BitVecVal(1, width), z3.BitVecVal(0, width)) if z3.is_bool(x)
                else z3.ZeroExt(width - x.size(), x))
    if op == "trunc":
        return z3.Extract(ins.type.width - 1, 0, xs[0])
    if op == "bitcast":
        assert _width(ins.type) == xs[0].size()
        return xs[0]
    if op == "fsub":
        a, b = (_fp(x, ins.type) for x in xs)
        return z3.fpToIEEEBV(z3.fpSub(RNE, a, b))
    if op in ("fptrunc", "fpext"):
        return z3.fpToIEEEBV(z3.fpFPToFP(RNE, _fp(xs[0], ins.operands[0].type), _sort_of(ins.type)))
    return _unknown(ins)


def _sort(fmt: SmallFloat) -> z3.FPSortRef:
    return z3.FPSort(fmt.exponent, fmt.mantissa + 1)


def conversions(dtype: str) -> Iterator[Obligation]:
    """``encode`` and ``decode`` of ``dtype`` against z3's IEEE conversions, for every input."""
    import ml_dtypes

    fmt = format_of(np.dtype(getattr(ml_dtypes, dtype)))
    assert isinstance(fmt, SmallFloat) and fmt.kind == "ieee"
    module = ir.Module()
    bits = z3.BitVec("x", 32)
    x = z3.fpBVToFP(bits, FLOAT32)
    out = evaluate(encode(module, dtype, fmt), [bits])
    value = z3.fpBVToFP(z3.Extract(fmt.bits - 1, 0, out), _sort(fmt))
    nearest = z3.fpFPToFP(RNE, x, _sort(fmt))
    yield (f"{dtype} encode: every float32 rounded to nearest even",
           z3.If(z3.fpIsNaN(x), z3.fpIsNaN(value), value == nearest))
    stored = z3.BitVec("b", fmt.storage.width)
    held = z3.fpBVToFP(z3.Extract(fmt.bits - 1, 0, stored), _sort(fmt))
    exact = z3.fpBVToFP(evaluate(decode(module, dtype, fmt), [stored]), FLOAT32)
    spare = (z3.Extract(fmt.storage.width - 1, fmt.bits, stored) == 0 if fmt.storage.width > fmt.bits
             else z3.BoolVal(True))  # a 6- or 4-bit format's unused high bits
    widened = z3.fpFPToFP(RNE, held, FLOAT32)
    yield (f"{dtype} decode: every bit pattern's value, exactly",
           z3.Implies(spare, z3.If(z3.fpIsNaN(held), z3.fpIsNaN(exact), exact == widened)))


Narrow = Callable[[ir.IRBuilder, ir.Value], ir.Value]

TARGETS = ((5, 11), (8, 8), (5, 3), (4, 4))
"""(exponent, significand) bits of float16, bfloat16 and the float8s' IEEE shapes."""


def round_to_odd(narrow: Narrow = round_to_odd_float, targets: tuple[tuple[int, int], ...] = TARGETS
                 ) -> Iterator[Obligation]:
    """``narrow`` (``round_to_odd_float``: double to float) then round to nearest even to a format of
    at most 22 significant bits = the double rounded once, for every double."""
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(ir.FloatType(), [ir.DoubleType()]), "narrow")
    builder = ir.IRBuilder(fn.append_basic_block())
    builder.ret(narrow(builder, fn.args[0]))
    bits = z3.BitVec("x", 64)
    x = z3.fpBVToFP(bits, z3.Float64())
    odd = z3.fpBVToFP(evaluate(fn, [bits]), FLOAT32)
    for e, m in targets:
        sort = z3.FPSort(e, m)
        twice, once = z3.fpFPToFP(RNE, odd, sort), z3.fpFPToFP(RNE, x, sort)
        yield (f"round to odd, then to ({e}, {m}) = one rounding",
               z3.If(z3.fpIsNaN(x), z3.fpIsNaN(twice), twice == once))


def proofs() -> list[Proof]:
    out = [Proof(f"llvm-{name}-conversions", "every input", f"formats-{name}", partial(conversions, name))
           for name in IEEE_FORMATS]
    out.append(Proof("llvm-round-to-odd", "every double, each narrower format", "round-to-odd", round_to_odd))
    return out
