"""The analysis against many synthetic worlds with a known truth: the figures the transfer analysis is held to.

    .venv/bin/python benchmarks/synthetic_truth.py [--worlds 40] [--seed S] [--seeds-per-config 2] [--bootstrap 200]

Each world is a fresh draw of sweep_engine.analysis.synthetic's default prior (scratch curves with a pre-power
phase, two languages with different k, D_T = k D_F^alpha N^beta, 0.5% run noise, per-document noise), with the
laptop grid (4 sizes x 6 D_F over 3 orders of magnitude, two LR arms). Its ledger goes through the real
analysis (cells chosen on validation, reported on test, paired document bootstrap, monotone scratch curves,
loss-domain transfer law), and the answers are scored against the truth. Printed: the criteria of the issue
"Trustworthy transfer measurement", each as a count and a share. The seed is printed; --seed replays a run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.resample import replicate_cells
from sweep_engine.analysis.synthetic import LAPTOP_GRID, Grid, Score, draw_world, make_ledger, score
from sweep_engine.analysis.transfer import analyze_transfer

FIELDS = (
    "contradictions",
    "clear_gaps",
    "covered",
    "coverable",
    "close",
    "closable",
    "ranked",
    "rankable",
    "misranked_resolved",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, default=40)
    ap.add_argument("--seed", type=int, default=None, help="default: a fresh random seed (printed)")
    ap.add_argument(
        "--seeds-per-config", type=int, default=2, help="seeds per (cell, LR); 3 at the smallest D_F"
    )
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    k = args.seeds_per_config
    grid = Grid(**{**LAPTOP_GRID.__dict__, "seeds": k, "seeds_smallest": 3 if k > 1 else None})
    print(f"seed {seed}; {args.worlds} worlds; {k} seed(s) per configuration; {args.bootstrap} replicates")
    total, laws, t0 = Score(), {}, time.perf_counter()
    for w in range(args.worlds):
        rng = np.random.default_rng([seed, w])
        world = draw_world(rng)
        ledger = make_ledger(world, grid, rng)
        cells = best_cells(ledger)
        reps = replicate_cells(cells, ledger, bootstrap=args.bootstrap, seed=w)
        s = score(analyze_transfer(cells, reps), world, grid)
        for f in FIELDS:
            setattr(total, f, getattr(total, f) + getattr(s, f))
        for verdict in s.law.values():
            laws[verdict] = laws.get(verdict, 0) + 1
    n_laws = sum(laws.values())

    def share(a: int, b: int) -> str:
        return f"{a}/{b} = {a / b:.1%}" if b else "n/a"

    print(
        f"sign of D_T against a gap > 3 SD:        {total.contradictions} contradictions in {total.clear_gaps} clear gaps (goal 0)"
    )
    print(
        f"95% D_T interval covers the truth:       {share(total.covered, total.coverable)} of cells with D_E in the scratch range (goal >= 80%)"
    )
    print(
        f"D_T within 1.5x of the truth:            {share(total.close, total.closable)} of cells with true D_T >= D_F (goal >= 80%)"
    )
    print(
        f"larger-k language first at smallest D_F: {share(total.ranked, total.rankable)} of (world, size) (goal all)"
    )
    print(
        f"transfer law (alpha, beta):              {laws.get('close', 0)} within 0.2, {laws.get('covered', 0)} inside "
        f"an interval <= 0.8 wide, {laws.get('not identified', 0)} not identified, {laws.get('wrong', 0)} wrong "
        f"(of {n_laws} language-worlds; goal: wrong no more often than 95% intervals miss)"
    )
    print(
        f"time: {time.perf_counter() - t0:.0f} s ({(time.perf_counter() - t0) / args.worlds:.1f} s per world)"
    )


if __name__ == "__main__":
    main()
