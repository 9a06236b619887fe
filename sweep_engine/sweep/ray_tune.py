"""Ray glue: start or join Ray, and run a batch of trials as one Ray Tune experiment (with ray_train.py, the
only modules that import Ray).

`launch()` is what `sweep-engine launch` runs: check and prepare the data (before anything else, so bad input
writes nothing), open the MLflow tracker, start an embedded Ray (or join `address`), and let the driver
(driver.py) run the stages through `RayExecutor`.

Restoring: Tune's own experiment restore is not used. The driver submits only the trials without a result and
each trial resumes from its own `state.pt`, which survives anything short of losing the disk; Tune's experiment
state would add a second source of truth about the same trials (and cannot take the Optuna rounds, which build
trials between Tune runs). Tune still names its experiment after the sweep key and stage, never a timestamp.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher

from sweep_engine.config import Space
from sweep_engine.space import expand, pretrain_trials, transfer_trials
from sweep_engine.spec import FAILED, FINISHED, KILLED, TrialResult, TrialSpec, content_hash
from sweep_engine.sweep.driver import SweepDriver, SweepSummary
from sweep_engine.sweep.faults import FAULTS_ENV, parse_faults
from sweep_engine.sweep.jobs import (
    DONE,
    JobSource,
    Outcome,
    ProgressView,
    SweepPaths,
    TrialEvents,
    TrialJob,
    last_words,
    read_failure,
    trial_log,
)
from sweep_engine.sweep.ray_train import trial_entry
from sweep_engine.sweep.together import run_together
from sweep_engine.tracking import Tracker, open_tracker

log = logging.getLogger(__name__)


def launch(
    space: Space,
    *,
    address: str | None = None,
    retry_failed: bool = False,
    progress: ProgressView | None = None,
    tracker: Tracker | None = None,
    faults: str | None = None,
    data_progress: Callable[[int, int, str], None] | None = None,
) -> SweepSummary:
    """Run (or continue) a sweep: the pre-training stage, then the transfer stage.

    Args:
        space: A validated space.
        address: A Ray cluster to join (`ray start --head` / `ray up`); None: $RAY_ADDRESS, else a private
            local Ray.
        retry_failed: Also re-run trials the ledger records as FAILED.
        progress: The live view (progress.RichProgressView in the CLI).
        tracker: Defaults to MLflow at `space.tracking_uri`, experiment `space.experiment_name`.
        faults: Fault-injection spec (tests); defaults to $SWEEP_ENGINE_FAULTS.
        data_progress: Called as (done, total, message) while the data caches are built.

    Returns:
        What ended how. Raises nothing for failed trials (see SweepSummary.exit_code).

    Raises:
        UserError: A corpus cannot be read or a fault spec is malformed (before anything is written).
    """
    faults = os.environ.get(FAULTS_ENV, "") if faults is None else faults
    parse_faults(faults)  # a typo in a test hook is bad input too
    prepare(space, data_progress)
    tracker = tracker or open_tracker(space.tracking_uri, space.experiment_name)
    with ray_session(address):
        executor = RayExecutor(SweepPaths.of(space), space, faults=faults)
        return SweepDriver(space, executor, tracker, progress, retry_failed=retry_failed).run()


def launch_together(
    spaces: list[Space],
    *,
    address: str | None = None,
    retry_failed: bool = False,
    views: list[ProgressView] | None = None,
    faults: str | None = None,
    data_progress: Callable[[int, int, str], None] | None = None,
) -> list[SweepSummary]:
    """Run several sweeps as one Tune experiment (together.py): the same as `launch` for each, without the
    idle cores between one sweep's last trials and the next sweep's first.

    Args:
        spaces: Validated spaces; resources, retries and the concurrency cap come from the first.
        views: One progress view per space (progress.PrefixedView onto a shared one), or None.
        address, retry_failed, faults, data_progress: as in `launch`.

    Returns:
        Each space's summary, in order.
    """
    faults = os.environ.get(FAULTS_ENV, "") if faults is None else faults
    parse_faults(faults)
    for space in spaces:
        prepare(space, data_progress)
    trackers = [open_tracker(s.tracking_uri, s.experiment_name) for s in spaces]
    with ray_session(address):
        first = spaces[0]
        executor = RayExecutor(SweepPaths.of(first), first, faults=faults, also=spaces[1:])
        drivers = [
            SweepDriver(s, executor, t, views[i] if views else None, retry_failed=retry_failed)
            for i, (s, t) in enumerate(zip(spaces, trackers, strict=True))
        ]
        name = "together-" + content_hash([d.key for d in drivers])
        return run_together(drivers, executor, name)


def prepare(space: Space, progress: Callable[[int, int, str], None] | None = None) -> None:
    """Check every corpus, then build the tokenizers and token caches, so that trials start training at once.

    Raises:
        DataError: A corpus cannot be read, or a D_F does not fit it.
    """
    from sweep_engine.data import prepare_data

    specs = expand(space)  # the data of an Optuna-sampled trial is that of the grid trials of its cell
    prepare_data([t.data for t in specs], space.cache_dir.resolve(), progress)


def ray_address(explicit: str | None) -> str | None:
    """Which Ray to use: `--address`, else $RAY_ADDRESS (what `ray job submit` sets for its entrypoint, and what
    Ray's own tools honour), else None: a private local Ray."""
    return explicit or os.environ.get("RAY_ADDRESS") or None


@contextmanager
def ray_session(address: str | None = None, **init_kwargs: Any) -> Iterator[None]:
    """Use the Ray already initialised in this process, else join `ray_address(address)` or start a private
    one; shut down only what this call started.

    No `runtime_env` is passed to `ray.init`: inside `ray job submit` Ray merges it into the job's, which gives
    the driver's job an environment of its own to set up on every node (Train V2, once set here, is Ray 2.60's
    default). The driver needs nothing from its working directory after the space is loaded.
    """
    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # trials log to files; the console shows the progress view
        "logging_level": logging.ERROR,
    }
    # "local" always starts a new instance; a bare ray.init() would join any cluster running on this machine.
    ray.init(address=ray_address(address) or "local", **{**kwargs, **init_kwargs})
    try:
        yield
    finally:
        ray.shutdown()


