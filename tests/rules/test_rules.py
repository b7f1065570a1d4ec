"""Every registered rule is proved with check_rule on random instances of its example, and checked on
cases that break its premises (its counter-witnesses, dtype sweeps, IEEE specials)."""

import pkgutil

import pytest

import tensoregg.rules
from tensoregg.rules import ALL_RULES, RULESETS
from tensoregg.testing.rulecheck import check_rule_cases

INFRA = {"registry", "saturation", "witness"}


def test_every_rule_module_is_a_registered_family():
    modules = {m.name for m in pkgutil.iter_modules(tensoregg.rules.__path__)} - INFRA
    assert modules == set(RULESETS), "a module in rules/ is not in RULESETS (or the reverse)"


def test_rule_names_are_unique_kebab_case():
    names = [r.name for r in ALL_RULES]
    assert len(names) == len(set(names))
    assert all(n == n.lower() and " " not in n and "_" not in n for n in names)
    assert all(r.law for r in ALL_RULES)


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.name)
def test_rule_is_sound(rule):
    check_rule_cases(rule, examples=5, premise_breaking=5)
