"""The runtime: compiled modules and how they execute."""

from tensoregg.runtime.artifact import extract
from tensoregg.runtime.loading import load
from tensoregg.runtime.module import Module

__all__ = ["Module", "extract", "load"]
