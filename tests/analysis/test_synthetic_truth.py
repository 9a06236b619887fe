"""The analysis against synthetic worlds it was not tuned on: a fresh seed on every run (printed).

Each world is drawn from the default prior (scratch curves with a pre-power phase, two languages with
different k, 4 sizes x 6 D_F over 3 orders of magnitude, two LR arms, seeds, 0.5% run noise, per-document
noise); its ledger goes through the real analysis, and the issue's criteria are checked over all the worlds
together. `benchmarks/synthetic_truth.py` runs the same over many more worlds and prints the figures.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.resample import replicate_cells
from sweep_engine.analysis.synthetic import LAPTOP_GRID, Grid, Score, draw_world, make_ledger, score
from sweep_engine.analysis.transfer import analyze_transfer


def run_worlds(seed: int, worlds: int, grid: Grid, bootstrap: int = 100) -> tuple[Score, dict[str, int]]:
    total, laws = Score(), {}
    for k in range(worlds):
        rng = np.random.default_rng([seed, k])
        world = draw_world(rng)
        led = make_ledger(world, grid, rng)
        cells = best_cells(led)
        s = score(
            analyze_transfer(cells, replicate_cells(cells, led, bootstrap=bootstrap, seed=k)), world, grid
        )
        for f in (
            "contradictions",
            "clear_gaps",
            "covered",
            "coverable",
            "close",
            "closable",
            "ranked",
            "rankable",
        ):
            setattr(total, f, getattr(total, f) + getattr(s, f))
        for verdict in s.law.values():
            laws[verdict] = laws.get(verdict, 0) + 1
    print(f"worlds {worlds}: {total}, laws {laws}")
    return total, laws


@pytest.mark.parametrize("seeds", [2, 1])
def test_fresh_worlds_meet_the_criteria(fresh_seed: int, seeds: int) -> None:
    grid = Grid(**{**LAPTOP_GRID.__dict__, "seeds": seeds, "seeds_smallest": 3 if seeds > 1 else None})
    s, laws = run_worlds(fresh_seed, 5, grid)
    assert s.contradictions == 0
    assert s.covered >= 0.8 * s.coverable
    assert s.closable == 0 or s.close >= 0.8 * s.closable
    # The larger-k language comes first; where noise swaps a near-tie, the pair must be reported unresolved.
    assert s.misranked_resolved == 0
    assert s.ranked >= 0.8 * s.rankable
    # An identified law is right (within 0.2, or the truth inside an interval <= 0.8 wide) unless its 95%
    # intervals miss, which they may at their nominal rate: 0 of 80 in benchmarks/synthetic_truth.py --seed 1234.
    assert laws.get("wrong", 0) <= 1
    assert laws.get("close", 0) + laws.get("covered", 0) >= 0.5 * sum(laws.values())


def test_coverage_is_not_bought_with_useless_intervals(fresh_seed: int) -> None:
    """The intervals cover, and they are also narrow enough to say something: D_T's 95% interval is within
    a factor of 3 of the point where the true D_T >= D_F."""
    rng = np.random.default_rng(fresh_seed)
    world = draw_world(rng)
    led = make_ledger(world, LAPTOP_GRID, rng)
    cells = best_cells(led)
    ta = analyze_transfer(cells, replicate_cells(cells, led, bootstrap=100, seed=0))
    for lt in ta.languages.values():
        t = lt.table[(lt.table["d_t"] >= lt.table["d_f"]) & (lt.table["position"] == "inside")]
        assert (t["d_t_hi"] / t["d_t"] < 3).all() and (t["d_t_lo"] > 0).all()
        assert math.isfinite(float(t["d_t_hi"].max())) if len(t) else True
