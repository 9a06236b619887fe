"""Cells: (language, init, N, D_F), each the best configuration of its LR/schedule sweep.

Selection and reporting use different held-out documents (docs/analysis.md, section 1): a
cell's configuration is the one with the lowest validation loss (seeds averaged), and the loss the cell reports
is that configuration's loss on the test split (seeds averaged). Choosing on the numbers one reports would
bias every cell low by the best-of-k selection. A ledger without test losses (older runs, user CSVs) falls back
to validation, and the cell says so (`split` = "val").
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

CELL_KEYS = ["language", "init", "n_params", "d_f"]
CONFIG_COLS = ["lr", "schedule_kind", "warmup_steps", "decay_floor"]
STILL_FALLING = 0.005  # a budget-stopped run whose loss fell > 0.5% over its last quarter is under-trained


def best_cells(ledger: pd.DataFrame) -> pd.DataFrame:
    """The cell table from a ledger: finished transfer runs, the configuration chosen on validation.

    Args:
        ledger: rows as in docs/ledger.md (see ledger_io.read_ledgers).

    Returns:
        One row per cell: the cell keys, the chosen configuration, `best_val_loss` (its validation loss, the
        selection criterion), `loss` / `bpc` (the reported loss in nats per token / bits per character, from
        `split` "test" or "val"), `run_keys` (the chosen configuration's trial keys, one per seed),
        `n_seeds`, `n_configs`, `stop_reason` ("budget" if any chosen run hit the cap), `still_falling` (a
        chosen run was ended by the budget while its loss still fell), `flops_at_best` (6 N tokens at the best
        step), and the other numeric columns averaged over the chosen seeds.
    """
    ok = (
        (ledger["stage"] == "transfer")
        & (ledger["status"] == "FINISHED")
        & (ledger["best_val_loss"] > 0)
        & ledger["best_val_loss"].notna()
    )
    runs = ledger[ok].copy()
    if runs.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, "loss", "bpc", "split", "n_seeds", "n_configs"])
    config = [c for c in CONFIG_COLS if c in runs.columns]
    runs[config] = runs[config].fillna("-")  # NaN keys would drop rows from the groupby
    runs = runs.dropna(subset=CELL_KEYS)  # a run without its cell's keys belongs to no cell
    # A pruned arm (sweep/halving.py) stopped early because it was losing: its loss measures a cut-short run.
    # It is a candidate only when every run of the cell was pruned.
    pruned = runs.get("stop_reason", pd.Series("", index=runs.index)).astype(str) == "pruned"
    every_run_pruned = pruned.groupby([runs[c] for c in CELL_KEYS]).transform("all")
    runs = runs[~pruned | every_run_pruned].copy()
    # A configuration the token cap cut measured compute, not data (its best is no overfitting point): it is a
    # candidate only when the cap cut every configuration of its cell (sweep/halving.py ranks arms the same way).
    budget = runs.get("stop_reason", pd.Series("", index=runs.index)).astype(str) == "budget"
    capped = budget.groupby([runs[c] for c in CELL_KEYS + config], dropna=False).transform("any")
    every_config_capped = capped.groupby([runs[c] for c in CELL_KEYS]).transform("all")
    runs = runs[~capped | every_config_capped].copy()
    runs["_still_falling"] = [
        still_falling(r)
        for r in runs[[c for c in runs.columns if c != "doc_losses"]].to_dict(orient="records")
    ]
    # One grouping by cell and configuration: each configuration's mean validation loss, the runs behind it,
    # and per cell the configuration with the lowest mean (the first of equals, in sorted order).
    by_config = runs.groupby(CELL_KEYS + config, sort=True, dropna=False)
    means = by_config["best_val_loss"].mean()
    positions = by_config.indices
    per_cell = means.groupby(level=list(range(len(CELL_KEYS))), sort=True)
    numeric = [c for c in runs.select_dtypes("number").columns if c not in CELL_KEYS]
    rows = []
    for (key, chosen_key), n_configs in zip(per_cell.idxmin().items(), per_cell.size(), strict=True):
        chosen = runs.iloc[positions[chosen_key]]
        rows.append(_cell_row(dict(zip(CELL_KEYS, key, strict=True)), chosen, config, n_configs, numeric))
    return pd.DataFrame(rows).sort_values(CELL_KEYS).reset_index(drop=True)


def _cell_row(
    keys: dict[str, Any], chosen: pd.DataFrame, config: list[str], n_configs: int, numeric_cols: list[str]
) -> dict[str, Any]:
    first = chosen.iloc[0]
    numeric = {c: float(v) for c, v in chosen[numeric_cols].mean().items()}
    has_test = "test_loss" in chosen and bool(chosen["test_loss"].notna().all())
    loss = chosen["test_loss"] if has_test else chosen["best_val_loss"]
    bpc = chosen["test_bpc"] if has_test and "test_bpc" in chosen else chosen["best_val_bpc"]
    stops = set(chosen.get("stop_reason", pd.Series(dtype=str)).astype(str))
    row = {
        # Per-document losses stay in the ledger (resample.py reads them by run_keys); the rest is the cell's.
        **{
            c: first[c]
            for c in chosen.columns
            if c not in numeric and not c.startswith("_") and c != "doc_losses"
        },
        **numeric,
        **keys,
        **{c: first[c] for c in config},
        "loss": float(loss.mean()),
        "bpc": float(bpc.mean()),
        "split": "test" if has_test else "val",
        "run_keys": tuple(str(k) for k in chosen.get("trial_key", pd.Series(range(len(chosen))))),
        "n_seeds": len(chosen),
        "n_configs": n_configs,
        "stop_reason": "budget" if "budget" in stops else sorted(stops)[0] if stops else "",
        "still_falling": bool(chosen["_still_falling"].any()),
    }
    row["flops_at_best"] = 6.0 * float(keys["n_params"]) * row.get("tokens_at_best", math.nan)
    return row


def still_falling(run: dict[str, Any]) -> bool:
    """Whether the token budget ended a run while its validation loss still fell (it measures compute, not
    data): the loss fell by more than 0.5% over the last quarter of its curve, or, without a curve, its best
    evaluation came in the last 10% of the run."""
    if str(run.get("stop_reason", "")) != "budget":
        return False
    fall = final_fall(run.get("curve"))
    if math.isfinite(fall):
        return fall > STILL_FALLING
    seen = run.get("tokens_seen")
    at_best = run.get("tokens_at_best")
    if seen is None or at_best is None or not seen or not np.isfinite([seen, at_best]).all():
        return True  # nothing says it had stopped improving: assume the worst
    return bool(at_best / seen >= 0.9)


def final_fall(curve: Any) -> float:
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


def pretrain_runs(ledger: pd.DataFrame) -> pd.DataFrame:
    """Finished pre-training runs (stage "pretrain"), one row per run."""
    return ledger[(ledger["stage"] == "pretrain") & (ledger["status"] == "FINISHED")].reset_index(drop=True)
