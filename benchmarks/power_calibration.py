"""Is `plan --power` calibrated? Predicted probabilities against observed frequencies on fresh worlds.

    .venv/bin/python benchmarks/power_calibration.py [--predicted 250] [--observed 250] [--seed S] [SPACE ...]

The prediction runs N worlds of the default prior the way `plan --power` does; the observation runs M fresh
worlds from the same prior under another seed, each analysed as `sweep-engine analyze` would (every document,
200 replicates). Per question group: both shares with their Monte Carlo SEs and the difference
(sweep_engine/analysis/power/calibrate.py states the method). Default grid: the laptop spaces german.yaml and
chinese.yaml, as `plan --power` reads them. The seed is printed; --seed replays a run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from sweep_engine.analysis.power.calibrate import TOLERANCE, compare, observed, predicted, render
from sweep_engine.analysis.power.estimate import default_jobs
from sweep_engine.analysis.power.grid import plan_grid
from sweep_engine.analysis.power.prior import DefaultPrior
from sweep_engine.analysis.power.questions import QUESTIONS, WIDTH
from sweep_engine.analysis.power.simulate import Asked

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "spaces",
        nargs="*",
        default=[str(REPO / "search_spaces" / f"{n}.yaml") for n in ("german", "chinese")],
    )
    ap.add_argument("--predicted", type=int, default=250)
    ap.add_argument("--observed", type=int, default=250)
    ap.add_argument("--seed", type=int, default=None, help="default: a fresh random seed (printed)")
    ap.add_argument("--jobs", type=int, default=default_jobs())
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little") // 2
    grid = plan_grid([Path(p) for p in args.spaces]).grid
    asked = Asked.of(grid, frozenset(QUESTIONS), WIDTH)
    print(f"seed {seed} (replay: --seed {seed}); grid of {', '.join(map(str, args.spaces))}")
    t0 = time.perf_counter()
    pred = predicted(DefaultPrior(), grid, asked, seed, range(args.predicted), args.jobs)
    t1 = time.perf_counter()
    obs = observed(DefaultPrior(), grid, asked, seed + 1, range(args.observed), args.jobs)
    t2 = time.perf_counter()
    table = compare(pred, obs)
    print(render(table, seed, seed + 1))
    worst = table["difference"].abs().max()
    print(
        f"largest |difference| {worst:.3f} (goal <= {TOLERANCE}); largest SE of a difference "
        f"{table['difference_se'].max():.3f}; wall {t1 - t0:.0f} s predicted, {t2 - t1:.0f} s observed"
    )


if __name__ == "__main__":
    main()
