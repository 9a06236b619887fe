"""plan --power is calibrated: its predicted probabilities match observed frequencies on fresh worlds.

Predicted: the power path on N worlds of the default prior. Observed: M fresh worlds (another seed), analysed
as `analyze` would (every document, 200 replicates). Per question group the two must agree within 10 points
(calibrate.py states the method). The worlds are drawn in batches: when a group misses by more than 10 points
while its Monte Carlo SE is too large to say so (more than a third of the tolerance), both sides get more worlds,
up to MOST; a real miscalibration still fails then. The seed is fresh on every run and printed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep_engine.analysis.power.calibrate import TOLERANCE, compare, merge, observed, predicted, render
from sweep_engine.analysis.power.grid import plan_grid
from sweep_engine.analysis.power.prior import DefaultPrior
from sweep_engine.analysis.power.questions import QUESTIONS, WIDTH
from sweep_engine.analysis.power.simulate import Asked

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"
FIRST, MOST = 60, 240


@pytest.mark.slow
def test_predicted_probabilities_match_observed_frequencies(fresh_seed: int) -> None:
    grid = plan_grid([SPACES / "german.yaml", SPACES / "chinese.yaml"]).grid
    asked = Asked.of(grid, frozenset(QUESTIONS), WIDTH)
    seed_p, seed_o = fresh_seed, fresh_seed + 1
    pred, obs, n = {}, {}, 0  # type: ignore[var-annotated]
    batch = FIRST
    while True:
        worlds = range(n, n + batch)
        pred = merge(pred, predicted(DefaultPrior(), grid, asked, seed_p, worlds, jobs=2))
        obs = merge(obs, observed(DefaultPrior(), grid, asked, seed_o, worlds, jobs=2))
        n += batch
        table = compare(pred, obs)
        print(render(table, seed_p, seed_o))
        off = table[table["difference"].abs() > TOLERANCE]
        if off.empty or n >= MOST or (off["difference_se"] <= TOLERANCE / 3).all():
            break
        batch = n  # double the worlds
    assert set(table["group"]) >= {"ordering at the smallest D_F", "law identified", "D_T > 0, every cell"}
    assert (table["difference"].abs() <= TOLERANCE).all(), table.to_string()
