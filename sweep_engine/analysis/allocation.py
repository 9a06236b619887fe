"""What the fitted laws say beyond the measured cells: hold-out checks and an allocation table.

- Hold-out: fit the joint law without the largest N and predict that size's cells; the error says how far the
  law can be trusted to extrapolate in N.
- Allocation: for a target loss, the target-language tokens each model size needs with English pre-training
  (fine-tuned law) and without it (scratch law), and what the pre-training is worth in target-language tokens.
  Both come from inverting the joint fits in D (laws.data_for_loss).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sweep_engine.analysis.fit import FitResult
from sweep_engine.analysis.laws import data_for_loss, get_law
from sweep_engine.analysis.regimes import fit_joint


def holdout_largest(
    cells: pd.DataFrame,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    forms: tuple[str, ...] = ("kaplan", "chinchilla"),
) -> pd.DataFrame:
    """Per (language, init): fit the joint law without the largest N and score it on the largest N's cells.

    Returns:
        One row per (language, init): held-out N, points, RMSD of log loss and the largest relative error.
    """
    fits, notes = fit_joint(cells, bootstrap=bootstrap, seed=seed, exclude_largest=True, forms=forms)
    rows = []
    for (lang, init), c in cells.groupby(["language", "init"], sort=True):
        key = (str(lang), str(init))
        top = c[c["n_params"] == c["n_params"].max()]
        row: dict[str, Any] = {"language": key[0], "init": key[1], "held_out_n": float(top["n_params"].max())}
        fit = fits.get(key)
        if fit is None:
            rows.append(
                {
                    **row,
                    "n_points": 0,
                    "rmsd_log": math.nan,
                    "max_rel_error": math.nan,
                    "note": notes.get(key, ""),
                }
            )
            continue
        rows.append({**row, **score(fit, top["n_params"], top["d_f"], top["loss"]), "note": ""})
    return pd.DataFrame(rows)


def score(fit: FitResult, n: Any, d: Any, loss: Any) -> dict[str, Any]:
    """RMSD of log loss and the largest relative error of a joint fit's predictions."""
    pred = fit.predict(n=np.asarray(n, float), d=np.asarray(d, float))
    err = np.log(pred) - np.log(np.asarray(loss, float))
    return {
        "n_points": int(err.size),
        "rmsd_log": float(np.sqrt(np.mean(err**2))),
        "max_rel_error": float(np.max(np.abs(np.expm1(err)))),
    }


def allocation_table(
    cells: pd.DataFrame,
    joint: dict[tuple[str, str], FitResult],
    targets: dict[str, list[float]] | None = None,
) -> pd.DataFrame:
    """For target losses per language: tokens needed per size with and without English pre-training.

    Args:
        cells: the cell table (sizes, and the default targets).
        joint: (language, init) -> joint fit (kaplan or chinchilla), nats per token with D in tokens.
        targets: language -> target losses; default: the 10th, 30th and 50th percentiles of the language's
            fine-tuned losses, rounded to 0.01.

    Returns:
        One row per (language, target, N): d_scratch, d_finetune (inf = unreachable at that size), the
        difference `pretraining_worth` in tokens and in characters, and `cheapest` marking the size that
        reaches the target with the least fine-tuning compute (6 N D).
    """
    rows = []
    for lang, c in cells.groupby("language", sort=True):
        lang = str(lang)
        scratch, ft = joint.get((lang, "scratch")), joint.get((lang, "finetune"))
        if scratch is None or ft is None:
            continue
        ftc = c[c["init"] == "finetune"]
        cpt = float((c["d_f_chars"] / c["d_f"]).median())
        lang_targets = (targets or {}).get(lang) or sorted(
            {round(float(q), 2) for q in np.percentile(ftc["loss"], [10, 30, 50])}
        )
        lo_d, hi_d = float(c["d_f"].min()), float(c["d_f"].max())
        for target in lang_targets:
            block = []
            for n in sorted(c["n_params"].unique()):
                d_s = data_for_loss(get_law(scratch.law), scratch.theta, float(n), target)
                d_f = data_for_loss(get_law(ft.law), ft.theta, float(n), target)
                # inf - finite = +inf (only pre-training reaches it), finite - inf = -inf (pre-training makes
                # it unreachable), inf - inf = NaN (neither does).
                worth = d_s - d_f if math.isfinite(d_s) or math.isfinite(d_f) else math.nan
                block.append(
                    {
                        "language": lang,
                        "target_loss": target,
                        "n_params": float(n),
                        "d_scratch": d_s,
                        "d_finetune": d_f,
                        "pretraining_worth": worth,
                        "pretraining_worth_chars": worth * cpt,
                        "reachable": _reachable(d_s, d_f),
                        "compute_finetune": 6.0 * n * d_f,
                        "compute_scratch": 6.0 * n * d_s,
                        "extrapolated": not all(lo_d <= v <= hi_d for v in (d_s, d_f) if math.isfinite(v)),
                    }
                )
            finite = [r["compute_finetune"] for r in block if math.isfinite(r["compute_finetune"])]
            for r in block:
                r["cheapest"] = bool(finite) and r["compute_finetune"] == min(finite)
            rows += block
    return pd.DataFrame(rows)


def _reachable(d_scratch: float, d_finetune: float) -> str:
    """Which init reaches the target loss at this size, in words (the table's `inf` explained)."""
    if math.isfinite(d_scratch) and math.isfinite(d_finetune):
        return "both"
    if math.isfinite(d_finetune):
        return "only with pre-training"
    if math.isfinite(d_scratch):
        return "only from scratch (unreachable with pre-training)"
    return "unreachable"
