"""Cross CPU targets: native code for another architecture through llvmlite, linked by Debian's cross
gcc and run under qemu-user (on one thread). Registered as ``aarch64`` (NEON, a Cortex-A72) and
``riscv64`` (RVV 1.0, VLEN 256); each machine is described in ``machines``, built and run by
``program.CrossProgram``, one implementation for both.

Importing this package loads neither llvmlite nor the code generator; a target whose cross gcc or
qemu is missing is registered all the same, and says which tools it lacks (``unavailable``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tensoregg.targets import Target, register_target
from tensoregg.targets.cross.machines import MACHINES, CrossMachine, description, missing_tools
from tensoregg.targets.llvm import gemm_schedule_templates

if TYPE_CHECKING:
    from tensoregg.ir import Graph
    from tensoregg.targets.cross.program import CrossProgram


def _register(machine: CrossMachine) -> None:
    def build(graph: Graph, target: Target) -> CrossProgram:
        from tensoregg.targets.cross.program import CrossProgram

        return CrossProgram(graph, target, machine)

    register_target(machine.name, summary=machine.summary, describe=lambda: description(machine), build=build,
                    unavailable=lambda: missing_tools(machine), schedules=gemm_schedule_templates)


for _machine in MACHINES.values():
    _register(_machine)

__all__ = ["MACHINES", "CrossMachine"]
