"""The driver's bookkeeping: a trial's MLflow run and ledger row at its start, at each evaluation and at its end.

Invariants (kept here, so the scheduling in driver.py cannot break them):
- one MLflow run per trial_key in the sweep's experiment, found again on a relaunch, never a second one;
- each validation-curve point logged once, at step = tokens seen (a retried attempt replays the evaluations
  since its checkpoint: skipped; an evaluation whose report was lost with its attempt: taken from the result);
- every run ends FINISHED, FAILED (tags failure_reason, error) or KILLED; one ledger row per ended trial.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from sweep_engine.ledger import Ledger, trial_row
from sweep_engine.shapes import estimate_n
from sweep_engine.spec import FAILED, FINISHED, KILLED, TrialResult, TrialSpec
from sweep_engine.tracking import TRIAL, RunRecord, Tracker, flatten, reconcile_running

CURVE_METRICS = ("val_loss", "train_loss", "lr")


class Recorder:
    """Writes trial runs (MLflow) and rows (ledger) for one sweep; the single writer of both.

    Args:
        tracker: Where the runs go.
        ledger: The sweep's ledger.
        sweep_key: The sweep's key (a tag of every run, a column of every row).
    """

    def __init__(self, tracker: Tracker, ledger: Ledger, sweep_key: str) -> None:
        self.tracker = tracker
        self.ledger = ledger
        self.sweep_key = sweep_key
        self.parents: dict[str, str] = {}  # stage -> parent run id
        self.run_ids: dict[str, str] = {}  # trial_key -> run id (opened in this launch)
        self.logged: dict[str, set[int]] = {}  # trial_key -> curve steps (tokens) logged
        self.closed: set[str] = set()  # trial_keys whose run got a terminal status in this launch
        self.known: dict[str, RunRecord] = {}

    def start(self) -> list[str]:
        """Reconcile runs a killed driver left RUNNING (now KILLED) and load the existing trial runs."""
        stale = reconcile_running(self.tracker)
        self.known = {r.tags.get("trial_key", ""): r for r in self.tracker.runs(TRIAL)}
        return stale

    # ---- parent runs -----------------------------------------------------------------------------------

    def open_stage(self, stage: str, tags: dict[str, str]) -> None:
        self.parents[stage] = self.tracker.parent_run(stage, self.sweep_key, tags)

    def close_stage(self, stage: str, status: str, counts: dict[str, int]) -> None:
        run_id = self.parents.get(stage)
        if run_id is None:
            return
        self.tracker.log_metrics(run_id, {f"trials_{k}": float(v) for k, v in counts.items()}, 0)
        self.tracker.set_tags(run_id, {"status": status})
        self.tracker.end_run(run_id, status)

    # ---- trial runs ------------------------------------------------------------------------------------

    def open_trial(self, spec: TrialSpec, info: dict[str, str] | None = None) -> str:
        """The trial's run, RUNNING (created, or reopened on a relaunch or a retry)."""
        key = spec.key()
        if key in self.run_ids:
            if info:
                self.tracker.set_tags(self.run_ids[key], info)
            return self.run_ids[key]
        if spec.stage not in self.parents:
            self.open_stage(spec.stage, {})
        tags = {**trial_tags(spec, self.sweep_key), **(info or {})}
        parent = self.parents[spec.stage]
        run_id = self.tracker.trial_run(parent, key, flatten(spec.to_dict()), tags, name=run_name(spec))
        self.run_ids[key] = run_id
        # A relaunch continues the curve MLflow has (a run is reused, never duplicated).
        self.logged[key] = self.tracker.logged_steps(run_id, "val_loss") if key in self.known else set()
        return run_id

    def log_report(self, spec: TrialSpec, metrics: dict[str, Any]) -> None:
        """One evaluation of a running trial, at step = tokens seen (skipped if already logged)."""
        key, tokens = spec.key(), metrics.get("tokens")
        run_id = self.open_trial(spec)
        if tokens is None or int(tokens) in self.logged[key]:
            return
        point = {k: metrics[k] for k in CURVE_METRICS if k in metrics}
        point.update({k: v for k, v in metrics.items() if k.startswith("extra_val_loss_")})
        if "tokens_per_s" in metrics:
            point["train_tokens_per_s"] = metrics["tokens_per_s"]
        self.tracker.log_metrics(run_id, _numbers(point), int(tokens))
        self.logged[key].add(int(tokens))

    def is_recorded(self, spec: TrialSpec) -> bool:
        """Finished and recorded by an earlier launch (its run FINISHED and its ledger row FINISHED)."""
        known = self.known.get(spec.key())
        return known is not None and known.status == FINISHED and self.ledger.status(spec.key()) == FINISHED

    def finished(self, spec: TrialSpec, result: TrialResult, info: dict[str, str], *, reused: bool) -> None:
        """A FINISHED run (the curve points not yet logged, final metrics, stop reason) and its ledger row."""
        key = spec.key()
        run_id = self.open_trial(spec)
        for p in result.curve:  # the points no report delivered (an attempt that failed right after them)
            if p.tokens not in self.logged[key]:
                values = {"val_loss": p.val_loss, "train_loss": p.train_loss, "lr": p.lr}
                values.update({f"extra_val_loss_{k}": v for k, v in p.extra_val_loss.items()})
                self.tracker.log_metrics(run_id, _numbers(values), p.tokens)
                self.logged[key].add(p.tokens)
        self.tracker.log_metrics(run_id, _numbers(final_metrics(result)), result.tokens_seen)
        tags = {"status": FINISHED, "stop_reason": result.stop_reason, "N": str(result.n_params), **info}
        if reused:
            tags["reused"] = "true"  # done before this launch: another sweep's pre-training, a killed driver
        self.tracker.set_tags(run_id, tags)
        self.tracker.end_run(run_id, FINISHED)
        self.closed.add(key)
        self.ledger.upsert(trial_row(spec, self.sweep_key, status=FINISHED, result=result))

    def failed(self, spec: TrialSpec, reason: str, error: str, info: dict[str, str]) -> None:
        run_id = self.open_trial(spec)
        self.tracker.set_tags(run_id, {"status": FAILED, "failure_reason": reason, "error": error, **info})
        self.tracker.end_run(run_id, FAILED)
        self.closed.add(spec.key())
        self.ledger.upsert(trial_row(spec, self.sweep_key, status=FAILED, failure_reason=reason, error=error))

    def killed(self, spec: TrialSpec) -> None:
        """Interrupted: the run ends KILLED, no ledger row (the trial is resumable)."""
        key = spec.key()
        if key in self.run_ids and key not in self.closed:
            self.tracker.end_run(self.run_ids[key], KILLED)
            self.closed.add(key)

    def kill_open(self) -> None:
        """After Ctrl-C: every run this launch opened and did not end is KILLED, and so are the parents."""
        for key, run_id in self.run_ids.items():
            if key not in self.closed:
                self.tracker.end_run(run_id, KILLED)
                self.closed.add(key)
        for run_id in self.parents.values():
            self.tracker.end_run(run_id, KILLED)


