"""Inline ONNX functions before import: model-local functions, and the function bodies ONNX
defines for operators tensoregg does not register itself (e.g. LinearAttention)."""

from __future__ import annotations

import onnx
import onnx.defs
import onnx.inliner
import onnx.shape_inference

from tensoregg.ir import OPS

MAX_ROUNDS = 4
LOCAL_DOMAIN = "tensoregg.inline"
"""The domain of the function bodies ``_local_bodies`` copies into a model to inline them."""


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
        except Exception:  # e.g. an omitted optional input in the middle (LinearAttention)
            try:
                model = onnx.inliner.inline_local_functions(_local_bodies(model, set(wanted), opsets))
            except Exception:
                break
    return model


def _local_bodies(model: onnx.ModelProto, wanted: set[tuple[str, str]],
                  opsets: dict[str, int]) -> onnx.ModelProto:
    """``model`` with each node of a ``wanted`` op calling a model-local copy of its schema's
    function body, built for that node (a context-dependent body depends on its inputs' types), so
    that ``inline_local_functions`` expands it where ``inline_selected_functions`` fails."""
    typed = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type for vi in [*typed.graph.input, *typed.graph.value_info, *typed.graph.output]}
    types.update({t.name: onnx.helper.make_tensor_type_proto(t.data_type, t.dims)
                  for t in model.graph.initializer})
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for k, n in enumerate(out.graph.node):
        if (n.domain, n.op_type) not in wanted:
            continue
        schema = onnx.defs.get_schema(n.op_type, opsets[n.domain or ""], n.domain)
        body = onnx.FunctionProto()
        if getattr(schema, "has_context_dependent_function", False):
            args = [types[i].SerializeToString() if i else b"" for i in n.input]
            built = schema.get_context_dependent_function(n.SerializeToString(), args)  # type: ignore[attr-defined]
            body.ParseFromString(built)
        else:
            body.CopyFrom(schema.function_body)
        body.domain, body.name = LOCAL_DOMAIN, f"{n.op_type}_{k}"
        n.domain, n.op_type = LOCAL_DOMAIN, body.name
        out.functions.append(body)
    out.opset_import.append(onnx.helper.make_opsetid(LOCAL_DOMAIN, 1))
    return out
