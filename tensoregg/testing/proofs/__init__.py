"""z3 proofs of the integer and index rules, for all sizes: each proof, keyed by its rule's name,
is a list of obligations (z3 claims) that must be valid. ``status()`` says for every registered rule
whether it is proved, property-tested (``check_rule`` on its example) or neither;
``lowering_proofs()`` prove what lowering does that no rule states (the tiled GEMM's index maps,
the llvm target's small-float conversions);
``python -m tensoregg.testing.proofs`` runs every proof and prints the counts.

Ranks are enumerated up to a bound per proof (sizes, permutations and axes are symbolic); each
obligation has a resource limit, and one that runs out is a failure, never a proof.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import z3

from tensoregg.testing.proofs.symbolic import Obligation

RLIMIT = 30_000_000
"""z3's resource limit for one obligation: deterministic, unlike time on a loaded machine (the
costliest obligation, a round-to-odd proof, takes about 3 million)."""
TIMEOUT_MS = 120_000
"""A time limit for one obligation besides, should the resource count run slow."""


@dataclass(frozen=True)
class Proof:
    """A rule's proof: ``claim`` says what is proved; ``obligations`` builds the z3 claims. Rules
    whose encodings are the same share a ``key``, and so one run of the solver."""

    rule: str
    claim: str
    key: str
    obligations: Callable[[], Iterable[Obligation]] = field(compare=False)


@dataclass(frozen=True)
class Verdict:
    """A proof's result: ``failures`` holds (obligation, counterexample or 'unknown') pairs."""

    rule: str
    obligations: int
    failures: tuple[tuple[str, str], ...]
    seconds: float

    @property
    def proved(self) -> bool:
        return not self.failures


def discharge(claim: z3.BoolRef, rlimit: int = RLIMIT) -> str | None:
    """None if ``claim`` is valid, else a counterexample (or why the solver gave up)."""
    solver = z3.Solver()
    solver.set("rlimit", rlimit)
    solver.set("timeout", TIMEOUT_MS)
    solver.add(z3.Not(claim))
    result = solver.check()
    if result == z3.unsat:
        return None
    if result == z3.sat:
        return str(solver.model())
    return f"unknown ({solver.reason_unknown()})"


_RESULTS: dict[str, tuple[int, tuple[tuple[str, str], ...], float]] = {}
"""Results by proof key: proofs of one encoding run the solver once per process."""


def check(proof: Proof) -> Verdict:
    """Run ``proof``'s obligations (once per ``key``)."""
    if proof.key not in _RESULTS:
        _RESULTS[proof.key] = _run(proof)
    obligations, failures, seconds = _RESULTS[proof.key]
    return Verdict(proof.rule, obligations, failures, seconds)


def _run(proof: Proof) -> tuple[int, tuple[tuple[str, str], ...], float]:
    start = time.perf_counter()
    failures, n = [], 0
    for label, claim in proof.obligations():
        n += 1
        problem = discharge(claim)
        if problem is not None:
            failures.append((label, problem))
    return n, tuple(failures), time.perf_counter() - start


def all_proofs() -> dict[str, Proof]:
    """Every proof, by rule name."""
    from tensoregg.testing.proofs import fusion, index, laws, layout, parallel

    proofs = [*laws.proofs(), *index.proofs(), *layout.proofs(), *parallel.proofs(), *fusion.proofs()]
    return {p.rule: p for p in proofs}


def lowering_proofs() -> dict[str, Proof]:
    """Proofs of what lowering does that no rule states: the tiled GEMM's loop nest and packing
    layouts, the llvm target's conversions of the small float formats."""
    from tensoregg.testing.proofs import formats, tiling

    return {p.rule: p for p in [*tiling.proofs(), *formats.proofs()]}


def status() -> dict[str, str]:
    """Per registered rule: ``proved`` (it has a proof; run ``check`` to discharge it),
    ``property-tested`` (it has an example for check_rule) or ``neither``."""
    from tensoregg.rules import ALL_RULES

    proofs = all_proofs()
    return {r.name: "proved" if r.name in proofs
            else "property-tested" if r.example is not None else "neither" for r in ALL_RULES}
