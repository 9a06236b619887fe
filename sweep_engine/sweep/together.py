"""Several sweeps in one Tune experiment (no Ray here): `sweep-engine demo` and `launch A.yaml B.yaml ...`.

Each sweep keeps its own driver (its ledger, MLflow experiment and summary); `Together` is the one JobSource
and TrialEvents the executor sees. It hands out pre-training first, then the sweeps' trials in turn, so no
core idles while one sweep finishes its tail and the next has not started. A trial that several sweeps share
(the English pre-training, same trial key in every target space) runs once, for the first sweep that offers
it; the others hold it as in flight and, when it finishes, record it as reused and release the fine-tuning
trials that waited on it.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Literal

from sweep_engine.spec import FINISHED
from sweep_engine.sweep.driver import SweepDriver, SweepSummary
from sweep_engine.sweep.jobs import DONE, Executor, Outcome, TrialJob, driver_lock


class Together:
    """The drivers of several sweeps as one job source (see the module docstring)."""

    def __init__(self, drivers: list[SweepDriver]) -> None:
        self.drivers = drivers
        self.owner: dict[str, SweepDriver] = {}  # trial key -> the driver whose job runs it
        self.holders: dict[str, list[SweepDriver]] = {}  # trial key -> other drivers waiting for that run
        self.finished: set[str] = set()  # trial keys finished in this run (a later offer of one is reused)
        self.turn = 0

    def settled(self) -> bool:
        return all(d.settled() for d in self.drivers)

    # ---- JobSource ---------------------------------------------------------------------------------------

    def next_job(self) -> TrialJob | None | Literal["FINISHED"]:
        n = len(self.drivers)
        rotation = [self.drivers[(self.turn + i) % n] for i in range(n)]
        # Pre-training first (fine-tuning waits for it), from the first sweep that has it (so a shared English
        # model is trained by the first sweep, as separate launches would); then the sweeps in turn.
        pre = [d for d in self.drivers if any(j.spec.stage == "pretrain" for j in d.ready)]
        order = pre + [d for d in rotation if d not in pre]
        for driver in order:
            while True:
                job = driver.next_job()
                if not isinstance(job, TrialJob):
                    break
                if job.key in self.owner:  # another sweep runs this very trial: wait for its result
                    self.holders.setdefault(job.key, []).append(driver)
                    continue
                if job.key in self.finished:  # another sweep ran it already in this run
                    driver.done_elsewhere(job.key)
                    continue
                self.owner[job.key] = driver
                self.turn = (self.drivers.index(driver) + 1) % len(self.drivers)
                return job
        return DONE if self.settled() else None

    # ---- TrialEvents -------------------------------------------------------------------------------------

    def started(self, key: str, info: dict[str, str]) -> None:
        self.owner[key].started(key, info)

    def reported(self, key: str, metrics: dict[str, Any]) -> None:
        self.owner[key].reported(key, metrics)

    def ended(self, outcome: Outcome) -> None:
        key = outcome.trial_key
        owner = self.owner.pop(key)
        owner.ended(outcome)
        if outcome.status == FINISHED:
            self.finished.add(key)
        for holder in self.holders.pop(key, []):
            if outcome.status == FINISHED:
                holder.done_elsewhere(key)
            else:  # failed or killed there: the same here (a relaunch retries it like any other)
                holder.ended(outcome)


def run_together(drivers: list[SweepDriver], executor: Executor, name: str) -> list[SweepSummary]:
    """Run several sweeps' trials as one executor run (one Tune experiment named `name`).

    Returns:
        Each sweep's summary, in order; all interrupted after Ctrl-C.

    Raises:
        SweepBusy: another driver is running one of the sweeps.
    """
    with ExitStack() as stack:
        for d in drivers:
            stack.enter_context(driver_lock(d.paths.results_dir))
        for d in drivers:
            d.start()
        source = Together(drivers)
        interrupted = False
        try:
            if not source.settled():
                executor.run(name, source, source)
            interrupted = not source.settled()
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:
            for d in drivers:
                d.stop_open()
            raise
        return [d.finish(interrupted) for d in drivers]
