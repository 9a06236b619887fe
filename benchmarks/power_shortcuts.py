"""What `plan --power`'s shortcuts change: its answers against the full analysis', on the same ledgers.

    .venv/bin/python benchmarks/power_shortcuts.py [--worlds 30] [--seed S] [SPACE ...]

`plan --power` analyses each simulated ledger with BOOTSTRAP replicates and without the joint fits of
regimes.py (they only label cells "beyond low-data", which the law then leaves out). Here every world's ledger
(default: the laptop spaces german + chinese, every document simulated) is analysed both ways: the power path,
and `pipeline.analyze_ledger` as `sweep-engine analyze SPACE` runs it (the space's analysis settings: its joint
forms and 200 replicates). Printed per
question group: the share resolved each way, the paired difference with its SE, and how often the two agree.
Also timed: seconds per world of each path, measured side by side.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.commands import options_of
from sweep_engine.analysis.pipeline import analyze_ledger
from sweep_engine.analysis.power.calibrate import group_shares
from sweep_engine.analysis.power.grid import plan_grid
from sweep_engine.analysis.power.prior import DefaultPrior
from sweep_engine.analysis.power.questions import QUESTIONS, Outcome, d_t_answers, law_answers, order_answers
from sweep_engine.analysis.power.simulate import BOOTSTRAP, Asked
from sweep_engine.analysis.resample import replicate_cells
from sweep_engine.analysis.synthetic import make_ledger
from sweep_engine.analysis.transfer import TransferAnalysis, analyze_transfer

REPO = Path(__file__).resolve().parent.parent


def score(ta: TransferAnalysis, world: object, asked: Asked) -> Outcome:
    return Outcome(
        d_t=d_t_answers(ta, asked.cells),
        order=order_answers(ta, world, asked.sizes, min(asked.d_f)),  # type: ignore[arg-type]
        law=law_answers(ta, world, asked.width),  # type: ignore[arg-type]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "spaces",
        nargs="*",
        default=[str(REPO / "search_spaces" / f"{n}.yaml") for n in ("german", "chinese")],
    )
    ap.add_argument("--worlds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=None, help="default: a fresh random seed (printed)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    planned = plan_grid([Path(p) for p in args.spaces])
    grid = planned.grid
    space_options = options_of(planned.spaces[0].analysis)  # what `analyze SPACE` would use
    asked = Asked.of(grid, frozenset(QUESTIONS), 0.2)
    fast, full, t_fast, t_full = [], [], 0.0, 0.0
    for w in range(args.worlds):
        world = DefaultPrior().draw(np.random.default_rng([seed, w]), grid)
        ledger = make_ledger(world, grid, np.random.default_rng([seed, w, 1]))
        t0 = time.process_time()
        cells = best_cells(ledger)
        ta = analyze_transfer(cells, replicate_cells(cells, ledger, bootstrap=BOOTSTRAP, seed=w))
        fast.append(score(ta, world, asked))
        t1 = time.process_time()
        options = replace(space_options, seed=w)
        full.append(score(analyze_ledger(ledger, options).transfer, world, asked))
        t_fast, t_full = t_fast + t1 - t0, t_full + time.process_time() - t1
    print(f"seed {seed}; {args.worlds} worlds of {', '.join(grid.languages or ())} ({len(grid.sizes)} sizes x "
          f"{len(grid.d_f)} D_F); power path {BOOTSTRAP} replicates, no joint fits; full analysis as `analyze` "
          f"runs it for the space: {space_options.bootstrap} replicates, laws {list(space_options.laws)}")  # fmt: skip
    a, b = group_shares(fast, asked), group_shares(full, asked)
    print(f"{'question group':<48} {'power path':>10} {'full':>8} {'difference':>16}")
    for name in a:
        d = a[name] - b[name]
        se = float(d.std(ddof=1) / math.sqrt(d.size))
        print(f"{name:<48} {a[name].mean():>10.3f} {b[name].mean():>8.3f} {d.mean():>+8.3f} ± {se:.3f}")
    agree = np.mean([f.law == g.law for f, g in zip(fast, full, strict=True)])
    print(f"law answers identical in {agree:.0%} of worlds")
    print(f"CPU seconds per world: power path {t_fast / args.worlds:.2f}, full analysis {t_full / args.worlds:.2f} "
          f"(ratio {t_full / t_fast:.1f}x, measured side by side)")  # fmt: skip


if __name__ == "__main__":
    main()
