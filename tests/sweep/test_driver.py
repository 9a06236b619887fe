"""The sweep driver and its Ray glue.

Driver tests run trials in this process (InlineExecutor) with a stand-in training function and an in-memory
tracker: every rule of the bookkeeping (order, resume, retries, reasons, Ctrl-C, reuse, Optuna) in milliseconds.
The `ray` tests run tiny real sweeps: the real training loop, real data, Ray Tune and MLflow on a SQLite file.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sweep_engine.config import Space
from sweep_engine.ledger import COLUMNS, read_ledger
from sweep_engine.space import cells, expand, pretrain_trials, transfer_trials
from sweep_engine.spec import FAILED, FINISHED, KILLED, RUNNING, TrialResult, TrialSpec, read_result
from sweep_engine.sweep.driver import SweepDriver, SweepSummary
from sweep_engine.sweep.jobs import InlineExecutor, SweepBusy, SweepPaths, driver_lock, trial_lock
from sweep_engine.tracking import PARENT, TRIAL, InMemoryTracker
from tests.tiny_sweep import fake_run, mlflow_template, shared_cache, space_dict, write_space


def trainings(space: Space, spec: TrialSpec) -> int:
    log = SweepPaths.of(space).workdir(spec) / "trainings.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def run_inline(space: Space, tracker: InMemoryTracker, faults: str = "", **kw: Any) -> SweepSummary:
    executor = InlineExecutor(fake_run, max_retries=space.resources.max_retries, faults=faults)
    return SweepDriver(space, executor, tracker, **kw).run()


def trial_runs(tracker: InMemoryTracker) -> dict[str, Any]:
    runs = tracker.runs(TRIAL)
    keys = [r.tags["trial_key"] for r in runs]
    assert len(keys) == len(set(keys)), "a trial has two runs"
    return {r.tags["trial_key"]: r for r in runs}


# ------------------------------------------------------------------------------------------------ driver


def test_both_stages_recorded_once_each(space: Space) -> None:
    tracker = InMemoryTracker()
    summary = run_inline(space, tracker)
    specs = expand(space)
    assert summary.exit_code == 0 and [s.finished for s in summary.stages] == [1, 8]
    ledger = read_ledger(space.results_dir / "trials.parquet")
    assert sorted(ledger.trial_key) == sorted(s.key() for s in specs)
    assert set(ledger.status) == {FINISHED} and set(COLUMNS) <= set(ledger.columns)
    parents = tracker.runs(PARENT)
    assert sorted(p.tags["stage"] for p in parents) == ["pretrain", "transfer"]
    assert {p.status for p in parents} == {FINISHED}
    runs = trial_runs(tracker)
    assert set(runs) == {s.key() for s in specs} and {r.status for r in runs.values()} == {FINISHED}
    first = transfer_trials(space)[0]
    some = runs[first.key()]
    assert some.params["model.d_model"] == "64" and some.params["data.corpus.language"] == first.language
    assert {"language", "init", "size", "N", "D_F", "lr", "trial_key", "sweep_key", "stage"} <= set(some.tags)
    assert some.tags["mlflow.parentRunId"] == next(p.run_id for p in parents if p.tags["stage"] == "transfer")
    base = 5.0 + math.log10(first.lr / 1e-3)
    expected = [(t, pytest.approx(base - t / 4000)) for t in (1000, 2000, 3000, 4000)]
    assert tracker.metric_history(some.run_id, "val_loss") == expected


def test_finetune_starts_only_after_its_pretraining_finished(space: Space) -> None:
    # fake_run asserts the base model's result.json exists before a fine-tuning trial starts
    assert run_inline(space, InMemoryTracker()).exit_code == 0


def test_relaunch_trains_nothing_and_logs_nothing_twice(space: Space) -> None:
    tracker = InMemoryTracker()
    run_inline(space, tracker)
    history = {k: tracker.metric_history(r.run_id, "val_loss") for k, r in trial_runs(tracker).items()}
    summary = run_inline(space, tracker)
    assert [s.reused for s in summary.stages] == [1, 8]
    assert all(trainings(space, s) == 1 for s in expand(space))
    assert {
        k: tracker.metric_history(r.run_id, "val_loss") for k, r in trial_runs(tracker).items()
    } == history
    assert len(read_ledger(space.results_dir / "trials.parquet")) == 9


def test_retries_a_crash_and_records_deterministic_failures(space: Space) -> None:
    tracker = InMemoryTracker()
    faults = (
        "language=es&init=scratch&d_f=1000:once,language=es&init=scratch&d_f=4000:always,"
        "language=de&init=scratch&d_f=1000:oom,language=de&init=scratch&d_f=4000:config"
    )
    summary = run_inline(space, tracker, faults)
    assert summary.exit_code == 1
    rows = read_ledger(space.results_dir / "trials.parquet").set_index(["language", "init", "d_f"])
    assert rows.loc[("es", "scratch", 1000), "status"] == FINISHED
    failed_keys = [("es", "scratch", 4000), ("de", "scratch", 1000), ("de", "scratch", 4000)]
    reasons = {k: rows.loc[k, "failure_reason"] for k in failed_keys}
    assert reasons == {
        ("es", "scratch", 4000): "crash",
        ("de", "scratch", 1000): "oom",
        ("de", "scratch", 4000): "config",
    }
    assert (rows.loc[[("es", "finetune", 1000), ("de", "finetune", 4000)], "status"] == FINISHED).all()
    by = {(s.language, s.init, s.data.d_f): s for s in transfer_trials(space)}
    assert trainings(space, by["es", "scratch", 1000]) == 2  # failed once, resumed, finished
    assert trainings(space, by["es", "scratch", 4000]) == 3  # max_retries 2: three attempts
    assert trainings(space, by["de", "scratch", 1000]) == trainings(space, by["de", "scratch", 4000]) == 1
    runs = trial_runs(tracker)
    once = runs[by["es", "scratch", 1000].key()]
    # every point once: 1000 from the result (its report was lost with the failed attempt), the rest live
    assert sorted(s for s, _ in tracker.metric_history(once.run_id, "val_loss")) == [1000, 2000, 3000, 4000]
    failed = runs[by["de", "scratch", 1000].key()]
    assert (
        failed.status == FAILED
        and failed.tags["failure_reason"] == "oom"
        and "injected" in failed.tags["error"]
    )
    assert {p.tags["stage"]: p.status for p in tracker.runs(PARENT)} == {
        "pretrain": FINISHED,
        "transfer": FAILED,
    }


def test_failed_trials_stay_failed_unless_retried(space: Space) -> None:
    tracker = InMemoryTracker()
    run_inline(space, tracker, "language=es&init=scratch&d_f=1000:config")
    spec = next(
        s for s in transfer_trials(space) if (s.language, s.init, s.data.d_f) == ("es", "scratch", 1000)
    )
    assert run_inline(space, tracker).exit_code == 1 and trainings(space, spec) == 1
    assert run_inline(space, tracker, retry_failed=True).exit_code == 0 and trainings(space, spec) == 2
    ledger = read_ledger(space.results_dir / "trials.parquet")
    assert ledger.trial_key.is_unique and set(ledger.status) == {FINISHED}


def test_finetuning_is_blocked_when_pretraining_fails(space: Space) -> None:
    tracker = InMemoryTracker()
    summary = run_inline(space, tracker, "stage=pretrain:always")
    pre, tr = summary.stages
    assert (pre.failed, tr.finished, tr.blocked) == (1, 4, 4) and summary.exit_code == 1
    assert all(s.init == "scratch" for s in transfer_trials(space) if trainings(space, s))


class _Interrupt:
    """fake_run that raises KeyboardInterrupt (Ctrl-C) at the first report of one trial."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, spec: TrialSpec, reporter: Any, **kw: Any) -> TrialResult:
        if spec.key() == self.key:
            self.key = ""

            class Boom:
                def report(self, *a: Any, **k: Any) -> None:
                    raise KeyboardInterrupt

            reporter = Boom()
        return fake_run(spec, reporter, **kw)


