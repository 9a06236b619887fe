"""Regime labels: the measured slope leads, bounded joint fits second, low-data from D(N) with an interval."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sweep_engine.analysis.allocation import allocation_table, holdout_largest
from sweep_engine.analysis.regimes import (
    Regimes,
    classify,
    degenerate,
    fit_joint,
    low_data_label,
    low_data_table,
)


@pytest.fixture(scope="module")
def regimes(cells: pd.DataFrame) -> Regimes:
    joint, notes = fit_joint(cells, bootstrap=30, seed=0)
    return classify(cells, joint, notes, low_data_table(cells, joint))


def test_every_cell_gets_every_label_with_its_number(regimes: Regimes, cells: pd.DataFrame) -> None:
    t = regimes.table
    assert len(t) == len(cells)
    for col in (
        "slope_label",
        "slope_log_n",
        "joint_label",
        "convergence",
        "low_data",
        "kaplan_bound",
        "on_frontier",
    ):
        assert t[col].notna().all(), col
    assert set(t["low_data"]) <= {"low-data", "beyond low-data", "unknown"}


def test_the_measured_slope_leads(regimes: Regimes) -> None:
    t = regimes.table
    assert (t["limited_by"] == t["slope_label"]).all()
    flat = t["slope_log_n"] > -0.01
    assert (t.loc[flat, "slope_label"] == "data-limited (flat in N)").all()
    assert (t.loc[~flat & t["slope_log_n"].notna(), "slope_label"] == "parameter-limited").all()


def test_joint_fits_are_bounded_and_chosen_by_aic(regimes: Regimes) -> None:
    assert set(regimes.joint) == {(lang, init) for lang in ("de", "zh") for init in ("scratch", "finetune")}
    for key, fit in regimes.joint.items():
        exps = ("alpha_N", "alpha_D") if fit.law == "kaplan" else ("alpha", "beta")
        assert all(0 < fit.params[e] <= 2.0 for e in exps)
        assert "by AIC" in regimes.joint_notes[key]
        assert regimes.degenerate[key] == degenerate(fit)


def test_a_degenerate_fit_labels_nothing(regimes: Regimes, cells: pd.DataFrame) -> None:
    key = ("de", "scratch")
    fit = regimes.joint[key]
    bad = fit.__class__(
        **{
            **fit.__dict__,
            "params": {**fit.params, **({"alpha": 1.9} if fit.law == "chinchilla" else {"alpha_N": 1.9})},
        }
    )
    assert degenerate(bad)
    joint = {**regimes.joint, key: bad}
    r = classify(cells, joint, regimes.joint_notes, low_data_table(cells, joint))
    rows = r.table[(r.table["language"] == "de") & (r.table["init"] == "scratch")]
    assert rows["joint_label"].str.startswith("unknown").all()
    assert rows["low_data"].eq("unknown").all()  # D(N) comes from the scratch joint fit


def test_low_data_is_unknown_where_d_99_straddles_the_threshold() -> None:
    assert low_data_label(100.0, 2000.0, 5000.0) == "low-data"
    assert low_data_label(1000.0, 2000.0, 5000.0) == "beyond low-data"
    assert low_data_label(300.0, 2000.0, 5000.0) == "unknown"
    assert low_data_label(300.0, math.nan, math.nan) == "unknown"


def test_budget_runs_still_falling_are_under_trained(cells: pd.DataFrame) -> None:
    c = cells.copy()
    c.loc[c.index[:3], "stop_reason"] = "budget"
    c.loc[c.index[:3], "still_falling"] = True
    joint, notes = fit_joint(c, bootstrap=0, seed=0)
    t = classify(c, joint, notes, low_data_table(c, joint)).table
    assert (t["convergence"].iloc[:3] == "under-trained (budget)").all()
    assert t["convergence"].iloc[3:].str.startswith("converged").all()


def test_compute_is_counted_to_the_best_step_and_the_frontier_is_its_envelope(
    regimes: Regimes, cells: pd.DataFrame
) -> None:
    t = regimes.table
    np.testing.assert_allclose(t["flops"], 6.0 * cells["n_params"] * cells["tokens_at_best"])
    for _, g in t.groupby(["language", "init"]):
        front = g[g["on_frontier"]].sort_values("flops")
        assert (np.diff(front["loss"].to_numpy()) < 0).all()
        cheapest = g.sort_values(["flops", "loss"]).iloc[0]
        assert bool(cheapest["on_frontier"])


def test_holdout_and_allocation_say_unreachable(cells: pd.DataFrame, regimes: Regimes) -> None:
    h = holdout_largest(cells, bootstrap=0, seed=0)
    assert set(h["init"]) == {"scratch", "finetune"} and (h["rmsd_log"] < 0.2).all()
    usable = {k: f for k, f in regimes.joint.items() if not regimes.degenerate[k]}
    a = allocation_table(cells, usable, targets={"de": [0.5, 4.5]})
    assert set(a["reachable"]) <= {
        "both",
        "only with pre-training",
        "only from scratch (unreachable with pre-training)",
        "unreachable",
    }
    assert (a.loc[a["target_loss"] == 0.5, "reachable"] == "unreachable").all()
    assert a.loc[a["reachable"] == "unreachable", "pretraining_worth"].isna().all()