def trial_tags(spec: TrialSpec, sweep_key: str) -> dict[str, str]:
    """The tags a trial's run is searched and grouped by."""
    return {
        "trial_key": spec.key(),
        "sweep_key": sweep_key,
        "sweep": spec.sweep,
        "stage": spec.stage,
        "language": spec.language,
        "init": spec.init,
        "size": spec.model.name,
        "N": str(estimate_n(spec.model)),
        "D_F": str(spec.data.d_f) if spec.data.d_f is not None else "all",
        "lr": f"{spec.lr:g}",
        "schedule": spec.schedule.kind,
        "seed": str(spec.seed),
    }


def run_name(spec: TrialSpec) -> str:
    """What a trial's run is called in the tracker's UI: its axes, then its key."""
    return f"{spec.stage}-{spec.language}-{spec.init}-{spec.model.name}-{spec.key()}"


def final_metrics(result: TrialResult) -> dict[str, float]:
    """The scalar quantities of a finished run (its ledger columns, docs/ledger.md)."""
    out: dict[str, float] = {
        k: float(v)
        for k, v in dataclasses.asdict(result).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if result.val_tokens_per_char:
        out["best_val_bpc"] = result.best_val_loss * result.val_tokens_per_char / math.log(2)
    if result.test_loss is not None and result.test_tokens_per_char:
        out["test_bpc"] = result.test_loss * result.test_tokens_per_char / math.log(2)
    out.update({f"best_extra_val_loss_{k}": v for k, v in result.best_extra_val_loss.items()})
    out.update({f"zero_shot_extra_val_loss_{k}": v for k, v in result.zero_shot_extra_val_loss.items()})
    return out


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    # None means "no value" (dropped); NaN and inf (a diverged run) are kept, MLflow stores them.
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
