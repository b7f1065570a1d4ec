"""``tensoregg.compile``: model in, runnable Module out."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from tensoregg import cache as compile_cache
from tensoregg.errors import CompileError, ParameterError
from tensoregg.ir import Graph
from tensoregg.ir.bounds import bounded_nodes
from tensoregg.progress import stage
from tensoregg.runtime import Module
from tensoregg.targets import Registration, Target, registration

if TYPE_CHECKING:
    from tensoregg.extraction.alternatives import Reprice
    from tensoregg.rules import Family
    from tensoregg.tuning.search import TuneReport

RecordsOption: TypeAlias = "str | os.PathLike[str] | bool"
"""Where ``compile`` finds tuning records: True, the default database (``tensoregg.tuning.records``);
a path, that one; False, none."""

DEFAULT_TARGET = "llvm"
"""The target when none is named; the environment variable ``TENSOREGG_TARGET`` overrides it."""


def default_target() -> str:
    return os.environ.get("TENSOREGG_TARGET") or DEFAULT_TARGET


def compile(model: Any, target: str | Target | None = None, *,  # noqa: A001  (the public name users expect)
            input_shapes: Mapping[str, Sequence[int | str]] | None = None, optimize: bool = True,
            rule_families: Sequence[str | Family] | None = None, cache: bool = False,
            example_inputs: Sequence[Any] | None = None, validate: bool = False,
            records: RecordsOption = True, dim_ranges: Mapping[str, Sequence[int]] | None = None) -> Module:
    """Compile a model (ONNX path, bytes, ModelProto, an ``ir.Graph``, or a PyTorch ``nn.Module``
    or ``torch.export.ExportedProgram``) for ``target``.

    ``target`` names a registered target (``tensoregg.targets.available()``: ``"llvm"`` native code
    for this machine, ``"ref"`` the reference interpreter...; default ``default_target()``), or is a
    ``Target`` description, compiled by the registered target of its name with that description's
    cost model (a fixed machine, ``tensoregg.targets.llvm.machines``). ``input_shapes`` fixes symbolic
    input dimensions. The first dimension may stay symbolic (an ONNX ``dim_param``, or a name:
    ``input_shapes={"x": ("N", 3, 224, 224)}``), in the range ``dim_ranges`` gives (``{"N": (1, 16)}``;
    default: any batch): the model is then compiled per bucket of batch sizes and returns a
    ``BatchedModule`` that runs any batch in the range (``tensoregg.dynamic``). ``optimize`` runs the
    e-graph optimization with the target's rule families, or ``rule_families`` when given (names
    from ``tensoregg.rules.RULESETS`` or your own ``tensoregg.rules.Family`` objects); the Module's
    ``report`` says what it did.
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

    Where the tuning records (``records``: see ``RecordsOption``; ``tensoregg.tune`` writes them)
    hold measurements of a kernel on this machine for this target, its measured times replace the
    cost model's predictions, so a tuned model compiles to its tuned choices with no measurement.
    """
    _check_options(optimize=optimize, cache=cache, validate=validate, rule_families=rule_families)
    entry, description = resolve_target(target)
    reprice, tuned = _records_pricing(records, entry, description) if optimize else (None, "")
    key = (_cache_key(model, entry, description, input_shapes, optimize, rule_families, tuned, validate)
           if cache else None)
    if key is not None:
        cached = compile_cache.lookup(key)
        if cached is not None:
            return cached
    if not isinstance(model, Graph) and not _is_torch(model) and example_inputs is None:
        from tensoregg.frontends.onnx import load_model

        model = load_model(model)  # once: the batch's checks and the import read the same proto
    if not isinstance(model, Graph):
        batched = _compile_batched(model, description, input_shapes, dim_ranges, example_inputs,
                                   optimize=optimize, rule_families=rule_families, cache=cache,
                                   validate=validate, records=records)
        if batched is not None:
            return batched
    elif dim_ranges is not None:
        raise ParameterError("dim_ranges applies to ONNX and torch models, not to a Graph (its shapes are "
                             "fixed)")
    with stage("import"):
        graph = to_graph(model, input_shapes, example_inputs)
    if bounded_nodes(graph):  # data-dependent output shapes: compiled in stages (tensoregg.staging)
        return _staged(graph, target, optimize=optimize, rule_families=rule_families, validate=validate,
                       records=records)
    report = None
    if optimize:
        from tensoregg.optimize import optimize as run_optimize
        from tensoregg.optimize import validate as validate_translation
        original = graph
        graph, report = run_optimize(graph, description, rule_families, schedules=entry.schedules,
                                     reprice=reprice)
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


def _compile_batched(model: Any, description: Target, input_shapes: Mapping[str, Sequence[Any]] | None,
                     dim_ranges: Mapping[str, Sequence[int]] | None, example_inputs: Sequence[Any] | None,
                     **options: Any) -> Module | None:
    """A model compiled for its symbolic batch dimension (``tensoregg.dynamic``), or None when it has
    none: an ONNX model whose inputs' first dim is symbolic, or a torch model given ``dim_ranges``
    (the first dim of every example input is the batch; the model is exported per bucket size)."""
    from tensoregg.dynamic import batch_shapes, checked_range, compile_batched, symbolic_dims

    if _is_torch(model):
        if dim_ranges is None:
            return None
        if not isinstance(dim_ranges, Mapping) or len(dim_ranges) != 1:
            raise ParameterError(f"dim_ranges must name the one batch dimension of the example inputs, got "
                                 f"{dim_ranges!r}")
        symbol = next(iter(dim_ranges))
        return compile_batched(symbol, checked_range(symbol, dim_ranges), None,
                               lambda b: to_graph(model, None, [_rows(x, b) for x in example_inputs or ()]),
                               lambda b, graph: compile(graph, description, **options))
    if example_inputs is not None:
        return None  # to_graph names the mistake
    from tensoregg.frontends.onnx import declared_input_dims

    proto = model
    found = symbolic_dims(declared_input_dims(proto), input_shapes)
    if found is None:
        if dim_ranges is not None:
            raise ParameterError("dim_ranges names a symbolic batch dimension, but the model's input shapes "
                                 "are all fixed")
        return None
    symbol, dims = found
    batched = {name for name, shape in dims.items() if shape and shape[0] == symbol}

    def shapes(b: int) -> dict[str, list[int]]:
        return batch_shapes(symbol, dims, b)

    return compile_batched(symbol, checked_range(symbol, dim_ranges), batched,
                           lambda b: to_graph(proto, shapes(b)),
                           lambda b, _: compile(proto, description, input_shapes=shapes(b), **options))


def _rows(example: Any, b: int) -> Any:
    """A torch example input with ``b`` rows: its first row repeated."""
    if not hasattr(example, "repeat") or not getattr(example, "dim", lambda: 0)():
        raise ParameterError(f"with dim_ranges, every example input must be a tensor whose first dim is the "
                             f"batch, got {type(example).__name__}")
    return example[:1].repeat(b, *[1] * (example.dim() - 1))


def _staged(graph: Graph, target: str | Target | None, **options: Any) -> Module:
    """The Module running ``graph`` in stages, each compiled by ``compile`` with ``options``."""
    from tensoregg.staging import StagedProgram

    program = StagedProgram(graph, lambda sub: compile(sub, target, **options),
                            lambda sub: compile(sub, "ref", optimize=False))
    module = Module(graph, resolve_target(target)[0].name, program, export=StagedProgram.export)
    module.report = program.report
    return module


def _check_options(*, optimize: object, cache: object, validate: object, rule_families: object) -> None:
    """ParameterError for a flag that is not a bool (``optimize="no"`` would optimize) or rule
    families that are not a sequence of names and Family objects (a str is one name, not many)."""
    for name, value in (("optimize", optimize), ("cache", cache), ("validate", validate)):
        if not isinstance(value, bool):
            raise ParameterError(f"compile's {name} must be a bool, got {type(value).__name__} {value!r}")
    if rule_families is not None and (isinstance(rule_families, str)
                                      or not isinstance(rule_families, Sequence)):
        raise ParameterError(f"rule_families must be a sequence of family names, got "
                             f"{type(rule_families).__name__} {rule_families!r}")


def _cache_key(model: Any, entry: Registration, description: Target,
               input_shapes: Mapping[str, Sequence[int | str]] | None, optimize: bool,
               rule_families: Sequence[str | Family] | None, tuned: str,
               validate: bool = False) -> str | None:
    """The compile cache's key, or None for what the cache cannot hold (see ``compile``); ``tuned``
    is the digest of the tuning records that apply."""
    digest = compile_cache.model_digest(model)
    names = None if rule_families is None else [f for f in rule_families if isinstance(f, str)]
    if digest is None or entry.save is None or (names is not None and len(names) != len(rule_families or ())):
        return None
    options = {"input_shapes": {k: list(v) for k, v in sorted((input_shapes or {}).items())},
               "optimize": optimize, "records": tuned, **({"validate": True} if validate else {})}
    return compile_cache.cache_key(digest, entry.name, description, names, options)


def _records_pricing(records: RecordsOption, entry: Registration, description: Target,
                     ) -> tuple[Reprice | None, str]:
    """The hook that prices kernels by the records of ``records`` for this target and machine, and
    the digest of those records ("" and no hook where there are none)."""
    if records is False or entry.schedules is None:
        return None, ""
    from tensoregg.tuning.records import Records, digest, measured_pricing

    with Records(None if records is True else records, create=False) as db:
        measured = db.measured(description)
    return (measured_pricing(measured), digest(measured)) if measured else (None, "")


def tune(models: Any, target: str | Target | None = None, *, minutes: float = 10.0,
         records: str | os.PathLike[str] | None = None,
         input_shapes: Mapping[str, Sequence[int | str]] | None = None,
         example_inputs: Sequence[Any] | None = None,
         trials: int = 32, seconds: float = 0.2, timeout: float = 60.0, seed: int = 0,
         progress: bool | None = None, cluster: str | None = None, check_models: bool = True) -> TuneReport:
    """Auto-tune a model (or a list of models) for ``target`` for about ``minutes``: the kernels of
    the programs ``compile`` extracts, deduplicated across the models, are measured under up to
    ``trials`` schedules each (the cost model's best, then sampled ones), each in a worker process
    under ``timeout`` seconds, and stored in the tuning records (``records``: a path; default
    ``$TENSOREGG_RECORDS`` or the user cache directory), which ``compile`` then uses. Models are
    what ``compile`` takes, ``input_shapes`` and ``example_inputs`` (torch models) applying to each.
    ``progress``: show progress bars (default: on a terminal, not under CI). ``cluster``: the
    address of a Ray cluster whose machines measure instead (``tensoregg.tuning.cluster``; raises
    ``ClusterError`` where it cannot be used). ``check_models``: time each model whole, untuned and
    tuned, at the end (``TuneReport.models``; a RuntimeWarning names a model the records made slower)."""
    from tensoregg.tuning.records import Records
    from tensoregg.tuning.search import tune_graphs

    entry, description = resolve_target(target)
    if entry.schedules is None:
        raise CompileError(f"target {entry.name!r} has no schedule templates to tune")
    graphs = [to_graph(m, input_shapes, example_inputs)
              for m in (models if isinstance(models, (list, tuple)) else [models])]
    with Records(records) as db:
        return tune_graphs(graphs, entry, description, db, minutes=minutes, trials=trials, seconds=seconds,
                           timeout=timeout, seed=seed, progress=progress, cluster=cluster,
                           check_models=check_models)


def resolve_target(target: str | Target | None) -> tuple[Registration, Target]:
    """The registration and description ``target`` (a name, a description or None) stands for."""
    if isinstance(target, Target):
        return registration(target.name), target
    entry = registration(target or default_target())
    return entry, entry.describe()


def to_graph(model: Any, input_shapes: Mapping[str, Sequence[int | str]] | None = None,
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
