"""The default prior keeps the claims it is built on (docs/power.md), in every world it draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep_engine.analysis.power.prior import DefaultPrior, TransferPrior, grid_refs
from sweep_engine.analysis.synthetic import LAPTOP_GRID, Grid

GRID = Grid(**{**LAPTOP_GRID.__dict__, "languages": ("zh", "es", "de")})


def test_every_world_keeps_the_seed_claims(fresh_seed: int) -> None:
    prior = DefaultPrior()
    n_ref, d_ref = grid_refs(GRID)
    alphas = []
    for w in range(200):
        world = prior.draw(np.random.default_rng([fresh_seed, w]), GRID)
        assert list(world.languages) == ["zh", "es", "de"]
        t = world.languages
        assert all(0 < x.alpha < 1 and x.beta > 0 for x in t.values())
        ratio = {g: float(world.d_t(g, n_ref, d_ref)) / d_ref for g in t}
        lo, hi = prior.transfer.ratio
        assert lo <= ratio["de"] <= hi
        step_lo, step_hi = prior.transfer.step
        for a, b in (("de", "es"), ("es", "zh")):
            assert (
                step_lo <= ratio[a] / ratio[b] <= step_hi
            )  # German > Spanish > Chinese, by the stated ratios
        alphas.append(t["de"].alpha)
    # Centred on Hernandez et al.'s text->code exponent (truncation moves the mean by < 0.01).
    se = float(np.std(alphas) / math.sqrt(len(alphas)))
    assert abs(float(np.mean(alphas)) - TransferPrior().alpha[0]) < 0.01 + 4 * se


def test_scratch_surface_is_scaled_to_the_grid() -> None:
    """The same draws on a grid 1000x larger in N and D give the same curve shape relative to the grid."""
    big_grid = Grid(**{**GRID.__dict__, "sizes": {k: v * 1000 for k, v in GRID.sizes.items()},
                       "d_f": tuple(d * 1000 for d in GRID.d_f)})  # fmt: skip
    drops = []
    for grid in (GRID, big_grid):
        world = DefaultPrior().draw(np.random.default_rng(5), grid)
        n_ref, d_ref = grid_refs(grid)
        drops.append(float(world.scratch(n_ref, d_ref) / world.scratch(n_ref, 1e3 * d_ref)))
    assert drops[0] > 1 and drops[1] == pytest.approx(drops[0], rel=1e-9)
