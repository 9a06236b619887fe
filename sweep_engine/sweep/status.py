"""`sweep-engine status`: where a sweep stands, from its files and MLflow alone (no Ray, works mid-sweep).

Per stage: trials done (a result.json, or a FINISHED ledger row), running (an MLflow run RUNNING; after a killed
driver these stay RUNNING until the next launch reconciles them), failed (a FAILED ledger row), pending (of
which `resumable` have a checkpoint), and an ETA: the mean wall time of the stage's finished trials (or, before
any, the plan's throughput estimate) times what is left, divided by the concurrency.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sweep_engine.config import Space
from sweep_engine.ledger import ledger_path, read_ledger
from sweep_engine.space import count_trials, pretrain_trials, transfer_trials
from sweep_engine.spec import FAILED, FINISHED, RESULT_FILE, RUNNING, TrialSpec
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


def sweep_status(space: Space, running_keys: set[str] | None = None) -> list[StageStatus]:
    """The state of each stage of `space`.

    Args:
        space: A validated space.
        running_keys: trial_keys whose MLflow run is RUNNING (None: read them from the space's tracking store).
    """
    paths = SweepPaths.of(space)
    rows = {str(r["trial_key"]): r for r in read_ledger(ledger_path(paths.results_dir)).to_dict("records")}
    if running_keys is None:
        running_keys = _running_in_mlflow(space)
    concurrency = space.resources.max_concurrent_trials or 1
    out = []
    for stage in ("pretrain", "transfer"):
        specs = pretrain_trials(space) if stage == "pretrain" else transfer_trials(space)
        if not specs:
            continue
        if stage == "transfer" and space.search.kind == "optuna":
            out.append(_sampled_stage(space, rows, running_keys, concurrency))
            continue
        done = failed = running = resumable = 0
        left: list[TrialSpec] = []
        for spec in specs:
            key, workdir = spec.key(), paths.workdir(spec)
            row = rows.get(key)
            if (workdir / RESULT_FILE).exists() or (row is not None and row["status"] == FINISHED):
                done += 1
            elif row is not None and row["status"] == FAILED:
                failed += 1
            elif key in running_keys:
                running += 1
                left.append(spec)
            else:
                resumable += (workdir / STATE_FILE).exists()
                left.append(spec)
        eta = _eta(stage, rows, left, concurrency, space)
        out.append(StageStatus(stage, len(specs), done, running, failed, len(left) - running, resumable, eta))
    return out


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
