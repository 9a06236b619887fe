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
from pathlib import Path
from typing import Any

from sweep_engine.ledger import Ledger, trial_row
from sweep_engine.provenance import git_commit, package_versions
from sweep_engine.shapes import estimate_n
from sweep_engine.spec import FAILED, FINISHED, KILLED, TrialResult, TrialSpec, content_hash, key_dict
from sweep_engine.tracking import (
    TRIAL,
    DatasetRecord,
    ModelRecord,
    RunRecord,
    Tracker,
    flatten,
    reconcile_running,
)

CURVE_METRICS = ("val_loss", "train_loss", "lr")


class Recorder:
    """Writes trial runs (MLflow) and rows (ledger) for one sweep; the single writer of both.

    Args:
        tracker: Where the runs go.
        ledger: The sweep's ledger.
        sweep_key: The sweep's key (a tag of every run, a column of every row).
        checkpoints_dir: The trials' directories; a finished trial's run records its `best/` model from there.
    """

    def __init__(
        self, tracker: Tracker, ledger: Ledger, sweep_key: str, checkpoints_dir: Path | None = None
    ) -> None:
        self.tracker = tracker
        self.ledger = ledger
        self.sweep_key = sweep_key
        self.checkpoints_dir = checkpoints_dir  # where each trial's best/ is (None: record no model)
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
        tags = {**trial_tags(spec, self.sweep_key), **source_tags(), **(info or {})}
        parent = self.parents[spec.stage]
        run_id = self.tracker.trial_run(parent, key, flatten(spec.to_dict()), tags, name=run_name(spec))
        self.run_ids[key] = run_id
        if key not in self.known:  # a new run: what it reads (a relaunch finds it logged)
            self.tracker.log_dataset(run_id, training_dataset(spec))
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
        if "mfu" in metrics:
            point["mfu"] = metrics["mfu"]
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
        best = self.checkpoints_dir / key / "best" if self.checkpoints_dir is not None else None
        if best is not None and (best / "config.json").is_file():
            # MLflow's model names allow no '.', ':' or '/': the run's name without its LR (a tag has it).
            name = f"{spec.language}-{spec.init}-{spec.model.name}-D_F={spec.data.d_f or 'all'}-{key[:8]}"
            model = ModelRecord(
                name, str(best), result.tokens_at_best, {"trial_key": key, "lr": f"{spec.lr:g}"}
            )
            self.tracker.log_model(run_id, model)
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
    """What a trial's run is called in the tracker's UI, readable without opening a column: language, init,
    size, D_F and LR (the seed when not 0), then the start of its key (names need not be unique; keys are).
    E.g. `de finetune xs D_F=4000 lr=0.003 36332dcf`."""
    d_f = "all" if spec.data.d_f is None else f"{spec.data.d_f:,}".replace(",", "_")
    init = "pretrain" if spec.stage == "pretrain" else spec.init
    seed = f" seed={spec.seed}" if spec.seed else ""
    return f"{spec.language} {init} {spec.model.name} D_F={d_f} lr={spec.lr:g}{seed} {spec.key()[:8]}"


def source_tags() -> dict[str, str]:
    """The run's source as MLflow shows it (the runs table's Source and Version columns): the git commit of the
    code, and the versions of the packages that shape the numbers."""
    commit = git_commit()
    tags = {
        "mlflow.source.type": "LOCAL",
        # The commit first: the runs table's Source column shows a dozen characters.
        "mlflow.source.name": f"git {commit[:10]}{' dirty' if commit.endswith('-dirty') else ''} sweep-engine",
        "mlflow.source.git.commit": commit,
    }
    tags.update({f"versions.{name}": version for name, version in package_versions().items()})
    return tags


def training_dataset(spec: TrialSpec) -> DatasetRecord:
    """The trial's training set as a tracker dataset: corpus, split and D_F in its name; the digest hashes
    everything that fixes the exact tokens (corpus, tokenizer, held-out split, D_F), so two runs with one digest
    trained on the same subset."""
    corpus, data = spec.data.corpus, spec.data
    d_f = "all" if data.d_f is None else str(data.d_f)
    if corpus.kind == "path":
        source, source_type, label = str(corpus.path), "local", Path(str(corpus.path)).name
    elif corpus.kind == "hf":
        config = f"/{corpus.config}" if corpus.config else ""
        source, source_type = f"hf://datasets/{corpus.name}{config}", "hugging_face"
        label = f"{corpus.name}{config}:{corpus.split}"
    else:
        label = f"bible {'+'.join(corpus.translations) or 'default'} {corpus.part}"
        source, source_type = f"sweep-engine builtin {label}", "code"
    profile = {
        "corpus": label,
        "language": spec.language,
        "split": "train",
        "d_f_tokens": d_f,
        "held_out": f"{data.val_size} {data.val_unit} (seed {data.split_seed})",
    }
    return DatasetRecord(
        name=f"{spec.language} {label} train D_F={d_f}",
        digest=content_hash(key_dict(data), 12),
        source=source,
        source_type=source_type,
        context="training",
        profile=profile,
    )


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
    if result.train_s > 0:  # seconds of evaluation per second of training (docs/gpu.md)
        out["eval_per_train"] = result.eval_s / result.train_s
    out.update({f"best_extra_val_loss_{k}": v for k, v in result.best_extra_val_loss.items()})
    out.update({f"zero_shot_extra_val_loss_{k}": v for k, v in result.zero_shot_extra_val_loss.items()})
    return out


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    # None means "no value" (dropped); NaN and inf (a diverged run) are kept, MLflow stores them.
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
