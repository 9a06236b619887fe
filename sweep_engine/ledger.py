"""The results ledger: `results/<sweep>/trials.parquet`, one row per trial that ended (FINISHED or FAILED).

The sweep driver is its only writer; every write replaces the whole file atomically (temporary file, then
os.replace), so the analysis can read it at any moment of a sweep. Columns: docs/ledger.md.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from sweep_engine.shapes import estimate_n
from sweep_engine.spec import TrialResult, TrialSpec

LEDGER_FILE = "trials.parquet"

# In docs/ledger.md's order; extra_val_loss_<name> / zero_shot_extra_val_loss_<name> follow zero_shot_loss.
COLUMNS = [
    "trial_key",
    "sweep_key",
    "sweep",
    "stage",
    "language",
    "init",
    "init_from",
    "size",
    "n_layer",
    "d_model",
    "n_params",
    "n_params_estimate",
    "d_f",
    "d_f_chars",
    "lr",
    "schedule_kind",
    "warmup_steps",
    "decay_floor",
    "seed",
    "batch_tokens",
    "context",
    "weight_decay",
    "token_cap",
    "status",
    "failure_reason",
    "error",
    "best_val_loss",
    "val_tokens_per_char",
    "best_val_bpc",
    "tokens_at_best",
    "tokens_seen",
    "steps",
    "flops",
    "stop_reason",
    "test_loss",
    "test_tokens_per_char",
    "test_bpc",
    "zero_shot_loss",
    "wall_s",
    "tokens_per_s",
    "train_s",
    "eval_s",
    "checkpoint_s",
    "eval_per_train",
    "mfu",
    "curve",
    "notes",
    "doc_losses",
    "spec",
]


def ledger_path(results_dir: Path) -> Path:
    return Path(results_dir) / LEDGER_FILE


def trial_row(
    spec: TrialSpec,
    sweep_key: str,
    *,
    status: str,
    result: TrialResult | None = None,
    failure_reason: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One ledger row: the spec's axes, the result's quantities (NaN for a failed trial), the status.

    Args:
        spec: The trial.
        sweep_key: The sweep that recorded it.
        status: FINISHED or FAILED.
        result: What the run recorded (None when it failed before finishing).
        failure_reason: FAILED only: `oom`, `diverged`, `config` or `crash`.
        error: FAILED only: the error message.
    """
    row: dict[str, Any] = {
        "trial_key": spec.key(),
        "sweep_key": sweep_key,
        "sweep": spec.sweep,
        "stage": spec.stage,
        "language": spec.language,
        "init": spec.init,
        "init_from": spec.init_from or "",
        "size": spec.model.name,
        "n_layer": spec.model.n_layer,
        "d_model": spec.model.d_model,
        "n_params": math.nan,
        "n_params_estimate": estimate_n(spec.model),
        "d_f": spec.data.d_f if spec.data.d_f is not None else math.nan,
        "d_f_chars": math.nan,
        "lr": spec.lr,
        "schedule_kind": spec.schedule.kind,
        "warmup_steps": spec.schedule.warmup_steps,
        "decay_floor": spec.schedule.decay_floor,
        "seed": spec.seed,
        "batch_tokens": spec.batch_tokens,
        "context": spec.context,
        "weight_decay": spec.weight_decay,
        "token_cap": spec.stopping.token_cap,
        "status": status,
        "failure_reason": failure_reason or "",
        "error": (error or "")[:4000],
        "spec": json.dumps(spec.to_dict(), sort_keys=True),
    }
    for name in ("best_val_loss", "val_tokens_per_char", "best_val_bpc", "tokens_at_best", "tokens_seen"):
        row[name] = math.nan
    for name in ("steps", "flops", "zero_shot_loss", "wall_s", "tokens_per_s"):
        row[name] = math.nan
    for name in ("test_loss", "test_tokens_per_char", "test_bpc"):
        row[name] = math.nan
    for name in ("train_s", "eval_s", "checkpoint_s", "eval_per_train", "mfu"):
        row[name] = math.nan
    row.update({"stop_reason": "", "curve": "[]", "notes": "[]", "doc_losses": ""})
    if result is not None:
        row.update(_result_columns(result))
    return row


