"""The learned cost model (tensoregg.tuning.learned) against the analytic one, on held-out kernels.

    python bench/learned_cost.py --records PATH [--tune MINUTES [--trials N] [MODEL ...]] [--folds K]
                                 [--json out.json]

With ``--tune``, first tunes MODEL (names as bench/models.py takes them; default mlp, encoder,
resnet_small, squeezenet, shufflenet) into the records for that long, ``--trials`` schedules per
kernel, so that the records hold many schedules of each kernel. Then it reads the successful
measurements of the host's llvm target on this machine (kernels with at least 3 of them), splits the
kernels into ``--folds`` groups (seeded), and for each group trains the learned model on the other
groups' records and predicts the group's: per held-out kernel, the Spearman rank correlation between
the predicted and the measured times, for the learned model and for the analytic one
(``kernel_cost.gemm_cost`` / ``untiled_cost``), and each one's regret (the measured time of the
schedule it ranks first over the best measured, minus 1). Printed: the means over the held-out
kernels. On a shared machine the measured times are noisy: the header gives the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict

import numpy as np

DEFAULT_MODELS = ("mlp", "encoder", "resnet_small", "squeezenet", "shufflenet")


def main(argv: list[str] | None = None) -> int:
    from models import load

    import tensoregg
    from tensoregg.extraction.kernel_cost import gemm_cost, untiled_cost
    from tensoregg.ir.schedules import GemmSchedule
    from tensoregg.targets import get_target
    from tensoregg.tuning.learned import LearnedCostModel, samples, spearman
    from tensoregg.tuning.records import Records

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--records", required=True)
    parser.add_argument("--tune", type=float, default=0.0, metavar="MINUTES")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    target = get_target("llvm")
    if args.tune > 0:
        print(tensoregg.tune([load(m) for m in args.models], "llvm", minutes=args.tune, records=args.records,
                             trials=args.trials, seconds=0.05), flush=True)
    with Records(args.records) as db:
        data = samples(db, target)
    by_kernel = defaultdict(list)
    for s in data:
        by_kernel[s.signature].append(s)
    kernels = sorted(by_kernel)
    folds = np.random.default_rng(args.seed).permutation(len(kernels)) % args.folds
    rows = []
    for f in range(args.folds):
        held = [k for k, g in zip(kernels, folds) if g == f]
        train = [s for k, g in zip(kernels, folds) if g != f for s in by_kernel[k]]
        if not held or len({s.signature for s in train}) < 2:
            continue
        model = LearnedCostModel.fit(train, target, args.seed)
        for k in held:
            group = by_kernel[k]
            measured = np.array([s.seconds for s in group])
            learned = model.predict(group[0].problem, [s.schedule for s in group])
            analytic = np.array([float(gemm_cost(s.problem, [s.schedule], target)[0])
                                 if isinstance(s.schedule, GemmSchedule) else untiled_cost(s.problem, target)
                                 for s in group])
            best = measured.min()
            rows.append({"kernel": k[:12], "schedules": len(group),
                         "spearman_learned": spearman(learned, measured),
                         "spearman_analytic": spearman(analytic, measured),
                         "regret_learned": measured[int(np.argmin(learned))] / best - 1,
                         "regret_analytic": measured[int(np.argmin(analytic))] / best - 1})
    if not rows:
        print(f"too few kernels with records ({len(kernels)}): tune more models")
        return 1
    summary = {key: statistics.fmean(r[key] for r in rows if not np.isnan(r[key]))
               for key in ("spearman_learned", "spearman_analytic", "regret_learned", "regret_analytic")}
    print(f"{len(rows)} held-out kernels ({len(data)} measured schedules, {args.folds} folds by kernel)")
    print(f"Spearman rank correlation with measured times: learned {summary['spearman_learned']:.2f}, "
          f"analytic {summary['spearman_analytic']:.2f}")
    print(f"regret of the top pick: learned {summary['regret_learned']:.1%}, "
          f"analytic {summary['regret_analytic']:.1%}")
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
