"""Regime labels for every cell, each with the number behind it (SCIENCE.md, "Regimes").

- parameter- vs data-limited: the larger term of the joint fit (Kaplan's or Chinchilla's, whichever fits
  that (language, init) better), as the parameter term's share; and the measured slope d log L / d log N at fixed D_F (flat = data-limited).
- converged vs budget-limited: the run stopped at its overfitting point or plateau, or the token budget ended
  it while the validation loss still fell (under-trained); the number is the relative fall of the loss over
  the last quarter of the curve.
- low-data regime of the transfer law (D_F <= 10% of D(N)) and Kaplan's overfitting bound D >= 5e3 N^0.74.
- the compute frontier: the lower envelope of loss against C = 6 N tokens_seen, per language and init and
  over both inits (pre-training compute not counted).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sweep_engine.analysis.fit import FitResult, fit_groups
from sweep_engine.analysis.transfer import TransferAnalysis

FLAT_SLOPE = -0.01  # d log L / d log N above this (loss falls < 1% per e-fold of N) counts as flat
STILL_FALLING = 0.005  # a budget-stopped run whose loss fell > 0.5% over its last quarter is under-trained
KAPLAN_OVERFIT = (5e3, 0.74)  # overfitting < 2% when D >= 5e3 N^0.74 (Kaplan et al. 2020)
MIN_JOINT_POINTS = 6  # 4 parameters; two spare points so that a resample is not an exact fit


@dataclass
class Regimes:
    table: pd.DataFrame  # one row per cell (both inits)
    joint: dict[tuple[str, str], FitResult]  # (language, init) -> joint fit (kaplan or chinchilla)
    joint_notes: dict[tuple[str, str], str]


# A coarser grid than Chinchilla's 4,500 starts: a sweep has tens of cells, not hundreds, and each
# (language, init) pair gets its own fit. 5 x 5 x 3 x 3 x 3 = 675 starts.
JOINT_CHINCHILLA_GRID = np.stack(
    [
        m.ravel()
        for m in np.meshgrid(
            [0, 5, 10, 15, 20],
            [0, 5, 10, 15, 20],
            [-1, 0, 1],
            [0.2, 0.5, 1.0],
            [0.2, 0.5, 1.0],
            indexing="ij",
        )
    ],
    axis=-1,
).astype(float)


def fit_joint(
    cells: pd.DataFrame, *, bootstrap: int, seed: int, exclude_largest: bool = False
) -> tuple[dict[tuple[str, str], FitResult], dict[tuple[str, str], str]]:
    """The joint law L(N, D) per (language, init), in nats per token with D in tokens.

    Both Kaplan's form and Chinchilla's are fitted (each as one batch over all pairs); a pair keeps the one
    with the smaller RMSD of log loss. Kaplan's has no irreducible loss, which small models on a finite
    validation set usually show; Chinchilla's has one.

    Args:
        cells: the cell table.
        bootstrap, seed: bootstrap settings.
        exclude_largest: leave out the largest N (for the hold-out check).

    Returns:
        (fits, notes): the chosen fit per pair with enough points; a note for every pair (which law won, or
        why there is no fit).
    """
    keys, groups, notes = [], [], {}
    for (lang, init), c in cells.groupby(["language", "init"], sort=True):
        if exclude_largest:
            c = c[c["n_params"] < c["n_params"].max()]
        key = (str(lang), str(init))
        if len(c) < MIN_JOINT_POINTS or c["n_params"].nunique() < 2 or c["d_f"].nunique() < 2:
            notes[key] = (
                f"{len(c)} cells with {c['n_params'].nunique()} sizes: need {MIN_JOINT_POINTS} and 2 sizes"
            )
            continue
        keys.append(key)
        groups.append(
            ({"n": c["n_params"].to_numpy(float), "d": c["d_f"].to_numpy(float)}, c["best_val_loss"])
        )
    if not groups:
        return {}, notes
    kaplan = fit_groups("kaplan", groups, bootstrap=bootstrap, seed=seed)
    chinchilla = fit_groups(
        "chinchilla", groups, bootstrap=bootstrap, seed=seed, starts=JOINT_CHINCHILLA_GRID
    )
    fits = {}
    for key, k, ch in zip(keys, kaplan, chinchilla, strict=True):
        fits[key] = k if k.rmsd_log <= ch.rmsd_log else ch
        notes[key] = f"{fits[key].law} (RMSD log: kaplan {k.rmsd_log:.4f}, chinchilla {ch.rmsd_log:.4f})"
    return fits, notes


def classify(
    cells: pd.DataFrame, transfer: TransferAnalysis, *, bootstrap: int = 200, seed: int = 0
) -> Regimes:
    """Label every cell.

    Args:
        cells: the cell table (cells.best_cells).
        transfer: the transfer analysis (for D(N) and the low-data regime).
        bootstrap, seed: for the joint fits.

    Returns:
        Regimes: the labelled table, the joint fits and notes on the (language, init) pairs without one.
    """
    joint, notes = fit_joint(cells, bootstrap=bootstrap, seed=seed)
    df = cells.copy()
    df["slope_log_n"] = _slopes(df)
    rows: list[dict[str, Any]] = []
    for _, c in df.iterrows():
        lang, init, n, d = str(c["language"]), str(c["init"]), float(c["n_params"]), float(c["d_f"])
        row: dict[str, Any] = {k: c[k] for k in ("language", "init", "n_params", "d_f", "best_val_loss")}
        row.update(_limited(joint.get((lang, init)), n, d, c["slope_log_n"]))
        row.update(_convergence(c))
        d_99 = _d_99(transfer, lang, n)
        row["d_99"] = d_99
        row["d_f_over_d_99"] = d / d_99 if math.isfinite(d_99) else math.nan
        row["low_data"] = (
            "low-data"
            if row["d_f_over_d_99"] <= 0.1
            else "beyond low-data"
            if math.isfinite(d_99)
            else "unknown"
        )
        bound = KAPLAN_OVERFIT[0] * n ** KAPLAN_OVERFIT[1]
        row["d_over_kaplan_bound"] = d / bound
        row["kaplan_bound"] = "above bound (overfit < 2%)" if d >= bound else "below bound (overfitting)"
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["flops"] = df["flops"].to_numpy(float)
        table["on_frontier"] = _frontier(table, ["language", "init"])
        table["on_frontier_both_inits"] = _frontier(table, ["language"])
    return Regimes(table=table, joint=joint, joint_notes=notes)


def _slopes(df: pd.DataFrame) -> pd.Series:
    """d log L / d log N at fixed (language, init, D_F), by finite differences over the sizes present."""
    out = pd.Series(np.nan, index=df.index)
    for _, g in df.groupby(["language", "init", "d_f"]):
        if g["n_params"].nunique() < 2:
            continue
        g = g.sort_values("n_params")
        out[g.index] = np.gradient(
            np.log(g["best_val_loss"].to_numpy(float)), np.log(g["n_params"].to_numpy(float))
        )
    return out


def _limited(fit: FitResult | None, n: float, d: float, slope: float) -> dict[str, Any]:
    """Parameter- or data-limited from the joint fit's terms, and from the measured slope in log N."""
    out: dict[str, Any] = {"slope_log_n": slope}
    out["slope_label"] = (
        "unknown"
        if not math.isfinite(slope)
        else "data-limited (flat in N)"
        if slope > FLAT_SLOPE
        else "parameter-limited"
    )
    if fit is None:
        out["param_term_share"], out["limited_by"] = math.nan, "unknown (no joint fit)"
        return out
    p = fit.params
    if fit.law == "kaplan":
        n_term, d_term = (p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]), p["D_c"] / d
    else:
        n_term, d_term = p["A"] / n ** p["alpha"], p["B"] / d ** p["beta"]
    out["param_term_share"] = n_term / (n_term + d_term)
    out["limited_by"] = "parameter-limited" if n_term > d_term else "data-limited"
    return out


