"""`sweep-engine status`: where a sweep stands, from its files and MLflow alone (no Ray, works mid-sweep).

Per stage: trials done (a result.json, or a FINISHED ledger row), running (an MLflow run RUNNING; after a killed
driver these stay RUNNING until the next launch reconciles them), failed (a FAILED ledger row), pending (of
which `resumable` have a checkpoint), and an ETA: the mean wall time of the stage's finished trials (or, before
any, the plan's throughput estimate) times what is left, divided by the concurrency.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sweep_engine.config import Space
from sweep_engine.ledger import ledger_path, read_ledger
from sweep_engine.space import count_trials, pretrain_trials, transfer_trials
from sweep_engine.spec import FAILED, FINISHED, RESULT_FILE, RUNNING, TrialSpec
from sweep_engine.sweep import halving
from sweep_engine.sweep.jobs import STATE_FILE, SweepPaths


@dataclass
class StageStatus:
    stage: str
    total: int
    done: int
    running: int
    failed: int
    pending: int
    resumable: int  # pending trials with a state.pt to resume from
    eta_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TrialState = Literal["done", "failed", "running", "resumable", "pending"]


@dataclass
class TrialStatus:
    """Where one trial stands (a row of `status --trials` and of `launch --dry-run`)."""

    key: str
    stage: str
    language: str
    size: str
    d_f: int | None
    init: str
    lr: float
    seed: int
    state: TrialState
    init_from: str | None = None
    best_val_loss: float | None = None  # done: from the ledger
    stop_reason: str | None = None  # done: from the ledger; failed: the failure reason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_statuses(space: Space, running_keys: set[str] | None = None) -> list[TrialStatus]:
    """Every trial of `space` and its state, from the files (and MLflow's RUNNING runs) alone.

    With `search.kind: optuna` the transfer trials are sampled as the sweep runs: those are the ledger's.

    Args:
        space: A validated space.
        running_keys: trial_keys whose MLflow run is RUNNING (None: read them from the space's tracking store).
    """
    paths = SweepPaths.of(space)
    rows = _ledger_rows(space)
    if running_keys is None:
        running_keys = _running_in_mlflow(space)
    specs = pretrain_trials(space)
    if space.search.halving is not None:
        specs += _halving_trials(space, rows)
    elif space.search.kind != "optuna":
        specs += transfer_trials(space)
    out = []
    for spec in specs:
        key, workdir = spec.key(), paths.workdir(spec)
        row = rows.get(key)
        state: TrialState
        if (workdir / RESULT_FILE).exists() or (row is not None and row["status"] == FINISHED):
            state = "done"
        elif row is not None and row["status"] == FAILED:
            state = "failed"
        elif key in running_keys:
            state = "running"
        else:
            state = "resumable" if (workdir / STATE_FILE).exists() else "pending"
        out.append(_trial_status(spec, state, row))
    if space.search.kind == "optuna":
        sampled = [r for r in rows.values() if r["stage"] == "transfer" and r["sweep"] == space.name]
        for r in sampled:
            spec = TrialSpec.from_dict(json.loads(r["spec"]))
            out.append(_trial_status(spec, "done" if r["status"] == FINISHED else "failed", r))
    return out


def _halving_trials(space: Space, rows: dict[str, dict[str, Any]]) -> list[TrialSpec]:
    """With search.halving: every cell's first-seed arms, and the later seeds of each cell whose winner the
    ledger already names (the others are counted by `undecided_later_seeds`)."""
    plan = halving.plan(space)
    winners = halving.winners_from_ledger(space, rows)
    out = [spec for specs in plan.first.values() for spec in specs]
    for cell, arms in plan.later.items():
        arm = winners.get(cell)
        if arm is not None:
            out += arms.get(arm, [])
    return out


def undecided_later_seeds(space: Space, rows: dict[str, dict[str, Any]]) -> int:
    """Later-seed trials of cells whose arms are still racing: they will run, on an arm not chosen yet."""
    if space.search.halving is None:
        return 0
    plan = halving.plan(space)
    winners = halving.winners_from_ledger(space, rows)
    return sum(len(next(iter(arms.values()), [])) for cell, arms in plan.later.items() if cell not in winners)


def _trial_status(spec: TrialSpec, state: TrialState, row: dict[str, Any] | None) -> TrialStatus:
    status = TrialStatus(
        spec.key(),
        spec.stage,
        spec.language,
        spec.model.name,
        spec.data.d_f,
        spec.init,
        spec.lr,
        spec.seed,
        state,
        spec.init_from,
    )
    if row is not None and state == "done":
        status.best_val_loss, status.stop_reason = float(row["best_val_loss"]), str(row["stop_reason"])
    elif row is not None and state == "failed":
        status.stop_reason = str(row["failure_reason"])
    return status


def sweep_status(space: Space, running_keys: set[str] | None = None) -> list[StageStatus]:
    """The state of each stage of `space` (see `trial_statuses`).

    Args:
        space: A validated space.
        running_keys: trial_keys whose MLflow run is RUNNING (None: read them from the space's tracking store).
    """
    rows = _ledger_rows(space)
    if running_keys is None:
        running_keys = _running_in_mlflow(space)
    trials = trial_statuses(space, running_keys)
    concurrency = space.resources.max_concurrent_trials or 1
    out = []
    for stage in ("pretrain", "transfer"):
        if stage == "transfer" and space.search.kind == "optuna" and space.transfer is not None:
            out.append(_sampled_stage(space, rows, running_keys, concurrency))
            continue
        mine = [t for t in trials if t.stage == stage]
        if not mine:
            continue
        count = Counter(t.state for t in mine)
        left = [t for t in mine if t.state in ("running", "resumable", "pending")]
        specs = {
            s.key(): s for s in (pretrain_trials(space) if stage == "pretrain" else transfer_trials(space))
        }
        undecided = undecided_later_seeds(space, rows) if stage == "transfer" else 0
        eta = _eta(stage, rows, [specs[t.key] for t in left], concurrency, space)
        if eta is not None and left:
            eta *= (len(left) + undecided) / len(left)
        out.append(
            StageStatus(
                stage,
                len(mine) + undecided,
                count["done"],
                count["running"],
                count["failed"],
                count["resumable"] + count["pending"] + undecided,
                count["resumable"],
                eta,
            )
        )
    return out


def _ledger_rows(space: Space) -> dict[str, dict[str, Any]]:
    ledger = read_ledger(ledger_path(SweepPaths.of(space).results_dir))
    return {str(r["trial_key"]): r for r in ledger.to_dict("records")}


def _sampled_stage(
    space: Space, rows: dict[str, dict[str, Any]], running_keys: set[str], concurrency: int
) -> StageStatus:
    """An Optuna-searched stage: its trials are sampled as it runs, so count ledger rows against the budget."""
    seeds = len(space.transfer.seeds) if space.transfer else 1
    total = count_trials(space)["transfer"] * seeds
    mine = [r for r in rows.values() if r["stage"] == "transfer" and r["sweep"] == space.name]
    done = sum(r["status"] == FINISHED for r in mine)
    failed = sum(r["status"] == FAILED for r in mine)
    running = min(len(running_keys), max(0, total - done - failed))
    pending = max(0, total - done - failed - running)
    walls = [float(r["wall_s"]) for r in mine if r["status"] == FINISHED]
    eta = (pending + running) * sum(walls) / len(walls) / concurrency if walls else None
    return StageStatus("transfer", total, done, running, failed, pending, 0, eta)


def _eta(
    stage: str, rows: dict[str, dict[str, Any]], left: list[TrialSpec], concurrency: int, space: Space
) -> float | None:
    if not left:
        return 0.0
    walls = [float(r["wall_s"]) for r in rows.values() if r["stage"] == stage and r["status"] == FINISHED]
    if walls:
        return len(left) * (sum(walls) / len(walls)) / concurrency
    from sweep_engine.plan import tokens_per_second, vocab_size

    vocab = vocab_size(space)
    seconds = sum(t.stopping.token_cap / tokens_per_second(t, vocab, None) for t in left)
    return seconds / concurrency


def _running_in_mlflow(space: Space) -> set[str]:
    from sweep_engine.tracking import TRIAL, existing_tracker

    tracker = existing_tracker(space.tracking_uri, space.experiment_name)
    if tracker is None:
        return set()
    return {r.tags.get("trial_key", "") for r in tracker.runs(TRIAL) if r.status == RUNNING}
