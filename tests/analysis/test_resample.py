"""The paired document bootstrap and the run-to-run noise behind every interval."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.resample import (
    CellReplicates,
    parse_doc_losses,
    percentile_interval,
    replicate_cells,
)
from sweep_engine.analysis.synthetic import LAPTOP_GRID, Grid, World, make_ledger, with_noise


def test_column_zero_is_the_measurement(cells: pd.DataFrame, reps: CellReplicates) -> None:
    np.testing.assert_allclose(reps.loss[:, 0], cells["loss"])
    np.testing.assert_allclose(reps.bpc[:, 0], cells["bpc"])
    assert reps.loss.shape == (len(cells), 101)
    assert reps.docs == {"de": 200, "zh": 200}


def test_doc_losses_rebuild_the_run_loss(ledger: pd.DataFrame) -> None:
    row = ledger[ledger["stage"] == "transfer"].iloc[3]
    test = parse_doc_losses(row["doc_losses"], "test")
    assert test is not None and len(test.keys) == 200
    assert test.loss.sum() / test.tokens.sum() == pytest.approx(row["test_loss"])
    assert parse_doc_losses("{not json", "test") is None
    assert parse_doc_losses(json.dumps({"val": {}}), "test") is None


def test_every_cell_sees_the_same_document_draw(world: World, grid: Grid) -> None:
    """Paired: without run or document-by-run noise, every run's document losses are proportional to one
    vector per language, so one shared draw moves every cell of the language by the same factor."""
    led = make_ledger(with_noise(world, run_noise=0.0, doc_noise=0.0), grid, np.random.default_rng(2))
    c = best_cells(led)
    reps = replicate_cells(c, led, bootstrap=40, seed=1)
    assert reps.run_noise == pytest.approx(0.0, abs=1e-12)
    for lang in ("de", "zh"):
        ratio = (
            reps.loss[(c["language"] == lang).to_numpy(), 1:]
            / reps.loss[(c["language"] == lang).to_numpy(), :1]
        )
        np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0], ratio.shape), rtol=1e-9)
        assert ratio[0].std() > 1e-4  # and the draws do move


def test_run_noise_is_pooled_over_repeated_seeds(world: World) -> None:
    quiet = with_noise(world, run_noise=0.0, doc_noise=0.0)
    noisy = with_noise(world, run_noise=0.02, doc_noise=0.0)
    grid = Grid(**{**LAPTOP_GRID.__dict__, "seeds": 3, "seeds_smallest": None})
    for w, lo, hi in ((quiet, 0.0, 1e-9), (noisy, 0.016, 0.024)):
        led = make_ledger(w, grid, np.random.default_rng(3))
        r = replicate_cells(best_cells(led), led, bootstrap=10, seed=0)
        assert lo <= r.run_noise <= hi, (r.run_noise, r.run_noise_source)
        assert "repeated seeds" in r.run_noise_source


def test_without_repeated_seeds_the_noise_comes_from_the_curves(world: World) -> None:
    grid = Grid(**{**LAPTOP_GRID.__dict__, "seeds": 1, "seeds_smallest": None})
    led = make_ledger(with_noise(world, run_noise=0.02, doc_noise=0.0), grid, np.random.default_rng(4))
    r = replicate_cells(best_cells(led), led, bootstrap=10, seed=0)
    assert "scratch" in r.run_noise_source
    assert 0.01 < r.run_noise < 0.05  # misfit makes it conservative, never blind


def test_intervals_use_order_statistics() -> None:
    reps = np.array([[0.0, 1.0, 2.0, 3.0, np.inf]])
    lo, hi = percentile_interval(reps)
    assert lo[0] == 1.0 and math.isinf(hi[0])
