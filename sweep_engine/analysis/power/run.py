"""`plan --power` end to end: grid, prior, worlds, probabilities, and the best next change.

1. The spaces' grid (grid.py) and a prior (the default, or fitted to finished sweeps).
2. `worlds` worlds through the real analysis on that grid: every question's probability.
3. The weakest question (lowest headline probability) and every single change of suggest.py, each run on the
   same worlds (common random numbers) for that question only, cheapest first (a change that could not beat
   the best so far per FLOP even by resolving it everywhere is not run); the change with the largest gain per
   FLOP, among gains larger than twice their paired Monte Carlo SE, is the best next change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweep_engine.analysis.power.estimate import Probabilities, default_jobs, per_world, run_worlds, summarise
from sweep_engine.analysis.power.grid import PlannedGrid, plan_grid
from sweep_engine.analysis.power.prior import DefaultPrior, Prior
from sweep_engine.analysis.power.questions import QUESTIONS, WIDTH, Outcome
from sweep_engine.analysis.power.simulate import BOOTSTRAP, Asked, law_can_be_identified
from sweep_engine.analysis.power.suggest import Change, candidate_changes, per_flop
from sweep_engine.errors import UserError

# Default worlds: a Monte Carlo SE of at most 8 points on any probability (0.5 / sqrt(40)), and a laptop or paper
# space with its changes tried in under 2 minutes on 2 shared cores (docs/power.md, section 8).
WORLDS = 40
MIN_WORLDS = 10  # below this a probability's Monte Carlo SE can exceed 15 points
ENOUGH = 0.99  # a weakest question answered this often needs no change


@dataclass
class ChangeResult:
    """A change's effect on the weakest question, on the same worlds as the base grid."""

    change: Change
    before: float
    after: float
    gain_se: float
    skipped: bool = False  # not run: even a gain to 1 would buy less per FLOP than a change already found

    @property
    def gain(self) -> float:
        return self.after - self.before

    @property
    def measurable(self) -> bool:
        return math.isfinite(self.gain) and self.gain > 2 * (
            self.gain_se if math.isfinite(self.gain_se) else 0
        )

    @property
    def per_flop(self) -> float:
        return per_flop(self.gain, self.change.extra_flops) if self.measurable else -math.inf


@dataclass
class PowerReport:
    """Everything `plan --power` prints (report.py renders it)."""

    planned: PlannedGrid
    prior: list[str]
    seed: int
    worlds: int
    bootstrap: int
    jobs: int
    width: float
    probabilities: Probabilities
    law_note: str
    weakest: str | None
    changes: list[ChangeResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> ChangeResult | None:
        ranked = sorted((c for c in self.changes if c.measurable), key=lambda c: -c.per_flop)
        return ranked[0] if ranked else None


def check_options(worlds: int, bootstrap: int, width: float) -> None:
    """Raises UserError (exit 2) naming the option and its rule."""
    if worlds < MIN_WORLDS:
        raise UserError(
            f"--worlds: must be at least {MIN_WORLDS} (a probability from fewer worlds has a Monte Carlo "
            f"error above 15 points), got {worlds}"
        )
    if bootstrap < 20:
        raise UserError(
            f"--bootstrap: must be at least 20 (the law's identifiability rule needs 20), got {bootstrap}"
        )
    if not 0 < width < 1:
        raise UserError(f"--width: must lie between 0 and 1 (exponent units), got {width}")


def power_analysis(
    paths: Sequence[Path],
    overrides: Sequence[str] = (),
    *,
    prior: Prior | None = None,
    worlds: int = WORLDS,
    seed: int = 0,
    bootstrap: int = BOOTSTRAP,
    jobs: int | None = None,
    width: float = WIDTH,
    suggest: bool = True,
) -> PowerReport:
    """The power of the grid the spaces would run, under `prior` (default: DefaultPrior).

    Raises:
        UserError: bad spaces or options.
    """
    check_options(worlds, bootstrap, width)
    t0 = time.perf_counter()
    planned = plan_grid(paths, overrides)
    prior = prior or DefaultPrior()
    jobs = jobs or default_jobs()
    base = planned.grid
    questions = frozenset(
        q
        for q in QUESTIONS
        if (q != "order" or len(base.languages or ()) > 1) and (q != "law" or planned.fits_law)
    )
    asked = Asked.of(base, questions, width)
    (outcomes,) = run_worlds(prior, seed, worlds, base, [base], asked, bootstrap, jobs)
    probs = summarise(outcomes, asked)
    ok, law_note = law_can_be_identified(base)
    report = PowerReport(
        planned,
        prior.describe(),
        seed,
        worlds,
        bootstrap,
        jobs,
        width,
        probs,
        law_note if not ok else "",
        None,
    )
    weakest = min(probs.headline, key=lambda q: (probs.headline[q][0], QUESTIONS.index(q)))
    report.weakest = weakest
    if suggest and probs.headline[weakest][0] < ENOUGH:
        report.changes = _try_changes(planned, prior, seed, worlds, outcomes, asked, weakest, bootstrap, jobs)
    report.seconds = time.perf_counter() - t0
    return report


def _try_changes(
    planned: PlannedGrid,
    prior: Prior,
    seed: int,
    worlds: int,
    base_outcomes: list[Outcome],
    asked: Asked,
    weakest: str,
    bootstrap: int,
    jobs: int,
) -> list[ChangeResult]:
    """Each change on the same worlds, for the weakest question only, cheapest first.

    A change is not run when even resolving the question in every world would buy less per FLOP than the best
    change found so far (its gain is at most 1 - before): the ranking is the same, and the dearest changes,
    which are also the slowest to simulate, are often the ones skipped.
    """
    one = Asked(frozenset({weakest}), asked.sizes, asked.d_f, asked.languages, asked.width)
    before = per_world(base_outcomes, weakest, asked)
    p0 = float(np.mean(before))
    out: list[ChangeResult] = []
    best = -math.inf
    for c in sorted(candidate_changes(planned), key=lambda c: (c.grid is None, c.extra_flops)):
        if c.grid is None:
            out.append(ChangeResult(c, p0, math.nan, math.nan))
            continue
        if per_flop(1.0 - p0, c.extra_flops) < best:
            out.append(ChangeResult(c, p0, math.nan, math.nan, skipped=True))
            continue
        if weakest == "law" and not law_can_be_identified(c.grid)[0]:
            a = np.zeros_like(before)  # the counting rule fails on this grid: "not identified" in every world
        else:
            (found,) = run_worlds(prior, seed, worlds, planned.grid, [c.grid], one, bootstrap, jobs)
            a = per_world(found, weakest, one)
        diff = a - before
        se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else math.nan
        result = ChangeResult(c, p0, float(np.mean(a)), se)
        best = max(best, result.per_flop)
        out.append(result)
    return out
