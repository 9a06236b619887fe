"""The Tracker interface: the in-memory twin and MLflow on a SQLite file obey the same rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sweep_engine.spec import FAILED, FINISHED, KILLED, RUNNING
from sweep_engine.tracking import (
    PARENT,
    TRIAL,
    InMemoryTracker,
    MlflowTracker,
    Tracker,
    _retry_locked,
    existing_tracker,
    flatten,
    reconcile_running,
)
from tests.tiny_sweep import mlflow_template


def test_flatten_uses_dotted_names_and_strings() -> None:
    spec = {"model": {"name": "xs", "d_model": 64}, "translations": ("web", "kjv"), "init_from": None}
    assert flatten(spec) == {
        "model.name": "xs",
        "model.d_model": "64",
        "translations": "['web', 'kjv']",
        "init_from": "None",
    }
    assert flatten({"extra_val": [["en", {"kind": "bible"}]]}) == {
        "extra_val.0.0": "en",
        "extra_val.0.1.kind": "bible",
    }


@pytest.fixture(params=["memory", "mlflow"])
def tracker(
    request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Tracker:
    if request.param == "memory":
        return InMemoryTracker()
    shutil.copy(mlflow_template(tmp_path_factory), tmp_path / "mlflow.db")
    return MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")


def test_runs_are_found_again_never_duplicated(tracker: Tracker) -> None:
    parent = tracker.parent_run("transfer", "sk1", {"sweep": "s"})
    assert tracker.parent_run("transfer", "sk1", {}) == parent
    assert tracker.parent_run("pretrain", "sk1", {}) != parent
    run = tracker.trial_run(parent, "k1", {"lr": "0.001"}, {"language": "es"}, name="nice-name")
    tracker.end_run(run, KILLED)
    assert tracker.trial_run(parent, "k1", {"lr": "0.001"}, {"language": "es"}) == run
    (rec,) = tracker.runs(TRIAL)
    assert rec.status == RUNNING and rec.params == {"lr": "0.001"} and rec.name == "nice-name"
    assert rec.tags["trial_key"] == "k1" and rec.tags["mlflow.parentRunId"] == parent
    assert len(tracker.runs(PARENT)) == 2 and len(tracker.runs()) == 3


def test_metrics_steps_tags_and_terminal_status(tracker: Tracker) -> None:
    parent = tracker.parent_run("pretrain", "sk", {})
    run = tracker.trial_run(parent, "k", {}, {})
    for step, loss in ((100, 3.0), (200, 2.5)):
        tracker.log_metrics(run, {"val_loss": loss, "lr": 1e-3}, step)
    assert tracker.logged_steps(run, "val_loss") == {100, 200}
    assert tracker.logged_steps(run, "missing") == set()
    tracker.set_tags(run, {"stop_reason": "overfit"})
    tracker.end_run(run, FAILED)
    (rec,) = tracker.runs(TRIAL)
    assert rec.status == FAILED and rec.tags["stop_reason"] == "overfit"


def test_reconcile_marks_left_running_runs_killed(tracker: Tracker) -> None:
    parent = tracker.parent_run("pretrain", "sk", {})
    done = tracker.trial_run(parent, "a", {}, {})
    tracker.end_run(done, FINISHED)
    tracker.trial_run(parent, "b", {}, {})  # a SIGKILLed driver never ends these
    assert len(reconcile_running(tracker)) == 2  # the parent and "b"
    statuses = {r.tags.get("trial_key", "parent"): r.status for r in tracker.runs()}
    assert statuses == {"parent": KILLED, "a": FINISHED, "b": KILLED}


def test_mlflow_run_name_and_existing_tracker(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert (
        existing_tracker(uri, "exp") is None and not (tmp_path / "m.db").exists()
    )  # read-only: creates nothing
    shutil.copy(mlflow_template(tmp_path_factory), tmp_path / "m.db")
    assert existing_tracker(uri, "exp") is None  # the store exists, the experiment does not
    tracker = MlflowTracker(uri, "exp")
    run = tracker.trial_run(tracker.parent_run("transfer", "sk", {}), "k", {}, {}, name="transfer-es-k")
    assert tracker.client.get_run(run).info.run_name == "transfer-es-k"
    found = existing_tracker(uri, "exp")
    assert found is not None and found.experiment_id == tracker.experiment_id
    assert existing_tracker(uri, "other") is None


def test_retry_on_database_lock() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert _retry_locked(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        _retry_locked(lambda: (_ for _ in ()).throw(ValueError("not a lock")))


def test_log_report_reaches_every_parent_run(tmp_path: Path) -> None:
    """A report logged after a sweep sits beside its runs, in the store's own artifact folder."""
    from sweep_engine.analysis.commands import log_report_to_mlflow, tracking_of

    results = tmp_path / "results" / "german"
    results.mkdir(parents=True)
    uri, experiment = tracking_of(results) or ("", "")
    assert experiment == "german" and uri.endswith("results/mlflow.db")
    tracker = MlflowTracker(uri, experiment)
    parents = [tracker.parent_run(stage, "k1", {}) for stage in ("pretrain", "transfer")]
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    (report / "report.md").write_text("# report\n")
    (report / "figures" / "a.png").write_bytes(b"png")
    logged = log_report_to_mlflow([results], report)
    assert sorted(logged) == sorted(parents)
    for run_id in parents:
        assert sorted(tracker.artifacts(run_id, "report")) == ["report/figures", "report/report.md"]
    assert (tmp_path / "results" / "mlartifacts").is_dir()
    assert log_report_to_mlflow([tmp_path / "nowhere" / "x"], report) == []
