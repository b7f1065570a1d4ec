"""The ``interp`` target: the loop program every code generator starts from (``tensoregg.ir.program``)
executed with numpy, kernel by kernel on the static memory plan. It is the executable definition of
the loop IR: a lowering can be checked with it on any machine, without the hardware of the target
that will run it. Loops run vectorized where their iterations are independent, so that whole models
run in minutes rather than hours; every load and store is checked against its buffer.

Registered as ``interp``; importing this package loads none of the interpreter (it loads when a model
is built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tensoregg.targets import RULE_FAMILIES, Target, register_target

if TYPE_CHECKING:
    from tensoregg.ir import Graph
    from tensoregg.targets.interp.program import InterpProgram

INTERP = Target("interp", peak_flops=102.7e9, mem_bandwidth=21e9, kernel_overhead_s=2e-6, vector_bits=256,
                cores=1, caches=(("L1", 32 << 10), ("L2", 512 << 10), ("L3", 32 << 20)),
                rule_families=RULE_FAMILIES)
"""The facts of a generic CPU core (those of ``ref``), for the cost model; the interpreter's own speed
is no target's."""


def _build(graph: Graph, target: Target) -> InterpProgram:
    from tensoregg.targets.interp.program import InterpProgram

    return InterpProgram(graph, target)


register_target("interp", summary="the loop program (what code generators emit) executed by numpy: the "
                "loop IR's definition, every access bounds-checked; one thread, slow",
                describe=lambda: INTERP, build=_build)