def _convergence(c: pd.Series) -> dict[str, Any]:
    """Converged, under-trained (budget ended it while the loss still fell) or diverged."""
    stop = str(c.get("stop_reason", ""))
    fall = _final_fall(c.get("curve"))
    at_best = c["tokens_at_best"] / c["tokens_seen"] if c.get("tokens_seen", 0) else math.nan
    if stop == "diverged":
        label = "diverged"
    elif stop == "budget":
        # Without a curve, a best evaluation in the last 10% of the run stands in for "still falling".
        falling = fall > STILL_FALLING if math.isfinite(fall) else bool(at_best >= 0.9)
        label = "under-trained (budget)" if falling else "converged (budget, flat)"
    elif stop in ("overfit", "plateau"):
        label = f"converged ({stop})"
    else:
        label = "unknown"
    return {"stop_reason": stop, "final_fall": fall, "best_at_fraction": at_best, "convergence": label}


def _final_fall(curve: Any) -> float:
    """Relative fall of the validation loss over the last quarter of the curve (NaN without a curve)."""
    if not isinstance(curve, str) or not curve:
        return math.nan
    try:
        pts = json.loads(curve)
        tokens = np.array([p["tokens"] for p in pts], dtype=float)
        loss = np.array([p["val_loss"] for p in pts], dtype=float)
    except (ValueError, KeyError, TypeError):
        return math.nan
    if tokens.size < 3:
        return math.nan
    start = tokens[0] + 0.75 * (tokens[-1] - tokens[0])
    before = loss[tokens <= start][-1]
    return float((before - loss[-1]) / before)


def _d_99(transfer: TransferAnalysis, lang: str, n: float) -> float:
    """D(N) in tokens from the language's scratch curve (NaN without a fitted one)."""
    lt = transfer.languages.get(lang)
    curve = lt.curves.get(n) if lt else None
    if curve is None:
        return math.nan
    d_99 = curve.d_99
    if curve.basis == "chars" and lt is not None and not lt.table.empty:
        d_99 /= float(lt.table["chars_per_token"].median())
    return d_99


def _frontier(table: pd.DataFrame, by: list[str]) -> np.ndarray:
    """Whether each cell lies on the lower envelope of loss against compute within its group."""
    out = np.zeros(len(table), dtype=bool)
    for _, g in table.groupby(by):
        g = g[np.isfinite(g["flops"])].sort_values(["flops", "best_val_loss"])
        best = np.minimum.accumulate(g["best_val_loss"].to_numpy())
        on = g["best_val_loss"].to_numpy() <= best
        on[1:] &= g["best_val_loss"].to_numpy()[1:] < best[:-1]  # strictly better than anything cheaper
        out[table.index.get_indexer(g.index[on])] = True
    return out
