"""The torch.compile backend: ``torch.compile(model, backend="tensoregg")`` (registered through the
``torch_dynamo_backends`` entry point; ``options={"target": "llvm"}`` picks the target).

Each graph TorchDynamo captures is exported with ``torch.export``, imported by
``tensoregg.frontends.torch`` and compiled; its parameters and buffers (inputs of a Dynamo graph)
are compiled in as constants, and a call whose weights are other tensors, or were changed in place
since, runs the graph in eager mode. A compiled graph runs on as many threads as torch's
``torch.get_num_threads()`` at compile time. A graph tensoregg cannot take (an unsupported op, symbolic
sizes, gradients needed, tensors off the CPU) runs in eager mode, the reason logged as a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils import _pytree

from tensoregg.api import compile as compile_graph
from tensoregg.errors import TensoreggError
from tensoregg.frontends.torch import export, from_numpy, import_exported, to_numpy
from tensoregg.runtime import Module

log = logging.getLogger(__name__)


def tensoregg_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
                      options: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """A TorchDynamo backend: ``gm`` compiled by tensoregg, or ``gm.forward`` (eager) when it cannot be."""
    options = dict(options or {})
    target = options.pop("target", None)
    if options:
        raise TypeError(f"tensoregg backend: unknown options {sorted(options)} (known: target)")
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    reason = _refusal(example_inputs)
    if reason is None:
        try:
            return _Compiled(gm, placeholders, list(example_inputs), target)
        except TensoreggError as e:
            reason = str(e)
    log.warning("tensoregg: graph of %d nodes runs in eager mode: %s", len(gm.graph.nodes), reason)
    return gm.forward


def _refusal(example_inputs: Sequence[Any]) -> str | None:
    """Why a graph with these inputs cannot be compiled, or None."""
    for k, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            return f"input {k} is a {type(x).__name__} (symbolic sizes: shapes are static)"
        if not all(isinstance(d, int) for d in x.shape):
            return f"input {k} has symbolic sizes {list(x.shape)} (shapes are static)"
        if x.device.type != "cpu":
            return f"input {k} is on {x.device} (tensoregg runs on the CPU)"
        if x.requires_grad and torch.is_grad_enabled():
            return (f"input {k} requires gradients, which tensoregg does not compute (run under "
                    "torch.no_grad() or torch.inference_mode())")
    return None


def _is_weight(node: torch.fx.Node, x: torch.Tensor) -> bool:
    """A parameter or buffer of the model (Dynamo lifts them to graph inputs)."""
    source = getattr(node.meta.get("grapharg"), "source", None)
    return isinstance(x, torch.nn.Parameter) or "._buffers[" in str(getattr(source, "name", ""))


class _Compiled:
    """``gm`` compiled with its weights as constants; runs eagerly when the weights are not those."""

    def __init__(self, gm: torch.fx.GraphModule, placeholders: list[torch.fx.Node],
                 example_inputs: list[torch.Tensor], target: str | None) -> None:
        self.gm = gm
        self.weights = {k: x for k, (node, x) in enumerate(zip(placeholders, example_inputs))
                        if _is_weight(node, x)}
        self.versions = {k: x._version for k, x in self.weights.items()}
        self.feeds = [k for k in range(len(example_inputs)) if k not in self.weights]
        program = export(gm, example_inputs)
        names = [spec.arg.name for spec in program.graph_signature.input_specs
                 if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT]
        graph = import_exported(program, {names[k]: x for k, x in self.weights.items()})
        self.module: Module = compile_graph(graph, target)
        if hasattr(self.module.program, "num_threads"):
            self.module.num_threads = torch.get_num_threads()  # as many threads as eager torch would use
        self.out_spec = program.call_spec.out_spec
        log.info("tensoregg: compiled a graph of %d nodes for %s (%d weights as constants)",
                 len(gm.graph.nodes), self.module.target, len(self.weights))

    def __call__(self, *args: torch.Tensor) -> Any:
        changed = [k for k, x in self.weights.items() if args[k] is not x or x._version != self.versions[k]]
        if changed:
            names = [n.name for n in self.gm.graph.nodes if n.op == "placeholder"]
            log.warning("tensoregg: weights %s are not the ones compiled in; running the graph in eager mode",
                        [names[k] for k in changed[:4]])
            return self.gm.forward(*args)
        outputs = self.module.run(*[to_numpy(args[k]) for k in self.feeds])
        return _pytree.tree_unflatten([from_numpy(y) for y in outputs], self.out_spec)

