"""``tensoregg.compile``: model in, runnable Module out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from tensoregg.errors import CompileError
from tensoregg.ir import Graph, run_graph
from tensoregg.runtime import Module

if TYPE_CHECKING:
    from tensoregg.rules import Family

TARGETS = ("ref",)


def compile(model: Any, target: str = "ref", *,  # noqa: A001  (the public name users expect)
            input_shapes: Mapping[str, Sequence[int]] | None = None, optimize: bool = True,
            rule_families: Sequence[str | Family] | None = None) -> Module:
    """Compile a model (ONNX path, bytes, ModelProto, or an ``ir.Graph``) for ``target``.

    ``input_shapes`` fixes symbolic input dimensions (shapes are static). ``optimize`` runs the
    e-graph optimization with the target's rule families, or ``rule_families`` when given (names
    from ``tensoregg.rules.RULESETS`` or your own ``tensoregg.rules.Family`` objects); the Module's
    ``report`` says what it did. Targets: ``"ref"`` runs the reference interpreter.
    """
    if target not in TARGETS:
        raise CompileError(f"unknown target {target!r}; available targets: {', '.join(TARGETS)}")
    if isinstance(model, Graph):
        if input_shapes:
            raise CompileError("input_shapes applies to ONNX models; a Graph's shapes are already fixed")
        graph = model
    else:
        from tensoregg.frontends.onnx import import_onnx

        graph = import_onnx(model, input_shapes=input_shapes)
    report = None
    if optimize:
        from tensoregg.optimize import optimize as run_optimize
        from tensoregg.targets import TARGETS as DESCRIPTIONS

        graph, report = run_optimize(graph, DESCRIPTIONS[target], rule_families)
    module = Module(graph, target, partial(run_graph, graph))
    module.report = report
    return module
