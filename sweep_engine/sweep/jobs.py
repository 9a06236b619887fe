"""The vocabulary the sweep's parts share: where a trial lives, what it is handed, how it ended, and the
interfaces between the driver (driver.py), the executors (ray_tune.py for Ray, `InlineExecutor` here) and the
progress view. No Ray, no MLflow, no torch.

A trial lives in its own content-addressed directory, `checkpoints_dir/<trial_key>`, shared by every sweep of
one storage root: `state.pt` while it runs, `best/` and `result.json` once it has finished (sweep_engine.training.checkpoint),
`failure.json` after an attempt raised, and `trial.log`, what every attempt printed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sweep_engine.errors import UserError
from sweep_engine.spec import FAILED, FINISHED, TrialResult, TrialSpec
from sweep_engine.sweep.faults import (
    DETERMINISTIC,
    Fault,
    error_message,
    failure_reason,
    fault_for,
    parse_faults,
)

if TYPE_CHECKING:  # trial processes import this module: keep pydantic and pandas out of them
    from sweep_engine.config import Space

STATE_FILE = "state.pt"
FAILURE_FILE = "failure.json"
LOG_FILE = "trial.log"
ATTEMPT_HEADER = "=== attempt "
# A line that names why a process ended: native aborts (Intel oneMKL, glibc), a signal caught by faulthandler.
_FATAL = re.compile(r"FATAL|Fatal Python error|Segmentation fault|Aborted|core dumped|Killed", re.IGNORECASE)
DONE: Literal["FINISHED"] = "FINISHED"  # JobSource.next_job's "nothing more will come"


@dataclass(frozen=True)
class SweepPaths:
    """Absolute locations of one sweep (Ray workers may run in another working directory)."""

    results_dir: Path
    checkpoints_dir: Path
    cache_dir: Path

    @staticmethod
    def of(space: Space) -> SweepPaths:
        return SweepPaths(
            space.results_dir.resolve(), space.checkpoints_dir.resolve(), space.cache_dir.resolve()
        )

    @property
    def ledger(self) -> Path:
        from sweep_engine.ledger import ledger_path

        return ledger_path(self.results_dir)

    @property
    def ray_dir(self) -> Path:
        return self.results_dir / "ray"

    @property
    def optuna_journal(self) -> Path:
        return self.results_dir / "optuna.journal"

    def workdir(self, spec: TrialSpec) -> Path:
        return self.checkpoints_dir / spec.key()

    def init_dir(self, spec: TrialSpec) -> Path | None:
        """A fine-tuning trial starts from its pre-training trial's best model."""
        return self.checkpoints_dir / spec.init_from / "best" if spec.init_from else None


def trial_log(workdir: Path) -> Path:
    """The trial's own log: every attempt's stdout and stderr, Python's and native libraries' alike (a segfault's
    traceback, an abort message), appended, one `=== attempt` header per attempt. On the shared storage, so the
    driver reads it whichever node ran the trial."""
    return Path(workdir) / LOG_FILE


def last_words(workdir: Path, max_lines: int = 3) -> str:
    """What the last attempt in the trial log said before it ended: the line of a fatal error (a native abort,
    a segfault, a Python traceback's last line), else its last lines; empty without a log."""
    try:
        text = trial_log(workdir).read_text(errors="replace")
    except OSError:
        return ""
    attempt = text.rsplit(ATTEMPT_HEADER, 1)[-1]
    lines = [line.strip() for line in attempt.splitlines()[1:] if line.strip()]
    fatal = [line for line in lines if _FATAL.search(line)]
    return "\n".join(fatal[:max_lines] if fatal else lines[-max_lines:])


def read_failure(workdir: Path) -> dict[str, str] | None:
    """What the trial wrapper wrote when an attempt raised: {"reason": ..., "error": ...}."""
    try:
        return dict(json.loads((Path(workdir) / FAILURE_FILE).read_text()))
    except (OSError, ValueError):
        return None


class SweepBusy(UserError):
    """Another driver is running the same sweep."""


@contextmanager
def driver_lock(results_dir: Path) -> Iterator[None]:
    """Hold results_dir/driver.lock for the whole launch: one driver per sweep writes its ledger and runs.

    An OS lock (flock), so a SIGKILLed driver releases it with its process.

    Raises:
        SweepBusy: another launch of this sweep is running.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / "driver.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise SweepBusy(
                f"{results_dir}: the sweep is already running (driver pid {f.read().strip()})"
            ) from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield


@contextmanager
def trial_lock(workdir: Path) -> Iterator[None]:
    """Hold workdir/trial.lock while a trial trains: two sweeps that need the same trial at the same time (the
    shared English pre-training) train it once; the second waits, then finds its result."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "trial.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@dataclass
