"""Compute definitions: the expression language (``expr``) and, per op family, each op's definition.

Importing this package attaches every definition to its registry entry (``expr.COMPUTE``).
"""

from tensoregg.ir.compute.expr import (
                                       BOOL,
                                       INDEX,
                                       Buffer,
                                       Call,
                                       ComputeCtx,
                                       Const,
                                       Expr,
                                       Load,
                                       Reduce,
                                       Stage,
                                       Var,
                                       as_expr,
                                       broadcast_load,
                                       call,
                                       cast,
                                       compute_of,
                                       const,
                                       define,
                                       fresh,
                                       identity_of,
                                       reduce,
                                       select,
                                       substitute,
                                       walk,
)

__all__ = ["BOOL", "INDEX", "Buffer", "Call", "ComputeCtx", "Const", "Expr", "Load", "Reduce", "Stage", "Var",
           "as_expr", "broadcast_load", "call", "cast", "compute_of", "const", "define", "fresh",
           "identity_of", "reduce", "select", "substitute", "walk"]

# last: the family modules import the names above
from tensoregg.ir.compute import (  # noqa: F401
    activations,
    attention,
    casts,
    conv,
    einsum,
    elementwise,
    indexing,
    linalg,
    loss,
    misc,
    normalization,
    pool,
    reductions,
    sampling,
    shape,
    winograd,
)
