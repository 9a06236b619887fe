"""Read results ledgers (docs/ledger.md) for the analysis: parquet or CSV, one or several sweeps.

The analysis never imports the sweep layer: a ledger is a table, read here with pandas, checked for the
columns the analysis needs, and given a `source` column naming the sweep it came from.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sweep_engine.errors import UserError

REQUIRED = ("stage", "language", "init", "n_params", "d_f", "status", "best_val_loss")
LEDGER_NAMES = ("trials.parquet", "trials.csv")


def ledger_file(path: Path) -> Path:
    """The ledger file behind `path`: the path itself, or trials.parquet / trials.csv inside a directory.

    Raises:
        UserError: nothing readable there.
    """
    path = Path(path)
    if path.is_dir():
        for name in LEDGER_NAMES:
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: a results directory must hold one of {list(LEDGER_NAMES)}, found none")
    if not path.is_file():
        raise UserError(f"{path}: no such file or directory")
    if path.suffix not in (".parquet", ".csv"):
        raise UserError(f"{path}: a ledger must be a .parquet or .csv file (or a results directory)")
    return path


def read_ledger(path: Path) -> pd.DataFrame:
    """One ledger as a DataFrame with the derived columns the analysis uses.

    Raises:
        UserError: unreadable file or a missing required column.
    """
    file = ledger_file(path)
    try:
        # Read the bytes once: the sweep driver may replace the file mid-read (docs/ledger.md).
        data = io.BytesIO(file.read_bytes())
        df = pd.read_parquet(data) if file.suffix == ".parquet" else pd.read_csv(data)
    except Exception as exc:  # pandas raises many types for a bad file; all are bad input here
        raise UserError(f"{file}: cannot read the ledger ({type(exc).__name__}: {exc})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(
            f"{file}: ledger column(s) {missing} missing; a ledger needs {list(REQUIRED)} (docs/ledger.md)"
        )
    df = df.copy()
    name = file.parent.name if file.name in LEDGER_NAMES else file.stem
    df["source"] = df["sweep"].astype(str) if "sweep" in df.columns else name
    for col in ("n_params", "d_f", "best_val_loss"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in (
        "d_f_chars",
        "val_tokens_per_char",
        "best_val_bpc",
        "test_loss",
        "test_tokens_per_char",
        "test_bpc",
        "tokens_seen",
        "tokens_at_best",
        "flops",
    ):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    # Bits per character from nats per token when the ledger lacks the column (docs/ledger.md's definition).
    bpc = df["best_val_loss"] * df["val_tokens_per_char"] / math.log(2)
    df["best_val_bpc"] = df["best_val_bpc"].fillna(bpc)
    df["test_bpc"] = df["test_bpc"].fillna(df["test_loss"] * df["test_tokens_per_char"] / math.log(2))
    df["flops"] = df["flops"].fillna(6.0 * df["n_params"] * df["tokens_seen"])
    return df


def read_ledgers(paths: Sequence[Path]) -> pd.DataFrame:
    """Several ledgers as one table (a cross-language analysis).

    Raises:
        UserError: no paths, or any ledger is bad.
    """
    if not paths:
        raise UserError("give at least one results directory or ledger file")
    df = pd.concat([read_ledger(Path(p)) for p in paths], ignore_index=True)
    if "trial_key" in df.columns:
        # Shared pre-training runs appear in every language's ledger; count each trial once.
        df = df.drop_duplicates(subset="trial_key", keep="first").reset_index(drop=True)
    return df