def test_ctrl_c_marks_runs_killed_and_resumes_in_the_same_run(space: Space) -> None:
    tracker = InMemoryTracker()
    victim = transfer_trials(space)[2]
    summary = SweepDriver(space, InlineExecutor(_Interrupt(victim.key())), tracker).run()
    assert summary.interrupted and summary.exit_code == 130
    runs = trial_runs(tracker)
    assert runs[victim.key()].status == KILLED
    assert {p.status for p in tracker.runs(PARENT)} == {KILLED}
    assert victim.key() not in set(read_ledger(space.results_dir / "trials.parquet").trial_key)
    assert run_inline(space, tracker).exit_code == 0
    after = trial_runs(tracker)
    assert after[victim.key()].run_id == runs[victim.key()].run_id and after[victim.key()].status == FINISHED
    assert all(trainings(space, s) == 1 for s in expand(space) if s.key() != victim.key())


def test_runs_left_running_by_a_killed_driver_are_reconciled(space: Space) -> None:
    tracker = InMemoryTracker()
    spec = pretrain_trials(space)[0]
    parent = tracker.parent_run("pretrain", "old", {})
    stale = tracker.trial_run(
        parent, spec.key(), {}, {"stage": "pretrain"}
    )  # as a SIGKILLed driver leaves it
    fake_run(
        spec, type("R", (), {"report": lambda *a, **k: None})(), workdir=SweepPaths.of(space).workdir(spec)
    )
    assert run_inline(space, tracker).exit_code == 0
    runs = trial_runs(tracker)
    assert runs[spec.key()].run_id == stale and runs[spec.key()].status == FINISHED
    assert RUNNING not in {r.status for r in tracker.runs()}


