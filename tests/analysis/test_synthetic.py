"""The synthetic ledger generator: what a grid says reaches the ledger, and grids share the runs they share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep_engine.analysis.synthetic import LAPTOP_GRID, Grid, World, make_ledger


def _ledger(world: World, grid: Grid, seed: int = 3) -> pd.DataFrame:
    led = make_ledger(world, grid, np.random.default_rng(seed))
    return led[led["stage"] == "transfer"].set_index("trial_key")


def test_grids_in_one_world_share_the_noise_of_shared_runs(world: World) -> None:
    """One more seed (or D_F) leaves every other run's measurement as it was: common random numbers."""
    base = Grid(**{**LAPTOP_GRID.__dict__, "seeds": 1, "seeds_smallest": None})
    more = Grid(**{**base.__dict__, "seeds": 2, "d_f": (100.0, *base.d_f)})
    a, b = _ledger(world, base), _ledger(world, more)
    assert len(b) > len(a) and set(a.index) <= set(b.index)
    cols = ["best_val_loss", "test_loss", "doc_losses"]
    pd.testing.assert_frame_equal(a[cols], b.loc[a.index, cols])
    # The new seed of a configuration is a draw of its own, not a copy of seed 0.
    second = [k for k in b.index if k.endswith("-1")]
    first = [k[:-1] + "0" for k in second]
    assert (b.loc[second, "test_loss"].to_numpy() != b.loc[first, "test_loss"].to_numpy()).all()


def test_grid_arms_languages_and_splits_reach_the_ledger(world: World) -> None:
    grid = Grid(
        **{
            **LAPTOP_GRID.__dict__,
            "lrs": (1e-3,),
            "schedules": ("cosine", "linear"),
            "seeds": 1,
            "seeds_smallest": 2,
            "languages": ("zh",),
            "record_val_docs": False,
        }  # fmt: skip
    )
    led = _ledger(world, grid)
    assert set(led["language"]) == {"zh"} and set(led["schedule_kind"]) == {"cosine", "linear"}
    smallest = led["d_f"] == min(grid.d_f)
    assert set(led.loc[smallest, "seed"]) == {0, 1} and set(led.loc[~smallest, "seed"]) == {0}
    assert all('"val"' not in d and '"test"' in d for d in led["doc_losses"])
    # Both arms of every cell ran: one configuration is chosen among two.
    assert (led.groupby(["n_params", "d_f", "init"])["schedule_kind"].nunique() == 2).all()


def test_a_grid_without_a_test_split_reports_validation(world: World) -> None:
    from sweep_engine.analysis.cells import best_cells

    grid = Grid(**{**LAPTOP_GRID.__dict__, "test_docs": 0})
    cells = best_cells(make_ledger(world, grid, np.random.default_rng(1)))
    assert set(cells["split"]) == {"val"}
