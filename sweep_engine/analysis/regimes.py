"""Regime labels for every cell, each with the number behind it (docs/analysis.md, section 7).

- parameter- vs data-limited: first the measured slope d log L / d log N at fixed D_F (the seed study's
  definition: flat in N = data-limited), then the larger term of the joint fit L(N, D) as a second opinion.
  The joint fit has bounded exponents; its form (Kaplan's or Chinchilla's) is chosen by AIC; a fit with a
  parameter at a bound or an exponent above DEGENERATE_EXPONENT is flagged degenerate and labels nothing.
- converged vs budget-limited: the run stopped at its overfitting point or plateau, or the token budget ended
  it while the validation loss still fell (under-trained; cells.still_falling).
- low-data regime of the transfer law (D_F <= 10% of D(N), D(N) the data at which the scratch loss is within
  1% of its infinite-data value), from the scratch joint fit with a bootstrap interval on D(N): "unknown"
  when the interval straddles the threshold or there is no usable fit. Kaplan's bound D >= 5e3 N^0.74.
- the compute frontier: the lower envelope of loss against C = 6 N (tokens at the best step), per language
  and init and over both inits (pre-training compute not counted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from sweep_engine.analysis.fit import FitResult, fit_groups
from sweep_engine.analysis.laws import CHINCHILLA, KAPLAN, Law

FLAT_SLOPE = -0.01  # d log L / d log N above this (loss falls < 1% per e-fold of N) counts as flat
KAPLAN_OVERFIT = (5e3, 0.74)  # overfitting < 2% when D >= 5e3 N^0.74 (Kaplan et al. 2020)
MIN_JOINT_POINTS = 6  # 4 parameters; two spare points so that a resample is not an exact fit
LOW_DATA_FRACTION = 0.1  # D_F <= 10% of D(N) (Hernandez et al. 2021)
CONVERGED_WITHIN = 0.01  # D(N): scratch loss within 1% of its infinite-data value
DEGENERATE_EXPONENT = 1.5  # loss exponents beyond this in N or D describe no model seen in practice

# Bounded joint laws: exponents in [0.001, 2], constants below e^40. Unbounded, a flat (language, init) pair
# ran to alpha 22.5 with A = 1e112, and its regime labels meant nothing.
JOINT_LAWS: dict[str, Law] = {
    "kaplan": replace(KAPLAN, bounds=((None, 60.0), (None, 60.0), (1e-3, 2.0), (1e-3, 2.0))),
    "chinchilla": replace(
        CHINCHILLA, bounds=((None, 40.0), (None, 40.0), (None, None), (1e-3, 2.0), (1e-3, 2.0))
    ),
}
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


@dataclass
class Regimes:
    table: pd.DataFrame  # one row per cell (both inits)
    joint: dict[tuple[str, str], FitResult]  # (language, init) -> joint fit (kaplan or chinchilla)
    joint_notes: dict[tuple[str, str], str]
    degenerate: dict[tuple[str, str], bool]
    d_99: pd.DataFrame  # per (language, N): D(N) from the scratch joint fit, with its interval


def fit_joint(
    cells: pd.DataFrame,
    *,
    bootstrap: int,
    seed: int,
    exclude_largest: bool = False,
    forms: tuple[str, ...] = ("kaplan", "chinchilla"),
) -> tuple[dict[tuple[str, str], FitResult], dict[tuple[str, str], str]]:
    """The joint law L(N, D) per (language, init), in nats per token with D in tokens.

    Both bounded forms are fitted (each one batch over all pairs, on the cells' reported `loss`); a pair keeps
    the one with the lower AIC (n log(RSS / n) + 2 p on log loss): Kaplan's has 4 parameters and no
    irreducible loss, Chinchilla's 5.

    Args:
        cells: the cell table.
        bootstrap, seed: bootstrap settings (resampling cells).
        exclude_largest: leave out the largest N (for the hold-out check).
        forms: the joint forms to fit and choose between (analysis.laws); none = no joint fits.

    Returns:
        (fits, notes): the chosen fit per pair with enough points; a note for every pair.
    """
    keys, groups, notes = [], [], {}
    for (lang, init), c in cells.groupby(["language", "init"], sort=True):
        if exclude_largest:
            c = c[c["n_params"] < c["n_params"].max()]
        c = c[~c["still_falling"].astype(bool)]  # a budget-cut loss measures compute, not the law
        key = (str(lang), str(init))
        if len(c) < MIN_JOINT_POINTS or c["n_params"].nunique() < 2 or c["d_f"].nunique() < 2:
            notes[key] = (
                f"{len(c)} converged cells with {c['n_params'].nunique()} sizes: need {MIN_JOINT_POINTS} and 2 sizes"
            )
            continue
        keys.append(key)
        groups.append(({"n": c["n_params"].to_numpy(float), "d": c["d_f"].to_numpy(float)}, c["loss"]))
    if not groups or not forms:
        for key in keys:
            notes[key] = "no joint form in analysis.laws"
        return {}, notes
    results = {
        form: fit_groups(
            JOINT_LAWS[form],
            groups,
            bootstrap=bootstrap,
            seed=seed,
            starts=JOINT_CHINCHILLA_GRID if form == "chinchilla" else None,
        )
        for form in forms
    }
    fits = {}
    for i, key in enumerate(keys):
        aic = {form: _aic(results[form][i], JOINT_LAWS[form].n_params) for form in forms}
        best = min(aic, key=lambda f: aic[f])
        fits[key] = results[best][i]
        notes[key] = f"{best} by AIC (" + ", ".join(f"{f} {v:.1f}" for f, v in aic.items()) + ")"
    return fits, notes


def _aic(fit: FitResult, p: int) -> float:
    rss = max(fit.n_points * fit.rmsd_log**2, 1e-300)
    return fit.n_points * math.log(rss / fit.n_points) + 2 * p


def degenerate(fit: FitResult) -> bool:
    """A joint fit with a parameter at its bound or an exponent beyond DEGENERATE_EXPONENT."""
    law = JOINT_LAWS[fit.law]
    for value, (lo, hi) in zip(fit.theta, law.bounds, strict=True):
        if (lo is not None and value - lo < 1e-3) or (hi is not None and hi - value < 1e-3):
            return True
    exps = ("alpha_N", "alpha_D") if fit.law == "kaplan" else ("alpha", "beta")
    return any(fit.params[e] > DEGENERATE_EXPONENT for e in exps)


def d_99(fit: FitResult, n: float, theta: np.ndarray | None = None) -> np.ndarray:
    """D(N) in tokens: where the joint law comes within 1% of its infinite-data loss (per theta row)."""
    th = np.atleast_2d(fit.theta if theta is None else theta)
    p = JOINT_LAWS[fit.law].to_params(th)
    names = list(JOINT_LAWS[fit.law].names)
    g = {name: p[:, i] for i, name in enumerate(names)}
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if fit.law == "chinchilla":
            l_inf = g["E"] + g["A"] / n ** g["alpha"]
            return (g["B"] / (CONVERGED_WITHIN * l_inf)) ** (1.0 / g["beta"])
        ratio = g["alpha_N"] / g["alpha_D"]
        return g["D_c"] / (((1 + CONVERGED_WITHIN) ** (1.0 / g["alpha_D"]) - 1) * (g["N_c"] / n) ** ratio)


def low_data_table(cells: pd.DataFrame, joint: dict[tuple[str, str], FitResult]) -> pd.DataFrame:
    """Per (language, N): D(N) with its 95% interval from the scratch joint fit's bootstrap (NaN without a
    usable fit)."""
    rows = []
    for (lang, n), _ in cells.groupby(["language", "n_params"], sort=True):
        fit = joint.get((str(lang), "scratch"))
        row: dict[str, Any] = {"language": str(lang), "n_params": float(n)}
        if fit is None or degenerate(fit):
            row.update(d_99=math.nan, d_99_lo=math.nan, d_99_hi=math.nan)
        else:
            boot = d_99(fit, float(n), fit.boot_theta) if len(fit.boot_theta) else np.array([math.nan])
            boot = np.where(np.isfinite(boot), boot, np.inf)
            lo, hi = (
                np.percentile(boot, [2.5, 97.5], method="lower") if len(fit.boot_theta) else (math.nan,) * 2
            )
            row.update(d_99=float(d_99(fit, float(n))[0]), d_99_lo=float(lo), d_99_hi=float(hi))
        rows.append(row)
    return pd.DataFrame(rows, columns=["language", "n_params", "d_99", "d_99_lo", "d_99_hi"])


def low_data_label(d_f: float, lo: float, hi: float) -> str:
    """ "low-data" when D_F <= 10% of D(N)'s lower end, "beyond low-data" when above 10% of its upper end,
    "unknown" when the interval straddles the threshold or is missing."""
    if math.isfinite(lo) and d_f <= LOW_DATA_FRACTION * lo:
        return "low-data"
    if math.isfinite(hi) and d_f > LOW_DATA_FRACTION * hi:
        return "beyond low-data"
    return "unknown"


def low_data_map(cells: pd.DataFrame, table: pd.DataFrame) -> dict[tuple[str, float, float], str]:
    """(language, N, D_F) -> low_data_label, for every cell."""
    bounds = {(r.language, r.n_params): (r.d_99_lo, r.d_99_hi) for r in table.itertuples()}
    return {
        (str(c.language), float(c.n_params), float(c.d_f)): low_data_label(
            float(c.d_f), *bounds.get((str(c.language), float(c.n_params)), (math.nan, math.nan))
        )
        for c in cells.itertuples()
    }


def classify(
    cells: pd.DataFrame,
    joint: dict[tuple[str, str], FitResult],
    notes: dict[tuple[str, str], str],
    d99: pd.DataFrame,
) -> Regimes:
    """Label every cell (see the module docstring).

    Args:
        cells: the cell table (cells.best_cells).
        joint, notes: fit_joint's output.
        d99: low_data_table's output.
    """
    degen = {k: degenerate(f) for k, f in joint.items()}
    df = cells.copy()
    df["slope_log_n"] = _slopes(df)
    bounds = {(r.language, r.n_params): r for r in d99.itertuples()}
    rows: list[dict[str, Any]] = []
    for _, c in df.iterrows():
        lang, init, n, d = str(c["language"]), str(c["init"]), float(c["n_params"]), float(c["d_f"])
        row: dict[str, Any] = {k: c[k] for k in ("language", "init", "size", "n_params", "d_f", "loss")}
        fit = joint.get((lang, init))
        row.update(_limited(None if fit is None or degen[(lang, init)] else fit, n, d, c["slope_log_n"]))
        if fit is not None and degen[(lang, init)]:
            row["joint_label"] = "unknown (degenerate joint fit)"
        row.update(_convergence(c))
        b = bounds.get((lang, n))
        lo, hi, mid = (b.d_99_lo, b.d_99_hi, b.d_99) if b is not None else (math.nan,) * 3
        row.update(d_99=mid, d_99_lo=lo, d_99_hi=hi)
        row["d_f_over_d_99"] = d / mid if math.isfinite(mid) else math.nan
        row["low_data"] = low_data_label(d, lo, hi)
        bound = KAPLAN_OVERFIT[0] * n ** KAPLAN_OVERFIT[1]
        row["d_over_kaplan_bound"] = d / bound
        row["kaplan_bound"] = "above bound (overfit < 2%)" if d >= bound else "below bound (overfitting)"
        row["flops"] = float(c.get("flops_at_best", math.nan))
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["on_frontier"] = _frontier(table, ["language", "init"])
        table["on_frontier_both_inits"] = _frontier(table, ["language"])
    return Regimes(table=table, joint=joint, joint_notes=notes, degenerate=degen, d_99=d99)


def _slopes(df: pd.DataFrame) -> pd.Series:
    """d log L / d log N at fixed (language, init, D_F), by finite differences over the sizes present."""
    out = pd.Series(np.nan, index=df.index)
    for _, g in df.groupby(["language", "init", "d_f"]):
        if g["n_params"].nunique() < 2:
            continue
        g = g.sort_values("n_params")
        out[g.index] = np.gradient(np.log(g["loss"].to_numpy(float)), np.log(g["n_params"].to_numpy(float)))
    return out


def _limited(fit: FitResult | None, n: float, d: float, slope: float) -> dict[str, Any]:
    """The measured slope's label (leading), and the joint fit's larger term as a second opinion."""
    slope_label = (
        "unknown"
        if not math.isfinite(slope)
        else "data-limited (flat in N)"
        if slope > FLAT_SLOPE
        else "parameter-limited"
    )
    out: dict[str, Any] = {"slope_log_n": slope, "slope_label": slope_label, "limited_by": slope_label}
    if fit is None:
        out["param_term_share"], out["joint_label"] = math.nan, "unknown (no joint fit)"
        return out
    p = fit.params
    if fit.law == "kaplan":
        n_term, d_term = (p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]), p["D_c"] / d
    else:
        n_term, d_term = p["A"] / n ** p["alpha"], p["B"] / d ** p["beta"]
    out["param_term_share"] = n_term / (n_term + d_term)
    out["joint_label"] = "parameter-limited" if n_term > d_term else "data-limited"
    return out


def _convergence(c: pd.Series) -> dict[str, Any]:
    """Converged, under-trained (budget ended it while the loss still fell) or diverged."""
    stop = str(c.get("stop_reason", ""))
    if stop == "diverged":
        label = "diverged"
    elif stop == "budget":
        label = "under-trained (budget)" if bool(c.get("still_falling")) else "converged (budget, flat)"
    elif stop in ("overfit", "plateau"):
        label = f"converged ({stop})"
    elif stop == "pruned":
        label = "pruned (a losing arm, stopped early)"
    else:
        label = "unknown"
    at_best = c["tokens_at_best"] / c["tokens_seen"] if c.get("tokens_seen", 0) else math.nan
    return {"stop_reason": stop, "best_at_fraction": at_best, "convergence": label}


def _frontier(table: pd.DataFrame, by: list[str]) -> np.ndarray:
    """Whether each cell lies on the lower envelope of loss against compute within its group."""
    out = np.zeros(len(table), dtype=bool)
    for _, g in table.groupby(by):
        g = g[np.isfinite(g["flops"])].sort_values(["flops", "loss"])
        best = np.minimum.accumulate(g["loss"].to_numpy())
        on = g["loss"].to_numpy() <= best
        on[1:] &= g["loss"].to_numpy()[1:] < best[:-1]  # strictly better than anything cheaper
        out[table.index.get_indexer(g.index[on])] = True
    return out