def test_pretraining_of_another_sweep_is_reused_and_recorded(tmp_path: Path) -> None:
    storage = tmp_path / "results"
    english = write_space(tmp_path / "en.yaml", {**space_dict(storage, name="english"), "transfer": None})
    assert run_inline(english, InMemoryTracker()).exit_code == 0
    spanish = write_space(tmp_path / "es.yaml", space_dict(storage, name="spanish", languages=("es",)))
    tracker = InMemoryTracker()
    summary = run_inline(spanish, tracker)
    assert summary.stages[0].reused == 1 and trainings(spanish, pretrain_trials(spanish)[0]) == 1
    pre = trial_runs(tracker)[pretrain_trials(spanish)[0].key()]
    assert pre.status == FINISHED and pre.tags["reused"] == "true"
    ledger = read_ledger(spanish.results_dir / "trials.parquet")
    assert len(ledger) == 5 and (ledger.stage == "pretrain").sum() == 1


def test_optuna_searches_each_cell_within_its_budget_and_continues(tmp_path: Path) -> None:
    data = space_dict(tmp_path / "results", languages=("es",))
    data["search"] = {"kind": "optuna", "trials_per_cell": 3, "sampler": "random", "lr_range": [1e-4, 1e-2]}
    space = write_space(tmp_path / "s.yaml", data)
    tracker = InMemoryTracker()
    summary = run_inline(space, tracker)
    assert summary.exit_code == 0 and summary.stages[1].finished == 4 * 3
    ledger = read_ledger(space.results_dir / "trials.parquet")
    transfer = ledger[ledger.stage == "transfer"]
    assert len(transfer) == 12 and transfer.groupby(["init", "d_f"]).lr.nunique().eq(3).all()
    assert (transfer.lr >= 1e-4).all() and (transfer.lr <= 1e-2).all()
    from sweep_engine.sweep.search import CellSearch

    search = CellSearch(space, SweepPaths.of(space).optuna_journal)
    assert all(len(s.get_trials()) == 3 for s in search.studies.values())
    best = search.best()
    for cell in cells(space):
        rows = transfer[(transfer.init == cell.init) & (transfer.d_f == cell.d_f)]
        found = best[cell]
        assert found is not None and found[0] == pytest.approx(rows.best_val_loss.min())
    # A killed driver leaves a pair asked but not told: the relaunch runs exactly that pair, nothing more.
    asked = search.ask(cells(space)[0])
    space2 = write_space(tmp_path / "s.yaml", {**data, "search": {**data["search"], "trials_per_cell": 4}})
    summary = run_inline(space2, tracker)
    assert summary.exit_code == 0
    lrs = set(read_ledger(space.results_dir / "trials.parquet").lr)
    assert asked.specs[0].lr in lrs and len(read_ledger(space.results_dir / "trials.parquet")) == 1 + 4 * 4


def test_tpe_starts_guiding_within_a_small_budget(tmp_path: Path) -> None:
    from sweep_engine.sweep.search import CellSearch, startup_trials

    assert [startup_trials(b) for b in (1, 3, 8, 20, 100)] == [1, 1, 4, 10, 10]
    data = space_dict(tmp_path / "results", languages=("es",))
    data["search"] = {"kind": "optuna", "trials_per_cell": 8, "sampler": "tpe", "lr_range": [1e-4, 1e-2]}
    search = CellSearch(write_space(tmp_path / "s.yaml", data), tmp_path / "optuna.journal")
    sampler = search._sampler(search.cells[0], 0)
    # Optuna's default (10 random start-up trials) would make all 8 pairs random: 4 are, 4 are TPE's.
    assert sampler._n_startup_trials == 4


def test_one_driver_per_sweep_and_one_trainer_per_trial(space: Space, tmp_path: Path) -> None:
    with driver_lock(space.results_dir.resolve()), pytest.raises(SweepBusy, match="already running"):
        run_inline(space, InMemoryTracker())
    assert run_inline(space, InMemoryTracker()).exit_code == 0  # released with its holder
    order: list[str] = []

    def second() -> None:
        with trial_lock(tmp_path / "trial"):
            order.append("second")

    with trial_lock(tmp_path / "trial"):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.2)
        order.append("first")
    waiter.join()
    assert order == ["first", "second"]


