"""Inline ONNX functions before import: model-local functions, and the function bodies ONNX
defines for operators tensoregg does not register itself (e.g. LinearAttention)."""

from __future__ import annotations

import onnx
import onnx.defs
import onnx.inliner

from tensoregg.ir import OPS

MAX_ROUNDS = 4


def _has_function(op: str, domain: str, opset: int | None) -> bool:
    if opset is None:
        return False
    try:
        schema = onnx.defs.get_schema(op, opset, domain)
    except onnx.defs.SchemaError:
        return False
    return any(getattr(schema, flag, False) for flag in ("has_function", "has_context_dependent_function"))


def expand_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` with local functions and the bodies of unregistered function-ops inlined.

    Nodes that cannot be expanded are left alone; import then reports them as unsupported.
    """
    if model.functions:
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception:  # an inliner failure leaves the calls for import to report
            return model
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    for _ in range(MAX_ROUNDS):
        wanted = sorted({(n.domain, n.op_type) for n in model.graph.node
                         if ("" if n.domain == "ai.onnx" else n.domain, n.op_type) not in OPS
                         and _has_function(n.op_type, n.domain, opsets.get(n.domain or ""))})
        if not wanted:
            break
        try:
            model = onnx.inliner.inline_selected_functions(model, wanted, inline_schema_functions=True)
        except Exception:
            break
    return model