def _result_columns(r: TrialResult) -> dict[str, Any]:
    cols: dict[str, Any] = {
        "n_params": r.n_params,
        "n_params_estimate": r.n_params_estimate,
        "d_f": r.d_f,
        "d_f_chars": r.d_f_chars,
        "best_val_loss": r.best_val_loss,
        "val_tokens_per_char": r.val_tokens_per_char,
        "best_val_bpc": r.best_val_loss * r.val_tokens_per_char / math.log(2)
        if r.val_tokens_per_char
        else math.nan,
        "tokens_at_best": r.tokens_at_best,
        "tokens_seen": r.tokens_seen,
        "steps": r.steps,
        "flops": r.flops,
        "stop_reason": r.stop_reason,
        "zero_shot_loss": r.zero_shot_loss if r.zero_shot_loss is not None else math.nan,
        "wall_s": r.wall_s,
        "tokens_per_s": r.tokens_per_s,
        "train_s": r.train_s,
        "eval_s": r.eval_s,
        "checkpoint_s": r.checkpoint_s,
        "eval_per_train": eval_per_train(r),
        "mfu": r.mfu if r.mfu is not None else math.nan,
        "curve": json.dumps([vars(p) for p in r.curve]),
        "notes": json.dumps(r.notes),
        "test_loss": r.test_loss if r.test_loss is not None else math.nan,
        "test_tokens_per_char": r.test_tokens_per_char or math.nan,
        "test_bpc": r.test_loss * r.test_tokens_per_char / math.log(2)
        if r.test_loss is not None and r.test_tokens_per_char
        else math.nan,
        # Per held-out document at the best step (docs/ledger.md); the analysis resamples them.
        "doc_losses": json.dumps(r.doc_losses, separators=(",", ":")) if r.doc_losses else "",
    }
    for name, loss in r.best_extra_val_loss.items():
        cols[f"extra_val_loss_{name}"] = loss
    for name, loss in r.zero_shot_extra_val_loss.items():
        cols[f"zero_shot_extra_val_loss_{name}"] = loss
    return cols


def eval_per_train(r: TrialResult) -> float:
    """Seconds of evaluation per second of training (NaN for results recorded before these were timed)."""
    return r.eval_s / r.train_s if r.train_s > 0 else math.nan


def read_ledger(path: Path) -> pd.DataFrame:
    """The ledger as a DataFrame (empty, with the base columns, when there is none yet).

    Safe mid-sweep: the file is opened once. (`pd.read_parquet(path)` may open a path twice, footer then pages,
    and so read halves of two versions when the driver replaces the file in between.)
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_parquet(io.BytesIO(data))


class Ledger:
    """The ledger of one sweep, kept in memory by trial_key and rewritten whole on every `write`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        frame = read_ledger(self.path)
        self._rows: dict[str, dict[str, Any]] = {
            str(r["trial_key"]): r for r in frame.to_dict(orient="records")
        }

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, trial_key: object) -> bool:
        return trial_key in self._rows

    def get(self, trial_key: str) -> dict[str, Any] | None:
        return self._rows.get(trial_key)

    def status(self, trial_key: str) -> str | None:
        row = self._rows.get(trial_key)
        return None if row is None else str(row["status"])

    def upsert(self, row: dict[str, Any], *, write: bool = True) -> None:
        """Add or replace the row of `row["trial_key"]` (a trial appears once), then write the file."""
        self._rows[str(row["trial_key"])] = row
        if write:
            self.write()

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame.from_records(list(self._rows.values()))
        if frame.empty:
            return pd.DataFrame(columns=COLUMNS)
        extra = sorted(c for c in frame.columns if c not in COLUMNS)
        at = COLUMNS.index("zero_shot_loss") + 1
        order = [c for c in COLUMNS[:at] + extra + COLUMNS[at:] if c in frame.columns]
        return frame[order]

    def write(self) -> None:
        """Replace the file atomically: a reader sees the old ledger or the new one, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.frame().to_parquet(tmp, index=False)
        os.replace(tmp, self.path)
