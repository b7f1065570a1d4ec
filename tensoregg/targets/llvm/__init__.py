"""The LLVM CPU target: loop IR -> LLVM IR (llvmlite) -> native code for the host, JIT-compiled."""

from tensoregg.targets.llvm.model import NativeModel

__all__ = ["NativeModel"]
