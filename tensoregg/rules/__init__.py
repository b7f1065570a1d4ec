"""Rewrite rules, one module per family; ``RULESETS`` maps family names to their rules.

Importing this package imports egglog.
"""

from tensoregg.rules import algebra, fusion, layout, linalg, parallel, quantization, winograd
from tensoregg.rules.registry import Family, Rule, ruleset_of
from tensoregg.rules.saturation import Phase, PhaseReport, saturate

RULESETS: dict[str, Family] = {f.name: f for f in (algebra.algebra, layout.layout, linalg.linalg,
                                                   winograd.winograd, parallel.parallel, fusion.fusion,
                                                   quantization.quantization)}
"""Every rule family by name."""

ALL_RULES: list[Rule] = [r for family in RULESETS.values() for r in family.rules]

__all__ = ["ALL_RULES", "RULESETS", "Family", "Phase", "PhaseReport", "Rule", "ruleset_of", "saturate"]
