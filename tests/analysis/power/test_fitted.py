"""A prior fitted to a finished sweep: its scratch surface, laws and noise come back from a known world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.power.fitted import fit_prior, fit_scratch
from sweep_engine.analysis.synthetic import LAPTOP_GRID, World, make_ledger, with_noise
from sweep_engine.errors import UserError


def test_the_scratch_surface_is_recovered(world: World) -> None:
    led = make_ledger(
        with_noise(world, run_noise=0.001, doc_noise=0.005), LAPTOP_GRID, np.random.default_rng(0)
    )
    cells = best_cells(led)
    fit = fit_scratch(cells[cells["language"] == "de"])
    fitted = World(**fit.params, languages=world.languages)
    n = np.array(list(LAPTOP_GRID.sizes.values()))[:, None]
    d = np.geomspace(min(LAPTOP_GRID.d_f), max(LAPTOP_GRID.d_f), 20)[None, :]
    # Within 2% over the grid's range (the cells carry 0.1% noise and a worse-LR arm chosen away).
    assert np.max(np.abs(np.log(fitted.scratch(n, d) / world.scratch(n, d)))) < 0.02
    assert fit.rmsd_log < 0.01


@pytest.mark.slow
def test_a_finished_sweep_becomes_a_prior(ledger_dirs: list[Path], world: World) -> None:
    prior = fit_prior(ledger_dirs)
    assert set(prior.chars_per_token) == {"de", "zh"}
    assert prior.chars_per_token["de"] == pytest.approx(world.languages["de"].chars_per_token, rel=0.01)
    # Two and three seeds per configuration: the pooled seed-to-seed SD, near the world's 0.5%.
    assert 0.003 < prior.run_noise < 0.008 and "repeated seeds" in prior.run_noise_source
    for g, boot in prior.laws.items():  # every identified law: its bootstrap replicates, around the truth
        assert boot.shape[1] == 3 and abs(np.median(boot[:, 1]) - world.languages[g].alpha) < 0.2
    drawn = prior.draw(np.random.default_rng(0), LAPTOP_GRID)
    assert set(drawn.languages) == {"de", "zh"} and drawn.run_noise == prior.run_noise
    assert any(line.startswith("fitted to") for line in prior.describe())


def test_a_prior_path_without_a_ledger_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^--prior: .*must hold one of"):
        fit_prior([tmp_path])
    empty = tmp_path / "empty.csv"
    pd.DataFrame(columns=["stage", "language", "init", "n_params", "d_f", "status", "best_val_loss"]).to_csv(
        empty, index=False
    )
    with pytest.raises(UserError, match=r"^--prior: .*no FINISHED transfer runs"):
        fit_prior([empty])
