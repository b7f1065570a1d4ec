"""The runtime: compiled modules and how they execute."""

from tensoregg.runtime.module import Module

__all__ = ["Module"]