# How much of a node's `accelerator_type:<X>` resource a trial takes to be placed on it: Ray gives every node of
# that type 1.0 of it, and a token amount only selects the type (as Ray's own accelerator_type option does).
ACCELERATOR_SHARE = 0.001


def trial_resources(spec: TrialSpec) -> dict[str, float]:
    """What one Tune trial holds. A multi-worker trial only drives its Train workers, which hold their own (and
    are placed on the node type by their ScalingConfig's accelerator_type)."""
    res = spec.resources
    if res.workers > 1:
        return {"CPU": 0.01}  # a token amount: the Train workers request the real resources
    out = {"CPU": res.cpus, **dict(res.custom)}
    if res.gpus > 0:
        out["GPU"] = res.gpus
    if res.accelerator_type:
        out[f"accelerator_type:{res.accelerator_type}"] = ACCELERATOR_SHARE
    return out


def _trial_pgf(config: dict[str, Any]) -> tune.PlacementGroupFactory:
    return tune.PlacementGroupFactory([trial_resources(TrialSpec.from_dict(config["job"]["spec"]))])


def _trial_name(trial: Any) -> str:
    return str(trial.config["job"]["key"])


class RayExecutor:
    """Runs a batch of trials as one Tune experiment named `<sweep_key>-<stage>` under results/<sweep>/ray.

    Args:
        paths: The sweep's absolute paths.
        space: For resources, retries and the concurrency cap.
        faults: Fault-injection spec handed to every trial.
    """

    def __init__(
        self, paths: SweepPaths, space: Space, faults: str = "", also: list[Space] | None = None
    ) -> None:
        self.paths = paths
        self.max_retries = space.resources.max_retries
        self.max_concurrent = space.resources.max_concurrent_trials
        self.faults = faults
        # One trial of each stage (of every space run together): Tune's concurrency cap is one number.
        self.samples = [
            t for s in [space, *(also or [])] for t in pretrain_trials(s)[:1] + transfer_trials(s)[:1]
        ]

    def concurrency(self, spec: TrialSpec) -> int:
        """`max_concurrent_trials` when the space sets it (an autoscaling cluster grows to it), else as many
        trials as the cluster's CPUs and GPUs hold now."""
        if self.max_concurrent:
            return self.max_concurrent
        total = ray.cluster_resources()
        res = spec.resources
        fits = [math.floor(total.get("CPU", 1) / (res.cpus * res.workers) + 1e-9)]
        if res.gpus > 0:
            fits.append(math.floor(total.get("GPU", 0) / (res.gpus * res.workers) + 1e-9))
        return max(1, min(fits))

    def run(self, name: str, source: JobSource, events: TrialEvents) -> None:
        extra = {
            "faults": self.faults,
            "max_retries": self.max_retries,
            "train_storage": str(self.paths.ray_dir),
        }
        tuner = tune.Tuner(
            tune.with_resources(trial_entry, _trial_pgf),
            tune_config=tune.TuneConfig(
                # The driver hands out trials as they may start (fine-tuning after its pre-training).
                search_alg=_Source(source, extra),
                num_samples=-1,  # until the source says it is done
                max_concurrent_trials=max(self.concurrency(s) for s in self.samples),
                # One process per trial slot, kept between trials: saves ~3 s of importing torch per trial.
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(self.paths.ray_dir),
                verbose=0,
                callbacks=[_Bridge(events)],
                # Transient failures (a lost worker or node, a crash) restart the trial, which resumes from
                # its workdir's state.pt. Deterministic ones never reach Tune (ray_train reports them).
                failure_config=tune.FailureConfig(max_failures=self.max_retries),
            ),
        )
        with _quiet_tune():
            tuner.fit()


