"""Linear algebra: fold BatchNormalization into Conv/Gemm weights, MatMul+Add -> Gemm, and move
scalar multiplications through linear ops."""

from __future__ import annotations

from tensoregg.rules.registry import Family

linalg = Family("linalg", __doc__ or "")
