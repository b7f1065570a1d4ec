"""The runtime: compiled modules and how they execute."""

from tensoregg.runtime.artifact import extract
from tensoregg.runtime.module import Module, load

__all__ = ["Module", "extract", "load"]
