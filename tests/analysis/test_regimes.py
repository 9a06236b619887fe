"""Regime labels and the numbers behind them, on a ledger that follows known laws."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from sweep_engine.analysis.allocation import allocation_table, holdout_largest
from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.regimes import Regimes, _convergence, _final_fall, classify, fit_joint
from sweep_engine.analysis.transfer import analyze_transfer

from .conftest import make_ledger


@pytest.fixture(scope="module")
def cells() -> pd.DataFrame:
    return best_cells(make_ledger("de", seed=1))


@pytest.fixture(scope="module")
def regimes(cells: pd.DataFrame) -> Regimes:
    return classify(cells, analyze_transfer(cells, bootstrap=0), bootstrap=0, seed=0)


def test_every_cell_gets_every_label_with_its_number(regimes: Regimes, cells: pd.DataFrame) -> None:
    t = regimes.table
    assert len(t) == len(cells)
    for label, number in [
        ("limited_by", "param_term_share"),
        ("slope_label", "slope_log_n"),
        ("convergence", "final_fall"),
        ("low_data", "d_f_over_d_99"),
        ("kaplan_bound", "d_over_kaplan_bound"),
    ]:
        assert t[label].notna().all() and not (t[label] == "unknown").any(), label
        assert np.isfinite(t[number]).all(), number
    assert ((t["param_term_share"] > 0.5) == (t["limited_by"] == "parameter-limited")).all()


def test_the_joint_fit_is_the_better_of_the_two_forms(regimes: Regimes) -> None:
    # The data follow E + A/N^alpha + B/D^beta: Chinchilla's form, which Kaplan's (no E) cannot match.
    fit = regimes.joint[("de", "scratch")]
    assert fit.law == "chinchilla"
    assert fit.params["alpha"] == pytest.approx(0.3, abs=0.03)
    assert fit.params["beta"] == pytest.approx(0.3, abs=0.03)
    assert "kaplan" in regimes.joint_notes[("de", "scratch")]
    # Scratch: at D_F = 1e4 the data term (45/1e4^0.3 = 2.8) dwarfs the N term (60/2e5^0.3 = 1.5).
    t = regimes.table
    small = t[(t["init"] == "scratch") & (t["d_f"] == 1e4) & (t["n_params"] == 2e5)].iloc[0]
    assert small["limited_by"] == "data-limited"
    assert small["param_term_share"] == pytest.approx(1.54 / (1.54 + 2.84), abs=0.05)


def test_slope_in_log_n_is_measured_at_fixed_d_f(regimes: Regimes, cells: pd.DataFrame) -> None:
    t = regimes.table
    g = cells[(cells["init"] == "scratch") & (cells["d_f"] == 1e6)].sort_values("n_params")
    expected = np.gradient(np.log(g["best_val_loss"]), np.log(g["n_params"]))
    got = t[(t["init"] == "scratch") & (t["d_f"] == 1e6)].sort_values("n_params")["slope_log_n"]
    np.testing.assert_allclose(got, expected)
    assert (got < -0.01).all()  # loss still falls with N: parameter-limited by the slope


def test_budget_runs_still_falling_are_under_trained(regimes: Regimes) -> None:
    t = regimes.table
    budget = t[(t["init"] == "scratch") & (t["d_f"] >= 1e7)]
    assert (budget["convergence"] == "under-trained (budget)").all()
    assert (budget["final_fall"] > 0.005).all()
    rest = t[~t.index.isin(budget.index)]
    assert (rest["convergence"] == "converged (overfit)").all()


def test_convergence_without_a_curve_uses_where_the_best_step_fell() -> None:
    row = pd.Series({"stop_reason": "budget", "curve": None, "tokens_at_best": 95, "tokens_seen": 100})
    assert _convergence(row)["convergence"] == "under-trained (budget)"
    row["tokens_at_best"] = 40
    assert _convergence(row)["convergence"] == "converged (budget, flat)"
    assert _convergence(pd.Series({**row, "stop_reason": "diverged"}))["convergence"] == "diverged"
    curve = json.dumps(
        [{"tokens": t, "val_loss": v} for t, v in [(0, 5.0), (50, 4.0), (75, 3.0), (100, 2.7)]]
    )
    assert _final_fall(curve) == pytest.approx(0.1)
    assert math.isnan(_final_fall("not json"))


def test_kaplan_bound_and_low_data_numbers(regimes: Regimes) -> None:
    t = regimes.table
    np.testing.assert_allclose(t["d_over_kaplan_bound"], t["d_f"] / (5e3 * t["n_params"] ** 0.74))
    assert ((t["d_over_kaplan_bound"] >= 1) == t["kaplan_bound"].str.startswith("above")).all()
    assert (t["low_data"] == "low-data").all()  # D(N) ~ 1e10 tokens, far above every D_F here
    np.testing.assert_allclose(t["d_f_over_d_99"], t["d_f"] / t["d_99"])


def test_compute_frontier_is_the_lower_envelope(regimes: Regimes) -> None:
    t = regimes.table
    for _, g in t.groupby(["language", "init"]):
        g = g.sort_values("flops")
        for _, r in g[g["on_frontier"]].iterrows():
            cheaper = g[g["flops"] < r["flops"]]
            assert (cheaper["best_val_loss"] > r["best_val_loss"]).all()
        best = g.loc[g["best_val_loss"].idxmin()]
        assert best["on_frontier"]
    assert t["on_frontier_both_inits"].sum() >= 1


@pytest.mark.slow
def test_holdout_and_allocation(cells: pd.DataFrame, regimes: Regimes) -> None:
    h = holdout_largest(cells)
    assert set(h["init"]) == {"scratch", "finetune"}
    assert (h["held_out_n"] == 3.2e6).all()
    scratch = h[h["init"] == "scratch"].iloc[0]
    fits, _ = fit_joint(cells, bootstrap=0, seed=0, exclude_largest=True)
    top = cells[(cells["init"] == "scratch") & (cells["n_params"] == 3.2e6)]
    pred = fits[("de", "scratch")].predict(n=top["n_params"].to_numpy(float), d=top["d_f"].to_numpy(float))
    err = np.log(pred) - np.log(top["best_val_loss"].to_numpy())
    assert scratch["n_points"] == 5
    assert scratch["rmsd_log"] == pytest.approx(float(np.sqrt(np.mean(err**2))))
    assert scratch["max_rel_error"] == pytest.approx(float(np.max(np.abs(np.expm1(err)))))
    alloc = allocation_table(cells, regimes.joint, targets={"de": [3.0]})
    assert list(alloc["n_params"]) == [2e5, 8e5, 3.2e6]
    big = alloc[alloc["n_params"] == 3.2e6].iloc[0]
    # Pre-training is worth data: the fine-tuned law reaches the target with fewer target-language tokens.
    assert big["d_finetune"] < big["d_scratch"]
    assert big["pretraining_worth"] == pytest.approx(big["d_scratch"] - big["d_finetune"])
    assert big["pretraining_worth_chars"] == pytest.approx(4.0 * big["pretraining_worth"])
    assert alloc["cheapest"].sum() == 1


def test_joint_fit_needs_enough_cells(cells: pd.DataFrame) -> None:
    fits, notes = fit_joint(cells[cells["d_f"] <= 1e4], bootstrap=0, seed=0)
    assert fits == {}
    assert "need 6" in notes[("de", "scratch")]
