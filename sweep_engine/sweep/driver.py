"""The sweep driver: which trials are done, which may start now, and what each ending means (no Ray here).

One launch runs both stages as one stream of trials: pre-training trials first, transfer trials as soon as they
may start (a from-scratch trial at once, a fine-tuning trial once its pre-training trial has finished), so one
Ray Tune experiment serves the whole sweep and no stage waits for the slowest trial of the one before.

Done means `result.json` in the trial's workdir. A launch starts only the trials without one (after a crash, a
Ctrl-C or a SIGKILL each of them resumes from its own `state.pt`) and records the ones that are done but not yet
in the ledger (finished under a killed driver, or pre-trained by another sweep). A FAILED row is final unless
`retry_failed`: three of the four reasons would fail again.

With `search.kind: optuna` the transfer trials come from one Optuna study per cell (search.py): a cell asks
its next (LR, schedule) when its previous one has ended, and tells the study the best validation loss. With
`search.halving` the grid's arms of each cell's first seed race with successive halving (halving.py): losers
are asked to stop at matched tokens, and once the arms have ended the cell's other seeds run the winner only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sweep_engine.config import Space
from sweep_engine.ledger import Ledger
from sweep_engine.plan import trial_flops
from sweep_engine.space import pretrain_trials, sweep_key, transfer_trials
from sweep_engine.spec import (
    FAILED,
    FINISHED,
    KILLED,
    RESULT_FILE,
    TrialResult,
    TrialSpec,
    read_result,
    request_prune,
)
from sweep_engine.sweep import halving
from sweep_engine.sweep.jobs import (
    DONE,
    Executor,
    NoProgressView,
    Outcome,
    ProgressView,
    SweepPaths,
    TrialJob,
    driver_lock,
)
from sweep_engine.sweep.record import Recorder
from sweep_engine.tracking import Tracker

if TYPE_CHECKING:  # optuna is imported only by sweeps that search with it
    from sweep_engine.space import Cell
    from sweep_engine.sweep.search import Asked, CellSearch

STAGES = ("pretrain", "transfer")


@dataclass
class StageSummary:
    stage: str
    total: int = 0
    finished: int = 0  # in this launch or before
    failed: int = 0
    blocked: int = 0  # fine-tuning trials whose pre-training trial did not finish
    killed: int = 0
    reused: int = 0  # done before this launch (an earlier launch, a killed driver, another sweep)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (trial_key, reason, error)

    @property
    def settled(self) -> int:
        return self.finished + self.failed + self.blocked


@dataclass
class SweepSummary:
    sweep_key: str
    stages: list[StageSummary]
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(s.failed == 0 and s.blocked == 0 for s in self.stages)

    @property
    def exit_code(self) -> int:
        """0: every trial finished; 1: some failed or were blocked; 130: interrupted (Ctrl-C)."""
        if self.interrupted:
            return 130
        return 0 if self.ok else 1


class SweepDriver:
    """Feeds an executor the trials of a space and records every start, evaluation and ending.

    It is the executor's JobSource and TrialEvents; both are called from the driver's process only.

    Args:
        space: A validated space.
        executor: Runs trials (ray_tune.RayExecutor, or jobs.InlineExecutor in tests).
        tracker: MLflow (tracking.MlflowTracker) or tracking.InMemoryTracker.
        progress: The live view.
        retry_failed: Start trials whose ledger row says FAILED again.
    """

    def __init__(
        self,
        space: Space,
        executor: Executor,
        tracker: Tracker,
        progress: ProgressView | None = None,
        *,
        retry_failed: bool = False,
    ) -> None:
        self.space = space
        self.executor = executor
        self.progress = progress or NoProgressView()
        self.retry_failed = retry_failed
        self.paths = SweepPaths.of(space)
        self.key = sweep_key(space)
        self.ledger = Ledger(self.paths.ledger)
        self.recorder = Recorder(tracker, self.ledger, self.key, self.paths.checkpoints_dir)
        self.specs: dict[str, TrialSpec] = {}
        self.summaries: dict[str, StageSummary] = {}
        self.ready: list[TrialJob] = []
        self.waiting: dict[str, list[TrialSpec]] = {}  # pre-training key -> fine-tuning trials waiting on it
        self.in_flight: set[str] = set()
        self.outcomes: dict[str, Outcome] = {}
        self.search: CellSearch | None = None  # with search.kind optuna
        self.asked: dict[str, Asked] = {}  # trial_key -> the Optuna pair it evaluates
        self.busy_cells: dict[Cell, Asked] = {}  # cell -> its pair in flight
        self.halving: halving.Halving | None = None  # with search.halving
        self.later: dict[Cell, dict[halving.Arm, list[TrialSpec]]] = {}  # cell -> arm -> its later seeds
        self.released: set[Cell] = set()  # cells whose winner's later seeds were admitted

    # ---- the sweep ---------------------------------------------------------------------------------------

    def run(self) -> SweepSummary:
        """Run every trial not done yet; failed trials do not stop the others.

        Returns:
            The summary; `interrupted` after Ctrl-C, with every open run marked KILLED.

        Raises:
            SweepBusy: another driver is running this sweep.
        """
        with driver_lock(self.paths.results_dir):
            return self._run()

    def _run(self) -> SweepSummary:
        self.start()
        interrupted = False
        try:
            if not self._settled():
                self.executor.run(self.key, self, self)
            interrupted = not self._settled()
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:
            self._stop_open()
            raise
        return self.finish(interrupted)

    def start(self) -> None:
        """Open the tracker's runs and plan the trials (the part of `run` before the executor)."""
        self.t0 = time.perf_counter()
        self.recorder.start()
        self._plan()

    def finish(self, interrupted: bool) -> SweepSummary:
        """Close (or, interrupted, mark KILLED) what is open and summarise (the part of `run` after it)."""
        if interrupted:
            self._stop_open()
        else:
            self._close_stages()
        stages = [self.summaries[s] for s in STAGES if s in self.summaries]
        return SweepSummary(self.key, stages, interrupted, time.perf_counter() - self.t0)

    def settled(self) -> bool:
        return self._settled()

    def done_elsewhere(self, key: str) -> None:
        """A trial of this sweep that another sweep of the same run trained (the shared pre-training): record
        it as reused, as a later launch would, and release what waited on it."""
        self.in_flight.discard(key)
        self._admit(self.specs[key], released=True)
        for waiting in self.waiting.pop(key, []):
            self._admit(waiting, released=True)

    def stop_open(self) -> None:
        self._stop_open()

    def _stop_open(self) -> None:
        """Ctrl-C (or an error in the executor): what was running ends KILLED and stays resumable."""
        for key in sorted(self.in_flight):
            self._end(Outcome(key, KILLED))
        self.recorder.kill_open()
        self.ledger.write()
        self.progress.close()

    def _close_stages(self) -> None:
        if self.search is not None and "transfer" in self.summaries:
            self.summaries["transfer"].blocked += self.search.blocked_trials(self._pretrain_done)
        for stage, summary in self.summaries.items():
            status = FINISHED if summary.failed == 0 and summary.blocked == 0 else FAILED
            counts = {"finished": summary.finished, "failed": summary.failed, "blocked": summary.blocked}
            self.recorder.close_stage(stage, status, counts)
        self.ledger.write()
        self.progress.close()

    def _plan(self) -> None:
        pre = pretrain_trials(self.space)
        if self.space.search.kind == "optuna" and self.space.transfer is not None:
            from sweep_engine.sweep.search import CellSearch

            self.search = CellSearch(self.space, self.paths.optuna_journal)
            transfer: list[TrialSpec] = []
            n_transfer = self.search.total_trials()
        elif self.space.search.halving is not None and self.space.transfer is not None:
            grid = halving.plan(self.space)
            settings = self.space.search.halving
            self.halving = halving.Halving(grid.first, settings.eta, settings.first_rung)
            self.later = grid.later
            transfer = [spec for specs in grid.first.values() for spec in specs]
            n_transfer = grid.total
        else:
            transfer = transfer_trials(self.space)
            n_transfer = len(transfer)
        for stage, n, first in (("pretrain", len(pre), pre), ("transfer", n_transfer, transfer)):
            if n:
                self.summaries[stage] = StageSummary(stage, total=n)
                tags = {"sweep": self.space.name, "trials": str(n), "search": self.space.search.kind}
                self.recorder.open_stage(stage, tags)
                sample = first[0] if first else transfer_trials(self.space)[0]
                self.progress.stage_started(stage, n, self.executor.concurrency(sample))
        for spec in pre + transfer:
            self._admit(spec)
        if self.search is not None:
            for asked in self.search.told_pairs():  # earlier launches: recorded (or failed) already
                for spec in asked.specs:
                    self._admit(spec)
            for asked in self.search.open_pairs():  # asked by a killed driver, never told: run them again
                self._admit_pair(asked)

    def _settled(self) -> bool:
        """Nothing ready, running or waiting, and no cell with budget left."""
        if self.ready or self.in_flight or any(self.waiting.values()):
            return False
        return self.search is None or not any(self._can_ask(c) for c in self.search.cells)

    # ---- admitting trials ------------------------------------------------------------------------------

    def _admit(self, spec: TrialSpec, *, released: bool = False) -> None:
        """Record a trial that is done, skip one that failed, hold one whose pre-training is still to come,
        and queue the rest."""
        key = spec.key()
        if key in self.specs and not released:
            return  # admitted already (the same pair sampled twice)
        self.specs[key] = spec
        summary = self.summaries[spec.stage]
        result = read_result(self.paths.workdir(spec))
        if result is not None:
            if not self.recorder.is_recorded(spec):
                self.recorder.finished(spec, result, {}, reused=True)
            summary.finished += 1
            summary.reused += 1
            self._settle_pair(key)
            self.progress.trial_ended(spec.stage, Outcome(key, FINISHED, result=result))
            self._arm_ended(key, result)
            return
        if self.ledger.status(key) == FAILED and not self.retry_failed:
            row = self.ledger.get(key) or {}
            summary.failed += 1
            summary.failures.append((key, str(row.get("failure_reason", "")), str(row.get("error", ""))))
            self._settle_pair(key)
            self.progress.trial_ended(
                spec.stage, Outcome(key, FAILED, failure_reason=row.get("failure_reason"))
            )
            self._arm_ended(key, None)
            return
        init_dir = self.paths.init_dir(spec)
        # Finished, not merely started: a running pre-training trial already has a best/ of its own.
        if spec.init_from and not self._pretrain_done(spec.init_from):
            if self._pretrain_pending(spec.init_from):
                self.waiting.setdefault(spec.init_from, []).append(spec)
            else:
                summary.blocked += 1
                self._settle_pair(key)
                self._arm_ended(key, None)
            return
        job = TrialJob(spec, self.paths.workdir(spec), init_dir, self.paths.cache_dir)
        self.ready.append(job)

    def _pretrain_done(self, key: str) -> bool:
        return (self.paths.checkpoints_dir / key / RESULT_FILE).exists()

    def _pretrain_pending(self, key: str) -> bool:
        return key in self.in_flight or any(j.key == key for j in self.ready)

    # ---- JobSource ---------------------------------------------------------------------------------------

    def next_job(self) -> TrialJob | None | Literal["FINISHED"]:
        if not self.ready and self.search is not None:
            for cell in self.search.cells:
                if self._can_ask(cell):
                    self._admit_pair(self.search.ask(cell))
                    if self.ready:
                        break
        if self.ready:
            # Pre-training first, the largest first: fine-tuning trials wait for it, and the longest run started
            # last would leave one slot training it while the other runs transfer trials one at a time (whose
            # LR arms then cannot race). From-scratch trials fill the other slots.
            pretrain = [i for i, j in enumerate(self.ready) if j.spec.stage == "pretrain"]
            i = max(pretrain, key=lambda i: trial_flops(self.ready[i].spec)) if pretrain else 0
            job = self.ready.pop(i)
            self.in_flight.add(job.key)
            return job
        return None if not self._settled() else DONE

    def next_is_racing_arm(self) -> bool:
        """Whether the next job `next_job` hands out is a first-seed arm of a halving cell that has another arm
        in flight (a joint launch hands it out at once, so that the arms race; together.py)."""
        if self.halving is None or not self.ready:
            return False
        if any(j.spec.stage == "pretrain" for j in self.ready):
            return False  # next_job hands out pre-training first
        cell = self.halving.cell_of.get(self.ready[0].key)
        return cell is not None and any(k in self.in_flight for k in self.halving.arms[cell])

    def _can_ask(self, cell: Cell) -> bool:
        assert self.search is not None
        if cell in self.busy_cells or not self.search.has_budget(cell):
            return False
        need = self.search.needs[cell]
        return need is None or self._pretrain_done(need)

    def _admit_pair(self, asked: Asked) -> None:
        self.busy_cells[asked.cell] = asked
        for spec in asked.specs:
            self.asked[spec.key()] = asked
        for spec in asked.specs:
            self._admit(spec)

    def _settle_pair(self, key: str) -> None:
        """Tell a cell's study once every seed of its pair has ended; the cell may then ask again."""
        asked = self.asked.get(key)
        if asked is None or self.busy_cells.get(asked.cell) is not asked:
            return
        keys = [s.key() for s in asked.specs]
        if any(self._pending(k) for k in keys):
            return
        if any(k in self.outcomes and self.outcomes[k].status == KILLED for k in keys):
            return  # interrupted: asked again on the relaunch
        values = []
        for k in keys:
            row = self.ledger.get(k)
            values.append(float(row["best_val_loss"]) if row and row["status"] == FINISHED else None)
        assert self.search is not None
        self.search.tell(asked, values)
        del self.busy_cells[asked.cell]

    def _pending(self, key: str) -> bool:
        waiting = (s.key() for specs in self.waiting.values() for s in specs)
        return key in self.in_flight or any(j.key == key for j in self.ready) or key in waiting

    # ---- TrialEvents -----------------------------------------------------------------------------------

    def started(self, key: str, info: dict[str, str]) -> None:
        spec = self.specs[key]
        self.recorder.open_trial(spec, info)
        self.progress.trial_started(spec.stage, key)

    def reported(self, key: str, metrics: dict[str, Any]) -> None:
        spec = self.specs[key]
        self.recorder.log_report(spec, metrics)
        self.progress.trial_reported(spec.stage, key, metrics)
        if self.halving is not None and "evals" in metrics and "best_val_loss" in metrics:
            self._prune(self.halving.report(key, int(metrics["evals"]), float(metrics["best_val_loss"])))

    def ended(self, outcome: Outcome) -> None:
        self._end(outcome)

    def _end(self, outcome: Outcome) -> None:
        key = outcome.trial_key
        spec = self.specs[key]
        summary = self.summaries[spec.stage]
        self.in_flight.discard(key)
        self.outcomes[key] = outcome
        if outcome.status == FINISHED and outcome.result is not None:
            self.recorder.finished(spec, outcome.result, outcome.info, reused=False)
            summary.finished += 1
        elif outcome.status == FAILED:
            reason, error = outcome.failure_reason or "crash", outcome.error or ""
            self.recorder.failed(spec, reason, error, outcome.info)
            summary.failed += 1
            summary.failures.append((key, reason, error))
        else:
            self.recorder.killed(spec)
            summary.killed += 1
        self.progress.trial_ended(spec.stage, outcome)
        if outcome.status == KILLED:
            return
        for waiting in self.waiting.pop(key, []):  # fine-tuning trials of this pre-training trial
            self._admit(waiting, released=True)
        self._settle_pair(key)
        self._arm_ended(key, outcome.result if outcome.status == FINISHED else None)

    # ---- successive halving (halving.py) ------------------------------------------------------------------

    def _arm_ended(self, key: str, result: TrialResult | None) -> None:
        """A first-seed arm ended (None: failed or blocked): stop the arms it now beats; once its cell's arms
        have all ended, admit the winner's later seeds."""
        if self.halving is None or key not in self.halving.cell_of:
            return
        best = result.best_val_loss if result is not None else None
        stop = result.stop_reason if result is not None else None
        self._prune(
            self.halving.ended(
                key, best, pruned=stop == "pruned", capped=stop == "budget", failed=result is None
            )
        )
        cell = self.halving.cell_of[key]
        if cell in self.released or not self.halving.settled(cell):
            return
        self.released.add(cell)
        arm = self.halving.winner(cell)
        later = self.later.get(cell, {})
        if arm is None:  # every arm failed: its later seeds have no configuration to run
            self.summaries["transfer"].blocked += len(next(iter(later.values()), []))
            return
        for spec in later.get(arm, []):
            self._admit(spec)

    def _prune(self, keys: list[str]) -> None:
        """Ask running arms to stop after their next evaluation (they end FINISHED, stop reason `pruned`)."""
        for key in keys:
            if key in self.in_flight:
                request_prune(
                    self.paths.workdir(self.specs[key]), "a losing LR/schedule arm (search.halving)"
                )