class TrialJob:
    """Everything a trial process needs, as plain data (it crosses to Ray workers)."""

    spec: TrialSpec
    workdir: Path
    init_dir: Path | None
    cache_dir: Path

    @property
    def key(self) -> str:
        return self.spec.key()

    def payload(self, **extra: Any) -> dict[str, Any]:
        return {
            "key": self.key,
            "spec": self.spec.to_dict(),
            "workdir": str(self.workdir),
            "init_dir": str(self.init_dir) if self.init_dir else None,
            "cache_dir": str(self.cache_dir),
            **extra,
        }


@dataclass
class Outcome:
    """How a trial ended in this launch: FINISHED, FAILED (with a reason) or KILLED (interrupted)."""

    trial_key: str
    status: str
    result: TrialResult | None = None
    failure_reason: str | None = None
    error: str | None = None
    info: dict[str, str] = field(default_factory=dict)  # e.g. the Ray node that ran it


class TrialEvents(Protocol):
    """What an executor tells the driver, in the driver's process, while trials run."""

    def started(self, key: str, info: dict[str, str]) -> None: ...

    def reported(self, key: str, metrics: dict[str, Any]) -> None: ...

    def ended(self, outcome: Outcome) -> None: ...


class JobSource(Protocol):
    def next_job(self) -> TrialJob | None | Literal["FINISHED"]:
        """The next trial to start; None: none yet (wait for a running one to end); DONE: no more."""
        ...


class Executor(Protocol):
    def concurrency(self, spec: TrialSpec) -> int:
        """How many trials like `spec` run at once."""
        ...

    def run(self, name: str, source: JobSource, events: TrialEvents) -> None:
        """Start jobs from `source` until it says DONE, calling `events` as they run and end. `name` (the sweep
        key) is stable across relaunches. Returns early, without an ending for every job, on Ctrl-C."""
        ...


class ProgressView(Protocol):
    """A view of the sweep while it runs (progress.py draws one with rich)."""

    def stage_started(self, stage: str, total: int, concurrency: int) -> None: ...

    def trial_started(self, stage: str, key: str) -> None: ...

    def trial_reported(self, stage: str, key: str, metrics: dict[str, Any]) -> None: ...

    def trial_ended(self, stage: str, outcome: Outcome) -> None: ...

    def close(self) -> None: ...


class NoProgressView:
    """A ProgressView that shows nothing."""

    def stage_started(self, stage: str, total: int, concurrency: int) -> None:
        pass

    def trial_started(self, stage: str, key: str) -> None:
        pass

    def trial_reported(self, stage: str, key: str, metrics: dict[str, Any]) -> None:
        pass

    def trial_ended(self, stage: str, outcome: Outcome) -> None:
        pass

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------ in process


class InlineExecutor:
    """Runs trials one after another in this process, with the failure rules of the Ray path (unit tests).

    Args:
        run_fn: A `training.loop.run_trial`-compatible function.
        max_retries: Further attempts after a `crash`.
        faults: Fault-injection spec (faults.py).
    """

    def __init__(self, run_fn: Any, max_retries: int = 0, faults: str = "") -> None:
        self.run_fn = run_fn
        self.max_retries = max_retries
        self.faults = parse_faults(faults)

    def concurrency(self, spec: TrialSpec) -> int:
        return 1

    def run(self, name: str, source: JobSource, events: TrialEvents) -> None:
        while isinstance(job := source.next_job(), TrialJob):
            self._run_one(job, events)

    def _run_one(self, job: TrialJob, events: TrialEvents) -> None:
        fault = fault_for(job.spec, self.faults)
        for attempt in range(self.max_retries + 1):
            events.started(job.key, {"attempt": str(attempt + 1)})
            try:
                result = self.run_fn(
                    job.spec,
                    _InlineReporter(job, events, fault),
                    workdir=job.workdir,
                    init_dir=job.init_dir,
                    cache_dir=job.cache_dir,
                )
            except Exception as exc:
                reason = failure_reason(exc)
                if reason in DETERMINISTIC or attempt == self.max_retries:
                    events.ended(Outcome(job.key, FAILED, failure_reason=reason, error=error_message(exc)))
                    return
                continue
            events.ended(Outcome(job.key, FINISHED, result=result))
            return


class _InlineReporter:
    def __init__(self, job: TrialJob, events: TrialEvents, fault: Fault | None) -> None:
        self.job, self.events, self.fault = job, events, fault

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        if self.fault is not None:
            self.fault.fire(self.job.workdir)
        self.events.reported(self.job.key, dict(metrics))
