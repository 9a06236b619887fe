"""Per fine-tuned cell: the paired gap, D_E on the monotone scratch curve, D_T and D_F / D_E, with flags."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.resample import CellReplicates, replicate_cells
from sweep_engine.analysis.synthetic import LAPTOP_GRID, Grid, World, make_ledger, truth_table
from sweep_engine.analysis.transfer import TransferAnalysis, analyze_transfer, unit_basis


@pytest.fixture(scope="module")
def transfer(cells: pd.DataFrame, reps: CellReplicates) -> TransferAnalysis:
    return analyze_transfer(cells, reps)


def _with_truth(t: pd.DataFrame, world: World, grid: Grid, lang: str) -> pd.DataFrame:
    truth = truth_table(world, grid)
    return t.merge(truth[truth["language"] == lang], on=["n_params", "d_f"], suffixes=("", "_true"))


def test_gap_is_the_paired_difference_and_covers_the_truth(
    transfer: TransferAnalysis, world: World, grid: Grid
) -> None:
    t = _with_truth(transfer.languages["de"].table, world, grid, "de")
    np.testing.assert_allclose(t["gap"], t["loss"] - t["scratch_loss"])
    inside = (t["gap_lo"] <= t["gap_true"]) & (t["gap_true"] <= t["gap_hi"])
    assert inside.mean() >= 0.8


def test_d_t_never_contradicts_the_gap_inside_the_range(transfer: TransferAnalysis) -> None:
    for lt in transfer.languages.values():
        t = lt.table[lt.table["position"] == "inside"]
        helps, hurts = t["gap"] < 0, t["gap"] > 0
        assert (t.loc[helps, "d_t"] > 0).all() and (t.loc[hurts, "d_t"] < 0).all()


def test_d_t_and_its_units(transfer: TransferAnalysis, world: World, grid: Grid) -> None:
    lt = transfer.languages["de"]
    assert lt.basis == "tokens"
    t = _with_truth(lt.table, world, grid, "de")
    np.testing.assert_allclose(t["d_t"], t["d_e"] - t["d_f"])
    np.testing.assert_allclose(t["fraction"], t["d_f"] / t["d_e"])
    np.testing.assert_allclose(t["d_t_chars"], t["d_e_chars"] - t["d_f_chars"])
    np.testing.assert_allclose(t["d_e_chars"] / t["d_e"], t["chars_per_token"])
    strong = t[(t["d_t_true"] >= t["d_f"]) & (t["position"] == "inside")]
    assert len(strong) >= 1
    assert np.abs(np.log(strong["d_t"] / strong["d_t_true"])).max() < math.log(1.5)


def test_out_of_range_d_e_is_a_flagged_bound(transfer: TransferAnalysis) -> None:
    t = pd.concat([lt.table for lt in transfer.languages.values()])
    out = t[t["position"] != "inside"]
    assert out["extrapolated"].all() and (out["bound"] != "").all()
    above = t[t["position"] == "above"]
    assert (above["d_e"] > above["scratch_range"].map(lambda r: r[1])).all()
    assert (t.loc[t["position"] == "inside", "bound"] == "").all()


def test_budget_cut_scratch_runs_stay_out_of_the_curve(world: World) -> None:
    grid = Grid(**{**LAPTOP_GRID.__dict__, "budget_d_f": max(LAPTOP_GRID.d_f)})
    led = make_ledger(world, grid, np.random.default_rng(5))
    c = best_cells(led)
    ta = analyze_transfer(c, replicate_cells(c, led, bootstrap=20, seed=0))
    for curve in ta.languages["de"].curves.values():
        assert max(curve.d) < max(grid.d_f)
        assert [d for d, _ in curve.excluded] == [max(grid.d_f)]
    top = ta.languages["de"].table
    assert top.loc[top["d_f"] == max(grid.d_f), "ft_still_falling"].all()


def test_different_tokenizers_switch_the_inversion_to_bits_per_character(
    cells: pd.DataFrame, ledger: pd.DataFrame
) -> None:
    c = cells[cells["language"] == "de"].copy()
    ft = c["init"] == "finetune"
    c.loc[ft, "val_tokens_per_char"] *= 1.3  # the fine-tuned runs use another tokenizer
    c.loc[ft, "loss"] /= 1.3  # ... so their loss per token is not comparable, their bpc is
    assert unit_basis(c) == "chars"
    reps = replicate_cells(c.reset_index(drop=True), ledger, bootstrap=0, seed=0)
    t = analyze_transfer(c.reset_index(drop=True), reps).languages["de"].table
    assert t["gap"].isna().all() and t["gap_bpc"].notna().all()
    assert (t["d_e_chars"] > 0).any()


def test_no_bootstrap_gives_points_without_intervals(cells: pd.DataFrame, ledger: pd.DataFrame) -> None:
    reps = replicate_cells(cells, ledger, bootstrap=0, seed=0)
    t = analyze_transfer(cells, reps).languages["de"].table
    assert t["d_t"].notna().all() and t["d_t_lo"].isna().all()
    assert not analyze_transfer(cells, reps).languages["de"].law.identified  # type: ignore[union-attr]


def test_languages_are_ranked_by_d_f_over_d_e(transfer: TransferAnalysis, world: World) -> None:
    cmp = transfer.comparison
    stronger = max(world.languages, key=lambda g: world.languages[g].k)
    assert cmp.iloc[0]["language"] == stronger and cmp.iloc[0]["transfer_rank"] == 1
