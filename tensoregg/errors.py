"""The tensoregg exception hierarchy: every failure a user can cause raises one of these."""

from __future__ import annotations


class TensoreggError(Exception):
    """Base class of every error tensoregg raises on purpose."""


class InvalidModel(TensoreggError):
    """The model is malformed: bad bytes, dangling names, cycles, bad attributes, wrong types."""


class UnsupportedOperator(TensoreggError, NotImplementedError):
    """An operator (or a form of it) that tensoregg does not implement.

    Also a ``NotImplementedError`` so that ONNX backend harnesses count it as unsupported.
    """

    def __init__(self, op: str, *, opset: int | None = None, node: str | None = None,
                 target: str | None = None, detail: str = "") -> None:
        self.op, self.opset, self.node, self.target = op, opset, node, target
        where = [f"op {op!r}"]
        if opset is not None:
            where.append(f"opset {opset}")
        if node:
            where.append(f"node {node!r}")
        if target:
            where.append(f"target {target!r}")
        msg = "unsupported " + ", ".join(where)
        super().__init__(msg + (f": {detail}" if detail else ""))


class ShapeError(TensoreggError):
    """Shapes or dtypes do not fit an operator's rule, or a shape is not static."""


class InputError(TensoreggError):
    """Wrong inputs passed to ``Module.run``: unknown name, wrong count, shape or dtype."""


class ParameterError(TensoreggError, ValueError):
    """A parameter of the API outside its domain (``num_threads``, ``input_shapes``...)."""


class IndexOutOfRange(InputError, IndexError):
    """An index read from a tensor (Gather, GatherElements, GatherND, ScatterElements, ScatterND) is
    outside the axis it indexes: an error in ONNX, raised by ``run`` naming the node and op."""


class ResourceError(TensoreggError, MemoryError):
    """A tensor, constant or memory plan larger than the memory limit (``tensoregg.limits``)."""


class CompileError(TensoreggError):
    """A compilation stage failed on a model that was otherwise valid."""


class RaceError(CompileError):
    """GPU threads touch one element without a barrier between (or a grid's threads store different
    values into one): the kernel's result depends on their timing. Found by the interpreter."""


class ValidationError(CompileError):
    """Translation validation (``compile(..., validate=True)``) found the optimized program computing
    something else than the imported one: an unsound rule. Names the output, the error and the rules."""

    def __init__(self, message: str, *, output: str, error: float, rules: list[str]) -> None:
        super().__init__(message)
        self.output, self.error, self.rules = output, error, rules


class ArtifactError(TensoreggError):
    """A saved artifact is missing, corrupted or from an incompatible version."""


class GuardViolation(TensoreggError):
    """Generated code wrote outside its buffers (found by the guard-region test mode)."""


class CrossRunError(TensoreggError):
    """A cross-compiled model failed under the emulator (a signal or a nonzero exit status)."""


class RuleError(TensoreggError):
    """A user's rule module that cannot be loaded, or holds no rule family."""


class RecordsError(TensoreggError):
    """A tuning records database (or a JSON lines export of one) that cannot be read or written."""


class ClusterError(TensoreggError):
    """A cluster that tuning cannot measure on: Ray missing, no connection, no machine with CPUs, or a
    worker that does not start or whose machine fingerprint is not the tuning machine's."""


class AcceleratorError(TensoreggError):
    """A program for the ``accel`` target that its assembler, loader or simulator rejects: a malformed
    instruction or program file, a scratchpad or main-memory access out of range, a read of main
    memory nothing wrote, or a broken dependency-token protocol (deadlock, tokens left over)."""
