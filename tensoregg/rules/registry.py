"""Rule authoring: named rules, grouped in one ruleset per family, each with a law and a witness.

A rule has a stable kebab-case name, a one-line law (why it is sound), the egglog rule itself and
an ``example``: a hypothesis strategy of small Graphs on which the rule applies. ``check_rule``
(tensoregg.testing) uses the example to prove the rule on random inputs; a rule without one fails
the generic test. A rule may add a ``counter`` strategy: graphs that match its pattern but break a
premise (a wrong shape, dtype or constant), on which it must not fire unsoundly. The rule keeps
the facts and actions it was built from, so that ``tensoregg.testing.mutate`` can rebuild it with
one of them changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from egglog import Ruleset, rule, ruleset, union

Example = Callable[[], Any]
"""A zero-argument function returning a hypothesis strategy of (Graph, feeds) pairs."""


@dataclass(frozen=True)
class Rule:
    name: str
    law: str
    family: str
    command: Any
    example: Example | None
    counter: Example | None = None
    """Graphs matching the pattern with a premise broken: the rule must not fire unsoundly there."""
    exact: bool = True
    """The law holds bit for bit in IEEE arithmetic (-0, NaN, +-inf included); False where it holds
    only up to rounding (reassociation, folded weights): then results are compared within
    ``tensoregg.testing.tolerance`` of their dtype, on finite inputs."""
    facts: tuple[Any, ...] = ()
    actions: tuple[Any, ...] = ()

    def rebuilt(self, facts: Sequence[Any], actions: Sequence[Any], name: str | None = None) -> Rule:
        """This rule with other facts and actions (a mutant), under ``name`` (default: its own)."""
        name = name or self.name
        return replace(self, name=name, command=rule(*facts, name=name).then(*actions), facts=tuple(facts),
                       actions=tuple(actions))


@dataclass
class Family:
    """The rules of one family (one module in ``rules/``), run as one egglog ruleset."""

    name: str
    doc: str
    rules: list[Rule] = field(default_factory=list)

    def rewrite(self, name: str, law: str, lhs: Any, rhs: Any, *when: Any, example: Example | None = None,
                counter: Example | None = None, exact: bool = True) -> Rule:
        """Register ``lhs -> rhs`` (unioned, so both stay) under ``name``, guarded by ``when`` facts."""
        return self.rule(name, law, [lhs, *when], [union(lhs).with_(rhs)], example=example, counter=counter,
                         exact=exact)

    def rule(self, name: str, law: str, facts: Sequence[Any], actions: Sequence[Any], *,
             example: Example | None = None, counter: Example | None = None, exact: bool = True) -> Rule:
        """Register the general rule ``facts => actions`` (several patterns, several unions, facts
        set for new terms) under ``name``; see ``Rule`` for ``counter`` and ``exact``."""
        if any(r.name == name for r in self.rules):
            raise ValueError(f"rule {name!r} registered twice in family {self.name!r}")
        command = rule(*facts, name=name).then(*actions)
        registered = Rule(name, law, self.name, command, example, counter, exact, tuple(facts),
                          tuple(actions))
        self.rules.append(registered)
        return registered

    @property
    def ruleset(self) -> Ruleset:
        return ruleset(*[r.command for r in self.rules], name=self.name)


def ruleset_of(rules: list[Rule], name: str = "selected") -> Ruleset:
    """An egglog ruleset holding just ``rules`` (e.g. one rule under test)."""
    return ruleset(*[r.command for r in rules], name=name)

