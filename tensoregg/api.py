"""``tensoregg.compile``: model in, runnable Module out."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tensoregg import cache as compile_cache
from tensoregg.errors import CompileError, ParameterError
from tensoregg.ir import Graph
from tensoregg.progress import stage
from tensoregg.runtime import Module
from tensoregg.targets import Registration, Target, registration

if TYPE_CHECKING:
    from tensoregg.rules import Family

DEFAULT_TARGET = "llvm"
"""The target when none is named; the environment variable ``TENSOREGG_TARGET`` overrides it."""


def default_target() -> str:
    return os.environ.get("TENSOREGG_TARGET") or DEFAULT_TARGET


def compile(model: Any, target: str | Target | None = None, *,  # noqa: A001  (the public name users expect)
            input_shapes: Mapping[str, Sequence[int]] | None = None, optimize: bool = True,
            rule_families: Sequence[str | Family] | None = None, cache: bool = False,
            example_inputs: Sequence[Any] | None = None, validate: bool = False) -> Module:
    """Compile a model (ONNX path, bytes, ModelProto, an ``ir.Graph``, or a PyTorch ``nn.Module``
    or ``torch.export.ExportedProgram``) for ``target``.

    ``target`` names a registered target (``tensoregg.targets.available()``: ``"llvm"`` native code
    for this machine, ``"ref"`` the reference interpreter...; default ``default_target()``), or is a
    ``Target`` description, compiled by the registered target of its name with that description's
    cost model (a fixed machine, ``tensoregg.targets.llvm.machines``). ``input_shapes`` fixes symbolic
    input dimensions (shapes are static). ``optimize`` runs the e-graph optimization with the
    target's rule families, or ``rule_families`` when given (names from ``tensoregg.rules.RULESETS``
    or your own ``tensoregg.rules.Family`` objects); the Module's ``report`` says what it did.
    An ``nn.Module`` is exported with ``torch.export`` at ``example_inputs`` (a tuple of tensors,
    whose shapes the compiled module then takes; ``tensoregg.frontends.torch``).

    With ``cache``, the compile cache (``tensoregg.cache``) is looked up first: an unchanged ONNX
    model compiled again for the same target with the same options is loaded from its artifact (a
    Module without its Graph object or report: ``graph_text`` has the Graph's text), and a fresh
    compile is stored. Graphs, your own ``Family`` objects and targets that cannot save are compiled
    without it.

    With ``validate`` (translation validation), the optimized program is run against the imported one
    with the reference interpreter on seeded random inputs before lowering, and a program that
    differs is refused with a ``ValidationError`` naming the output, the error and the rules involved.
    """
    entry, description = resolve_target(target)
    key = (_cache_key(model, entry, description, input_shapes, optimize, rule_families, validate)
           if cache else None)
    if key is not None:
        cached = compile_cache.lookup(key)
        if cached is not None:
            return cached
    with stage("import"):
        graph = to_graph(model, input_shapes, example_inputs)
    report = None
    if optimize:
        from tensoregg.optimize import optimize as run_optimize
        from tensoregg.optimize import validate as validate_translation
        original = graph
        graph, report = run_optimize(graph, description, rule_families, schedules=entry.schedules)
        if validate:
            validate_translation(original, graph, report, description, rule_families,
                                 schedules=entry.schedules)
    with stage("codegen"):
        module = Module(graph, entry.name, entry.build(graph, description), export=entry.save)
    module.report = report
    if key is not None:
        with stage("cache"):
            compile_cache.store(key, module)
    return module


def _cache_key(model: Any, entry: Registration, description: Target,
               input_shapes: Mapping[str, Sequence[int]] | None, optimize: bool,
               rule_families: Sequence[str | Family] | None, validate: bool = False) -> str | None:
    """The compile cache's key, or None for what the cache cannot hold (see ``compile``)."""
    digest = compile_cache.model_digest(model)
    names = None if rule_families is None else [f for f in rule_families if isinstance(f, str)]
    if digest is None or entry.save is None or (names is not None and len(names) != len(rule_families or ())):
        return None
    options = {"input_shapes": {k: list(v) for k, v in sorted((input_shapes or {}).items())},
               "optimize": optimize, **({"validate": True} if validate else {})}
    return compile_cache.cache_key(digest, entry.name, description, names, options)


def resolve_target(target: str | Target | None) -> tuple[Registration, Target]:
    """The registration and description ``target`` (a name, a description or None) stands for."""
    if isinstance(target, Target):
        return registration(target.name), target
    entry = registration(target or default_target())
    return entry, entry.describe()


def to_graph(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
             example_inputs: Sequence[Any] | None = None) -> Graph:
    """A model as ``compile`` accepts it (ONNX path, bytes, ModelProto, an ``ir.Graph``, a torch
    ``nn.Module`` or ExportedProgram) -> Graph."""
    if _is_torch(model):
        if input_shapes:
            raise ParameterError("input_shapes applies to ONNX models; a torch model's shapes are "
                                 "example_inputs' shapes")
        from tensoregg.frontends.torch import import_torch

        return import_torch(model, example_inputs)
    if example_inputs is not None:
        raise ParameterError(f"example_inputs applies to torch models, not to {type(model).__name__}")
    if isinstance(model, Graph):
        if input_shapes:
            raise CompileError("input_shapes applies to ONNX models; a Graph's shapes are already fixed")
        return model
    from tensoregg.frontends.onnx import import_onnx

    return import_onnx(model, input_shapes=input_shapes)


def _is_torch(model: Any) -> bool:
    """Whether ``model`` is a torch ``nn.Module`` or ExportedProgram (torch is then imported already)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))
