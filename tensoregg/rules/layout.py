"""Layout: Transposes moved through element-wise ops so that they meet and cancel."""

from __future__ import annotations

from tensoregg.rules.registry import Family

layout = Family("layout", __doc__ or "")
