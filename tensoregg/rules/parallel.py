"""Parallel merging: MatMuls (or Convs) that share an input and have constant weights become one
op over concatenated weights plus a Split (Tensat's multi-pattern rules)."""

from __future__ import annotations

from tensoregg.rules.registry import Family

parallel = Family("parallel", __doc__ or "")
