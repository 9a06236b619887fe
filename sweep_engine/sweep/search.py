"""The Optuna search inside each cell: one study per cell, asked and told in rounds (ask/tell, no Tune searcher).

A cell (language, size, D_F, init) is a point of the study's grid, so the cells stay a grid; inside each cell a
seeded sampler proposes (LR, schedule) pairs over `search.lr_range` (log-uniform) and `transfer.schedules`.
Each cell has one pair in flight at a time: it asks the next pair when the previous one has ended (so the sampler
learns from it), until `search.trials_per_cell` pairs; cells run side by side. The value told back is the best
validation loss, the mean over seeds. The studies
live in a journal file in the results directory: a relaunch loads them, re-runs the pairs a killed driver had
asked but not told (same trial keys, so they resume from their checkpoints), and continues the budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweep_engine.config import Space
from sweep_engine.space import Cell, cell_schedule, cell_trial, cells, pretrain_trials, search_key_dict
from sweep_engine.spec import ScheduleSpec, TrialSpec, content_hash, key_dict

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


def startup_trials(budget: int) -> int:
    """TPE's random start-up pairs for a cell of `budget` pairs: half the budget, at most Optuna's default 10.

    Optuna's TPE samples at random until it has `n_startup_trials` results (default 10), so with the budgets a
    cell gets (8 in the paper spaces) "tpe" would be random search; with half, the second half is guided."""
    return max(1, min(10, budget // 2))


@dataclass
class Asked:
    """One (LR, schedule) pair of one cell's study, and the trials (one per seed) that evaluate it."""

    cell: Cell
    number: int  # the Optuna trial number in the cell's study
    specs: list[TrialSpec]


class CellSearch:
    """The per-cell studies of one space.

    Args:
        space: A space with `search.kind: optuna`.
        journal: The Optuna journal file (created when missing).
    """

    def __init__(self, space: Space, journal: Path) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        assert space.transfer is not None and space.search.lr_range is not None
        optuna.logging.set_verbosity(logging.WARNING)
        self.space = space
        self.budget = space.search.trials_per_cell or 1
        self.seeds = list(space.transfer.seeds)
        self.schedules = [
            ScheduleSpec(kind=s.kind, warmup_steps=s.warmup_steps, decay_floor=s.decay_floor)
            for s in space.transfer.schedules
        ]
        low, high = space.search.lr_range
        self.distributions = {
            "lr": optuna.distributions.FloatDistribution(low, high, log=True),
            "schedule": optuna.distributions.CategoricalDistribution(list(range(len(self.schedules)))),
        }
        journal.parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(journal)))
        pretrain_keys = {t.model.name: t.key() for t in pretrain_trials(space)}
        self.cells = cells(space)
        self.needs = {c: pretrain_keys[c.size] if c.init == "finetune" else None for c in self.cells}
        self.studies = {
            cell: optuna.create_study(
                study_name=self.study_name(cell), storage=storage, direction="minimize", load_if_exists=True
            )
            for cell in self.cells
        }

    def _sampler(self, cell: Cell, n_trials: int) -> BaseSampler:
        """A sampler seeded by the cell and by how many pairs its study holds: reproducible, and a relaunch
        does not replay the samples of the first launch (a sampler's random state is not stored)."""
        import optuna

        seed = int(content_hash([self.study_name(cell), n_trials], 8), 16)
        if self.space.search.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(self.budget))
        return optuna.samplers.RandomSampler(seed=seed)

    def study_name(self, cell: Cell) -> str:
        """The cell plus a hash of what its trials share and of the search settings (not the budget, so that a
        larger budget continues the same study)."""
        template = cell_trial(self.space, cell, 1.0, self.schedules[0], self.seeds[0]).key()
        search = search_key_dict(self.space.search, exclude=frozenset({"trials_per_cell"}))
        schedules = key_dict(self.schedules)
        digest = content_hash({"template": template, "search": search, "schedules": schedules})
        return f"{cell.language}-{cell.size}-{cell.d_f}-{cell.init}-{digest}"

    def total_trials(self) -> int:
        return len(self.cells) * self.budget * len(self.seeds)

    def blocked_trials(self, pretrain_done: Callable[[str], bool]) -> int:
        """Trials never asked because their cell's pre-training trial did not finish."""
        blocked = 0
        for cell in self.cells:
            need = self.needs[cell]
            if need is not None and not pretrain_done(need):
                blocked += self._remaining(cell) * len(self.seeds)
        return blocked

    def _remaining(self, cell: Cell) -> int:
        from optuna.trial import TrialState

        trials = self.studies[cell].get_trials(deepcopy=False)
        return max(0, self.budget - sum(t.state != TrialState.WAITING for t in trials))

    def has_budget(self, cell: Cell) -> bool:
        """Fewer pairs asked (told or not) than `trials_per_cell`."""
        return self._remaining(cell) > 0

    def open_pairs(self) -> list[Asked]:
        """Pairs asked but never told (a killed driver): run again, under the same trial keys."""
        from optuna.trial import TrialState

        return [
            Asked(cell, t.number, self._specs(cell, t.params))
            for cell, study in self.studies.items()
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        ]

    def told_pairs(self) -> list[Asked]:
        """Pairs already evaluated (by earlier launches): their trials are done or failed."""
        from optuna.trial import TrialState

        told = (TrialState.COMPLETE, TrialState.FAIL)
        return [
            Asked(cell, t.number, self._specs(cell, t.params))
            for cell, study in self.studies.items()
            for t in study.get_trials(deepcopy=False, states=told)
        ]

    def ask(self, cell: Cell) -> Asked:
        """A new (LR, schedule) pair from the cell's sampler."""
        study = self.studies[cell]
        study.sampler = self._sampler(cell, len(study.get_trials(deepcopy=False)))
        trial = study.ask(self.distributions)
        return Asked(cell, trial.number, self._specs(cell, trial.params))

    def _specs(self, cell: Cell, params: dict[str, float]) -> list[TrialSpec]:
        # Four significant digits: a readable LR in names and tables, and the same trial key on a relaunch.
        lr = float(f"{params['lr']:.4g}")
        schedule = cell_schedule(self.space, int(params["schedule"]), cell.d_f)
        return [cell_trial(self.space, cell, lr, schedule, seed) for seed in self.seeds]

    def tell(self, asked: Asked, values: list[float | None]) -> None:
        """Tell the mean over the seeds that finished; FAIL when none did. Nothing when the round was cut
        short (the pair is asked again on the relaunch)."""
        from optuna.trial import TrialState

        study = self.studies[asked.cell]
        done = [v for v in values if v is not None]
        if done:
            study.tell(asked.number, sum(done) / len(done))
        else:
            study.tell(asked.number, state=TrialState.FAIL)

    def best(self) -> dict[Cell, tuple[float, dict[str, float]] | None]:
        """Each cell's best value and parameters so far (None before any completed trial)."""
        out: dict[Cell, tuple[float, dict[str, float]] | None] = {}
        for cell, study in self.studies.items():
            try:
                out[cell] = (float(study.best_value), dict(study.best_params))
            except ValueError:
                out[cell] = None
        return out
