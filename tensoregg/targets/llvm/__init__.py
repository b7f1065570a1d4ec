"""The LLVM CPU target: loop IR -> LLVM IR (llvmlite) -> native code for the host, JIT-compiled.

Registered as ``llvm``; importing this package loads neither llvmlite nor the code generator (they
load when a model is compiled, or ``NativeModel`` is imported)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from tensoregg.targets import Program, Target, register_target

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tensoregg.ir import Graph
    from tensoregg.ir.schedules import GemmProblem, Schedule
    from tensoregg.runtime.artifact import TargetCode
    from tensoregg.targets.llvm.model import NativeModel


def _describe() -> Target:
    from tensoregg.targets.llvm.host import host_target

    return host_target()


def _build(graph: Graph, target: Target) -> NativeModel:
    from tensoregg.targets.llvm.model import NativeModel

    return NativeModel(graph, target=target)


def _save(program: Program) -> TargetCode:
    from tensoregg.targets.llvm.export import save_native

    return save_native(cast("NativeModel", program))  # what _build made


def gemm_schedule_templates(problems: Sequence[GemmProblem], target: Target,
               ) -> Sequence[Sequence[tuple[Schedule, float]]]:
    """The GEMM schedules of ``problems`` on ``target`` with their predicted seconds
    (``gemm_schedules.priced_schedules``); every target that emits through this code generator
    registers them."""
    from tensoregg.targets.llvm.gemm_schedules import priced_schedules

    return priced_schedules(problems, target)


register_target("llvm", summary="native code for this CPU (x86-64, its vector width) through llvmlite, "
                "multi-threaded", describe=_describe, build=_build, schedules=gemm_schedule_templates,
                save=_save)


def __getattr__(name: str) -> Any:
    if name == "NativeModel":
        from tensoregg.targets.llvm.model import NativeModel

        return NativeModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["NativeModel"]
