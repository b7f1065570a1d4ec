"""Math functions emitted inline as plain arithmetic, so that LLVM vectorizes the loops that call them
(a call of ``llvm.exp.f32`` becomes a scalar call of libm's ``expf`` in every lane: Softmax over a
128 x 128 row block ran at ~6 ns per element).

``expf``: Cephes' single-precision exponential. n = round(x / ln 2), r = x - n ln 2 in two parts
(Cody-Waite), exp(r) by a degree-6 polynomial on [-ln2/2, ln2/2], times 2^n built in the exponent
bits in two halves (so that results down to the smallest subnormal and up to overflow come out
right). Error within 2 ulp of the exact value over the float32 range (checked against float64 in
tests/targets/llvm/test_mathfns.py); NaN in, NaN out; +inf -> inf, -inf -> 0.
"""

from __future__ import annotations

import llvmlite.ir as ir

from tensoregg.targets.llvm.irtypes import F32, I32, declare

EXP_LIMITS = (-104.0, 89.0)
"""Inputs are clamped here first: below, exp underflows to 0; above, it overflows to inf."""
LOG2E = 1.44269504088896341
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4
EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
            5.0000001201e-1)
"""Coefficients of exp(r) - 1 - r over r^2, highest degree first."""


def _c(value: float) -> ir.Constant:
    return ir.Constant(F32, value)


def expf(b: ir.IRBuilder, module: ir.Module, x: ir.Value) -> ir.Value:
    """exp(x) for a float ``x``, inline (see the module docstring)."""
    fma = declare(module, "llvm.fma.f32", F32, [F32] * 3)
    low, high = EXP_LIMITS
    clamped = b.call(declare(module, "llvm.minnum.f32", F32, [F32, F32]),
                     [b.call(declare(module, "llvm.maxnum.f32", F32, [F32, F32]), [x, _c(low)]), _c(high)])
    n = b.call(declare(module, "llvm.roundeven.f32", F32, [F32]), [b.fmul(clamped, _c(LOG2E))])
    r = b.call(fma, [n, _c(-LN2_HI), clamped])
    r = b.call(fma, [n, _c(-LN2_LO), r])
    p = _c(EXP_POLY[0])
    for coefficient in EXP_POLY[1:]:
        p = b.call(fma, [p, r, _c(coefficient)])
    y = b.fadd(b.call(fma, [b.fmul(p, r), r, r]), _c(1.0))
    k = b.fptosi(n, I32)
    half = b.sdiv(k, ir.Constant(I32, 2))
    for part in (half, b.sub(k, half)):  # 2^k as two powers of two, each a normal float
        bits = b.shl(b.add(part, ir.Constant(I32, 127)), ir.Constant(I32, 23))
        y = b.fmul(y, b.bitcast(bits, F32))
    return b.select(b.fcmp_unordered("uno", x, x), x, y)
