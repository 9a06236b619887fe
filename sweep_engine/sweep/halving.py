"""Successive halving between a cell's LR/schedule arms, and later seeds that follow the winner (no Ray here).

With `search.halving` set, each cell (language, size, D_F, init) runs its first seed on every arm (every LR x
schedule of the grid) and compares the arms at matched tokens: at rung k, the arms' evaluations number
first_rung x eta^k (the same tokens for every arm of a cell, whose trials differ only in LR and schedule), and
an arm keeps training only while its best validation loss so far is among the best 1/eta of the arms that got
there. An arm that already ended by itself (overfit, plateau, budget) takes part in every later rung with its
final best. The losers are asked to stop (a PRUNE file in their workdir, read by the training loop after its
next evaluation): they end FINISHED with stop reason `pruned` and keep the result they had. The winner trains
on to its own overfitting point.

Once every first-seed arm of a cell has ended, the cell's winner (the lowest best validation loss among the
arms that found their own overfitting point; then among those the token cap cut; then the pruned) is its
configuration, and the cell's other seeds run that arm alone: the seeds
measure the winner's run-to-run noise instead of re-running the losers. Selection stays on validation; the
analysis reports the test split.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sweep_engine.config import Space
from sweep_engine.space import Cell, transfer_trials
from sweep_engine.spec import TrialSpec

Arm = tuple[float, str, int, float]  # (lr, schedule kind, warmup steps, decay floor)


def arm_of(spec: TrialSpec) -> Arm:
    s = spec.schedule
    return (spec.lr, s.kind, s.warmup_steps, s.decay_floor)


def cell_of(spec: TrialSpec) -> Cell:
    return Cell(spec.language, spec.model.name, int(spec.data.d_f or 0), spec.init)


@dataclass
class Plan:
    """The transfer trials of a halving sweep: each cell's first-seed arms, and the later seeds per arm."""

    first: dict[Cell, list[TrialSpec]]
    later: dict[Cell, dict[Arm, list[TrialSpec]]]

    @property
    def total(self) -> int:
        """Trials that will run when nothing fails: every first-seed arm, plus the winner's later seeds."""
        return sum(len(f) for f in self.first.values()) + sum(
            len(next(iter(arms.values()), [])) for arms in self.later.values()
        )


def plan(space: Space) -> Plan:
    """Split the transfer grid into first-seed arms and later seeds (the first seed of each cell's list)."""
    first: dict[Cell, list[TrialSpec]] = defaultdict(list)
    later: dict[Cell, dict[Arm, list[TrialSpec]]] = defaultdict(lambda: defaultdict(list))
    seed0: dict[Cell, int] = {}
    for spec in transfer_trials(space):
        cell = cell_of(spec)
        seed0.setdefault(cell, spec.seed)  # the grid lists seeds last, the cell's first seed first
        if spec.seed == seed0[cell]:
            first[cell].append(spec)
        else:
            later[cell][arm_of(spec)].append(spec)
    return Plan(dict(first), {c: dict(a) for c, a in later.items()})


@dataclass
class _Arm:
    key: str
    best: dict[int, float] = field(default_factory=dict)  # evaluation number -> best validation loss so far
    done: bool = False  # ended (by itself, pruned, or failed)
    final: float | None = None  # its best validation loss when it ended (None: failed, or never finite)
    pruned: bool = False  # it ended with stop reason `pruned` (what the ledger says, so a relaunch agrees)
    capped: bool = False  # it ended with stop reason `budget`: its best is no overfitting point
    failed: bool = False
    stop_asked: bool = False

    def score_at(self, rung: int) -> float | None:
        """Best validation loss after `rung` evaluations (its final best once it has ended before them)."""
        if rung in self.best:
            return self.best[rung]
        if self.done and self.final is not None and (not self.best or max(self.best) < rung):
            return self.final
        return None