# ------------------------------------------------------------------------------------------------ Ray


@pytest.fixture(scope="module")
def ray_local() -> Any:
    import ray

    # "local": a new instance, never a cluster another `ray start` left running on this shared machine.
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_e2e_tiny_sweep_through_ray_tune_and_mlflow(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, ray_local: Any
) -> None:
    from sweep_engine.sweep.ray_tune import launch
    from sweep_engine.tracking import MlflowTracker

    space = write_space(
        tmp_path / "tiny.yaml",
        space_dict(tmp_path / "results"),
        shared_cache(tmp_path_factory),
        mlflow_template(tmp_path_factory),
    )
    summary = launch(space, faults="")
    assert summary.exit_code == 0, summary
    assert [(s.stage, s.total, s.finished) for s in summary.stages] == [
        ("pretrain", 1, 1),
        ("transfer", 8, 8),
    ]

    tracker = MlflowTracker(space.tracking_uri, space.experiment_name)
    parents = tracker.runs(PARENT)
    assert sorted((p.tags["stage"], p.status) for p in parents) == [
        ("pretrain", FINISHED),
        ("transfer", FINISHED),
    ]
    runs = {r.tags["trial_key"]: r for r in tracker.runs(TRIAL)}
    specs = {s.key(): s for s in expand(space)}
    assert len(tracker.runs(TRIAL)) == len(runs) == 9 and set(runs) == set(specs)
    parent_of = {p.tags["stage"]: p.run_id for p in parents}
    for key, run in runs.items():
        spec = specs[key]
        assert run.status == FINISHED
        assert run.tags["mlflow.parentRunId"] == parent_of[spec.stage]
        assert (run.tags["language"], run.tags["init"], run.tags["stage"]) == (
            spec.language,
            spec.init,
            spec.stage,
        )
        assert run.tags["stop_reason"] in ("overfit", "budget", "plateau", "diverged")
        assert run.params["lr"] == str(spec.lr) and run.params["stopping.token_cap"] == str(
            spec.stopping.token_cap
        )
        curve = tracker.metric_history(run.run_id, "val_loss")
        result = read_result(SweepPaths.of(space).workdir(spec))
        assert result is not None and [s for s, _ in curve] == [p.tokens for p in result.curve]
        assert tracker.metric_history(run.run_id, "best_val_loss") == [
            (result.tokens_seen, result.best_val_loss)
        ]

    ledger = pd.read_parquet(space.results_dir / "trials.parquet")
    assert len(ledger) == 9 and ledger.trial_key.is_unique and set(ledger.status) == {FINISHED}
    assert set(COLUMNS) <= set(ledger.columns) and "extra_val_loss_en" not in ledger.columns
    assert ledger.best_val_loss.between(0, 10).all() and (ledger.n_params > 0).all()
    ft = ledger[ledger.init == "finetune"]
    assert ft.zero_shot_loss.notna().all() and (ft.init_from == pretrain_trials(space)[0].key()).all()

    mtimes = {k: (SweepPaths.of(space).workdir(s) / "result.json").stat().st_mtime for k, s in specs.items()}
    again = launch(space, faults="")  # everything done: nothing trains, nothing is logged twice
    assert [s.reused for s in again.stages] == [1, 8]
    assert mtimes == {
        k: (SweepPaths.of(space).workdir(s) / "result.json").stat().st_mtime for k, s in specs.items()
    }
    assert len(tracker.runs(TRIAL)) == 9 and len(pd.read_parquet(space.results_dir / "trials.parquet")) == 9


