"""Cells: (language, init, N, D_F), each the best run over its LR/schedule sweep, seeds averaged first.

A cell is what every later stage reads (SCIENCE.md): the transfer table, the regimes, the figures.
"""

from __future__ import annotations

import pandas as pd

CELL_KEYS = ["language", "init", "n_params", "d_f"]
CONFIG_COLS = ["lr", "schedule_kind", "warmup_steps", "decay_floor"]


def best_cells(ledger: pd.DataFrame) -> pd.DataFrame:
    """The cell table from a ledger: finished transfer runs, seeds averaged, then the best configuration.

    Args:
        ledger: rows as in docs/ledger.md (see ledger_io.read_ledgers).

    Returns:
        One row per cell with the cell keys, the best configuration's columns (numeric ones averaged over
        seeds), `n_configs` (configurations tried) and `n_seeds` (seeds behind the chosen one).
    """
    ok = (
        (ledger["stage"] == "transfer")
        & (ledger["status"] == "FINISHED")
        & (ledger["best_val_loss"] > 0)
        & ledger["best_val_loss"].notna()
    )
    df = ledger[ok].copy()
    if df.empty:
        return df.assign(n_configs=pd.Series(dtype=int), n_seeds=pd.Series(dtype=int))
    config = [c for c in CONFIG_COLS if c in df.columns]
    group = CELL_KEYS + config
    df[config] = df[config].fillna("-")  # NaN keys would drop rows from the groupby
    numeric = [c for c in df.select_dtypes("number").columns if c not in group and c != "seed"]
    other = [c for c in df.columns if c not in group and c not in numeric and c != "seed"]
    agg = {**{c: "mean" for c in numeric}, **{c: "first" for c in other}}
    runs = df.groupby(group, sort=True, dropna=False).agg(agg)
    runs["n_seeds"] = df.groupby(group, sort=True, dropna=False).size()
    runs = runs.reset_index()
    best = runs.loc[runs.groupby(CELL_KEYS)["best_val_loss"].idxmin()].copy()
    best["n_configs"] = (
        runs.groupby(CELL_KEYS).size().reindex(pd.MultiIndex.from_frame(best[CELL_KEYS])).to_numpy()
    )
    return best.sort_values(CELL_KEYS).reset_index(drop=True)


def pretrain_runs(ledger: pd.DataFrame) -> pd.DataFrame:
    """Finished pre-training runs (stage "pretrain"), one row per run."""
    return ledger[(ledger["stage"] == "pretrain") & (ledger["status"] == "FINISHED")].reset_index(drop=True)