class Halving:
    """The rung bookkeeping of every cell's first-seed arms.

    Args:
        first: cell -> its first-seed arm trials (Plan.first).
        eta: keep the best 1/eta of the arms at each rung.
        first_rung: evaluations before the first comparison.
    """

    def __init__(self, first: dict[Cell, list[TrialSpec]], eta: int, first_rung: int) -> None:
        self.eta, self.first_rung = eta, first_rung
        self.cell_of: dict[str, Cell] = {}
        self.arms: dict[Cell, dict[str, _Arm]] = {}
        self.arm_config: dict[str, Arm] = {}
        for cell, specs in first.items():
            self.arms[cell] = {}
            for spec in specs:
                key = spec.key()
                self.cell_of[key] = cell
                self.arms[cell][key] = _Arm(key)
                self.arm_config[key] = arm_of(spec)

    def rungs(self, up_to: int) -> list[int]:
        out, r = [], self.first_rung
        while r <= up_to:
            out.append(r)
            r *= self.eta
        return out

    def report(self, key: str, evals: int, best_val_loss: float) -> list[str]:
        """An arm's evaluation; returns the running arms of its cell to stop now."""
        cell = self.cell_of.get(key)
        if cell is None:
            return []
        self.arms[cell][key].best[int(evals)] = float(best_val_loss)
        return self._decide(cell)

    def ended(
        self,
        key: str,
        best_val_loss: float | None,
        *,
        pruned: bool = False,
        capped: bool = False,
        failed: bool = False,
    ) -> list[str]:
        """An arm ended (by itself, pruned, or failed); returns running arms of its cell to stop now."""
        cell = self.cell_of.get(key)
        if cell is None:
            return []
        arm = self.arms[cell][key]
        arm.done, arm.pruned, arm.capped, arm.failed = True, pruned, capped, failed
        if not failed and best_val_loss is not None and math.isfinite(best_val_loss):
            arm.final = float(best_val_loss)
        return self._decide(cell)

    def _decide(self, cell: Cell) -> list[str]:
        arms = self.arms[cell]
        deepest = max((max(a.best, default=0) for a in arms.values()), default=0)
        stop: set[str] = set()
        for rung in self.rungs(deepest):
            scored = sorted(
                (
                    (score, a)
                    for a in arms.values()
                    if not a.failed and (score := a.score_at(rung)) is not None
                ),
                key=lambda sa: sa[0],
            )
            if len(scored) < 2:
                continue
            keep = math.ceil(len(scored) / self.eta)
            for _, a in scored[keep:]:
                # Still running, and not the cell's last arm that can finish: the driver reads reports late, so an
                # arm asked to stop at an early rung may still beat the others at a later one before it stops;
                # asking every arm would leave the cell with no run that trained to its own end.
                finishers = [
                    b for b in arms.values() if b is not a and not (b.stop_asked or b.pruned or b.failed)
                ]
                if not a.done and not a.stop_asked and finishers:
                    a.stop_asked = True
                    stop.add(a.key)
        return sorted(stop)

    def settled(self, cell: Cell) -> bool:
        """Every first-seed arm of the cell has ended."""
        return all(a.done for a in self.arms[cell].values())

    def winner(self, cell: Cell) -> Arm | None:
        """The cell's configuration once settled (None while arms are running, or when every arm failed):
        see `winner_of`."""
        if not self.settled(cell):
            return None
        arms = {
            k: (a.final, standing("pruned" if a.pruned else "budget" if a.capped else ""))
            for k, a in self.arms[cell].items()
            if not a.failed
        }
        return winner_of(arms, self.arm_config)


def standing(stop_reason: str) -> int:
    """How an arm's ending ranks it before its loss: 0 it found its own best, 1 the token cap cut it (its best
    measures compute, not data: the analysis inverts only converged cells), 2 it was pruned (cut short)."""
    return {"budget": 1, "pruned": 2}.get(stop_reason, 0)


def winner_of(arms: dict[str, tuple[float | None, int]], config: dict[str, Arm]) -> Arm | None:
    """The winning arm among (final best, standing) per trial key: the best standing first (an arm that found
    its overfitting point beats one the cap cut, which beats a pruned one), then the lowest loss."""
    ranked = sorted(
        ((rank, loss, key) for key, (loss, rank) in arms.items() if loss is not None and math.isfinite(loss)),
    )
    return config[ranked[0][2]] if ranked else None


def winners_from_ledger(space: Space, rows: dict[str, dict[str, Any]]) -> dict[Cell, Arm | None]:
    """Each cell's winner as the ledger records it (for `status` and relaunches); a cell whose first-seed arms
    have not all ended is absent."""
    p = plan(space)
    out: dict[Cell, Arm | None] = {}
    for cell, specs in p.first.items():
        results: dict[str, tuple[float | None, int]] = {}
        config = {}
        for spec in specs:
            row = rows.get(spec.key())
            if row is None:
                break
            config[spec.key()] = arm_of(spec)
            if row["status"] == "FINISHED":
                results[spec.key()] = (float(row["best_val_loss"]), standing(str(row["stop_reason"])))
        else:
            out[cell] = winner_of(results, config)
    return out