@pytest.mark.ray
@pytest.mark.slow
def test_ray_retries_transient_failures_and_records_the_rest(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, ray_local: Any
) -> None:
    from sweep_engine.sweep.ray_tune import launch
    from sweep_engine.tracking import MlflowTracker

    data = space_dict(tmp_path / "results", languages=("es",), resources={"max_retries": 1})
    space = write_space(
        tmp_path / "f.yaml", data, shared_cache(tmp_path_factory), mlflow_template(tmp_path_factory)
    )
    faults = (
        "init=scratch&d_f=1000:once,init=finetune&d_f=1000:kill,"
        "init=scratch&d_f=4000:segv,init=finetune&d_f=4000:config"
    )
    summary = launch(space, faults=faults)
    assert summary.exit_code == 1
    ledger = pd.read_parquet(space.results_dir / "trials.parquet").set_index(["stage", "init", "d_f"])
    assert ledger.index.is_unique and len(ledger) == 5
    cols = ["status", "failure_reason"]
    got = {
        (i, d): tuple(ledger.loc[("transfer", i, d), cols])
        for i in ("scratch", "finetune")
        for d in (1000, 4000)
    }
    assert got == {
        ("scratch", 1000): (FINISHED, ""),  # raised once, resumed from its checkpoint
        ("finetune", 1000): (FINISHED, ""),  # its process died once (a lost worker)
        ("scratch", 4000): (FAILED, "crash"),  # its process crashed (SIGSEGV) on both attempts
        ("finetune", 4000): (FAILED, "config"),  # deterministic: not retried
    }
    runs = {(r.tags["init"], r.tags["D_F"]): r for r in MlflowTracker(space.tracking_uri, "tiny").runs(TRIAL)}
    assert runs["scratch", "1000"].tags["attempt"] == "2" and runs["finetune", "4000"].tags["attempt"] == "1"
    # A process that died says why and where its log is, never just "the process died".
    crashed = runs["scratch", "4000"]
    log = Path(crashed.tags["log_file"])
    assert crashed.status == FAILED and log.is_file() and log.parent.name == crashed.tags["trial_key"]
    assert "injected native crash" in crashed.tags["error"] and "Segmentation fault" in crashed.tags["error"]
    assert f"(log: {log})" in crashed.tags["error"]
    assert log.read_text().count("=== attempt ") == 2 and "in fire" in log.read_text()  # faulthandler's stack
    assert ledger.loc[("transfer", "scratch", 4000), "error"] == crashed.tags["error"]
    assert runs["finetune", "4000"].tags["failure_reason"] == "config"


@pytest.mark.ray
@pytest.mark.slow
def test_multi_worker_trials_run_ddp_through_ray_train(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, ray_local: Any
) -> None:
    from sweep_engine.sweep.ray_tune import launch
    from sweep_engine.tracking import MlflowTracker

    # Two trials of two workers each, side by side on two CPUs (0.49 CPU a worker + 0.01 a trial driver): the
    # pre-training finishes; the transfer trial raises on every attempt, Ray Train retries its workers
    # (max_retries 1), then the trial ends FAILED without a second round of retries from Tune.
    data = space_dict(
        tmp_path / "results",
        languages=("es",),
        resources={"cpus_per_trial": 0.49, "workers_per_trial": 2, "max_retries": 1},
        transfer={"d_f": [1000], "init": ["scratch"]},
    )
    space = write_space(
        tmp_path / "ddp.yaml", data, shared_cache(tmp_path_factory), mlflow_template(tmp_path_factory)
    )
    summary = launch(space, faults="stage=transfer:always")
    assert [(s.stage, s.finished, s.failed) for s in summary.stages] == [
        ("pretrain", 1, 0),
        ("transfer", 0, 1),
    ]
    spec = pretrain_trials(space)[0]
    result = read_result(SweepPaths.of(space).workdir(spec))
    assert result is not None and result.tokens_seen == spec.stopping.token_cap
    runs = {r.tags["stage"]: r for r in MlflowTracker(space.tracking_uri, space.experiment_name).runs(TRIAL)}
    assert runs["pretrain"].status == FINISHED and runs["pretrain"].tags["node_id"]
    tracker = MlflowTracker(space.tracking_uri, space.experiment_name)
    steps = [s for s, _ in tracker.metric_history(runs["pretrain"].run_id, "val_loss")]
    assert len(steps) == len(set(steps)) == len(result.curve)  # forwarded from rank 0, each point once
    failed = runs["transfer"]
    assert failed.status == FAILED and failed.tags["failure_reason"] == "crash"
    assert failed.tags["attempt"] == "1"  # Ray Train retried; Tune did not retry the whole trial again
    assert (space.results_dir / "ray" / f"train-{spec.key()}").is_dir()  # the Train run, named by trial_key


def test_the_largest_pretraining_starts_first(tmp_path: Path) -> None:
    # Longest first: the largest English model started last would leave one slot training it alone at the end.
    d = space_dict(tmp_path / "results")
    d["pretrain"] = {**d["pretrain"], "sizes": ["xs", "m", "s"]}
    driver = SweepDriver(write_space(tmp_path / "tiny.yaml", d), InlineExecutor(fake_run), InMemoryTracker())
    driver.start()
    handed = [driver.next_job() for _ in range(3)]
    assert [job.spec.model.name for job in handed if not isinstance(job, str) and job] == ["m", "s", "xs"]
