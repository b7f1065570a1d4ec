"""The LLVM types the code generators share, and declaring a function on first use."""

from __future__ import annotations

import os

os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

from collections.abc import Sequence

import llvmlite.ir as ir

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()
PTR = ir.PointerType()
VOID = ir.VoidType()


def declare(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    """The function ``name`` of ``module``, declared on first use."""
    found = module.globals.get(name)
    return found if found is not None else ir.Function(module, ir.FunctionType(ret, list(args)), name)


def splat(b: ir.IRBuilder, value: ir.Value, ty: ir.VectorType) -> ir.Value:
    """``value`` in every lane of a vector of type ``ty``."""
    one = b.insert_element(ir.Constant(ty, ir.Undefined), value, ir.Constant(I32, 0))
    return b.shuffle_vector(one, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(I32, ty.count),
                                                                             [0] * ty.count))
