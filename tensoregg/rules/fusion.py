"""Fusion: epilogues (bias, residual add, activation) folded into the producing Conv/Gemm/MatMul as
one fused-kernel op that lowering turns into one loop nest."""

from __future__ import annotations

from tensoregg.rules.registry import Family

fusion = Family("fusion", __doc__ or "")