class _Source(Searcher):
    """Tune's search algorithm interface over the driver's JobSource (suggest = the next trial that may start)."""

    def __init__(self, source: JobSource, extra: dict[str, Any]) -> None:
        super().__init__()
        self.source, self.extra = source, extra

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        job = self.source.next_job()
        if job == DONE:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's documented end-of-search value
        if isinstance(job, TrialJob):
            return {"job": job.payload(**self.extra)}
        return None  # wait: a running trial will release the next ones

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        pass  # the driver hears of endings through _Bridge (a Tune callback), with the full trial

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles its config; the driver (open files, locks) stays in this process

    def get_state(self) -> dict[str, Any]:
        return {}  # the driver's own files are the state (Tune's experiment restore is not used)

    def set_state(self, state: dict[str, Any]) -> None:
        pass


@contextmanager
def _quiet_tune() -> Iterator[None]:
    """No Tune tables or per-trial tracebacks on the console: the progress view and the summary say it."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter honours verbose=0; the new one prints anyway
    logger = logging.getLogger("ray.tune")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Bridge(tune.Callback):
    """Tune callbacks (in the driver process) -> the driver's TrialEvents."""

    def __init__(self, events: TrialEvents) -> None:
        self.events = events

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles its config; the driver (open files, locks) stays in this process

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.events.started(_trial_name(trial), {"attempt": str(trial.run_metadata.num_failures + 1)})

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if not (result.get("final") or result.get("failed")):
            self.events.reported(_trial_name(trial), result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        key, last = _trial_name(trial), trial.last_result or {}
        node = {k: str(last[k]) for k in ("node_id", "node_ip") if k in last}
        if last.get("final"):
            result = TrialResult.from_dict(json.loads(last["result"]))
            self.events.ended(Outcome(key, FINISHED, result=result, info=node))
        elif last.get("failed"):
            reason, error = str(last.get("failure_reason", "crash")), str(last.get("error", ""))
            error, info = _with_log(error, _workdir(trial), node)
            self.events.ended(Outcome(key, FAILED, failure_reason=reason, error=error, info=info))
        else:  # stopped without an end of its own: the sweep was interrupted
            self.events.ended(Outcome(key, KILLED, info=node))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        key, workdir = _trial_name(trial), _workdir(trial)
        text = str(trial.get_error() or "")
        failure = read_failure(workdir)  # written when the last attempt raised; absent when its process died
        reason = "oom" if "OutOfMemoryError" in text else "crash"
        if failure:
            error = failure.get("error", "")
        else:  # the process ended without a Python exception: the log holds its last words
            said = last_words(workdir) or _last_lines(text)
            error = "the trial process died" + (f": {said}" if said else "")
        error, tags = _with_log(error, workdir, {})
        self.events.ended(Outcome(key, FAILED, failure_reason=reason, error=error, info=tags))


def _with_log(error: str, workdir: Path, info: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The error with the trial log's path appended (what the summary, the ledger and the run show), and the
    path as a run tag."""
    log = trial_log(workdir)
    return f"{error} (log: {log})", {**info, "log_file": str(log)}


def _workdir(trial: Any) -> Path:
    return Path(trial.config["job"]["workdir"])


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])
