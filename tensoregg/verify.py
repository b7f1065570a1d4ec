"""``tensoregg verify RULES.py``: a user's rule module checked as tests/rules checks ours: every rule
of every ``Family`` it defines needs a law, a unique kebab-case name and an ``example``, and must pass
``tensoregg.testing.check_rule`` on that many random instances of its example, and as many cases that
break its premises (``tensoregg.testing.rulecheck``)."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tensoregg.errors import RuleError
from tensoregg.rules import ALL_RULES, Family, Rule
from tensoregg.testing.rulecheck import check_rule_cases

KEBAB = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


@dataclass(frozen=True)
class Verdict:
    """One rule's check: ``problem`` is None when it passed."""

    family: str
    rule: str
    law: str
    problem: str | None


def families_in(path: str | Path) -> list[Family]:
    """The rule families the Python file at ``path`` defines (imported as a module of its own)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"tensoregg_user_rules_{path.stem}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise RuleError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise RuleError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from exc
    families = [v for v in vars(module).values() if isinstance(v, Family)]
    if not families:
        raise RuleError(f"{path}: defines no tensoregg.rules.Family (see tensoregg/rules/algebra.py)")
    return families


def verify_rule(rule: Rule, examples: int, taken: set[str]) -> str | None:
    """What is wrong with ``rule`` (None: nothing): its name, law, example, or soundness."""
    if not KEBAB.fullmatch(rule.name):
        return f"name {rule.name!r} is not kebab-case"
    if rule.name in taken:
        return f"name {rule.name!r} is taken (a built-in rule or another of this module's)"
    if not rule.law:
        return "no law: say why the rule is sound"
    if rule.example is None:
        return "no example strategy, so it cannot be checked"
    try:
        check_rule_cases(rule, examples, examples)
    except Exception as exc:  # AssertionError: unsound or inert; anything else: the rule is broken
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def verify(families: list[Family], examples: int = 10) -> list[Verdict]:
    """Every rule of ``families`` checked (``verify_rule``); a name is taken by a built-in rule of
    another family or by a rule checked before."""
    verdicts: list[Verdict] = []
    for family in families:
        taken = {r.name for r in ALL_RULES if r.family != family.name}  # ours, re-verified, are not taken
        taken |= {v.rule for v in verdicts}
        for rule in family.rules:
            verdicts.append(Verdict(family.name, rule.name, rule.law, verify_rule(rule, examples, taken)))
            taken.add(rule.name)
    return verdicts
