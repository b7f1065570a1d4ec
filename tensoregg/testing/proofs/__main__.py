"""``python -m tensoregg.testing.proofs [-v]``: run every proof, print each rule's status (``-v``) and
the counts of rules proved, property-tested only, and neither; exit 1 if a proof fails."""

from __future__ import annotations

import sys
import time
from collections import Counter

from tensoregg.testing.proofs import all_proofs, check, lowering_proofs, status


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    proofs = {**all_proofs(), **lowering_proofs()}
    verdicts = {name: check(proof) for name, proof in proofs.items()}
    failed = {name: v for name, v in verdicts.items() if not v.proved}
    rules = status()
    for name, what in rules.items():
        if name in failed:
            rules[name] = "proof FAILED"
        if "-v" in argv:
            print(f"{what if name not in failed else 'proof FAILED':16} {name}")
    if "-v" in argv:
        for name in lowering_proofs():
            print(f"{'proof FAILED' if name in failed else 'proved':16} {name} (lowering)")
    for name, v in failed.items():
        for label, problem in v.failures:
            print(f"FAILED {name}: {label}: {problem.splitlines()[0]}")
    counts = Counter(rules.values())
    obligations = sum(v.obligations for v in {p.key: verdicts[n] for n, p in proofs.items()}.values())
    print(f"{len(rules)} rules: {counts['proved']} proved, {counts['property-tested']} property-tested only, "
          f"{counts['neither']} neither" + (f", {counts['proof FAILED']} proofs FAILED" if failed else "")
          + f"; {len(lowering_proofs())} lowering proofs; {obligations} z3 obligations in "
          f"{time.perf_counter() - start:.1f} s")
    return 1 if failed or counts["neither"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
