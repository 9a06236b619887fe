"""One world through the real analysis: its ledger on a grid, the transfer analysis, the answers.

The stages are the analysis' own (cells.best_cells -> resample.replicate_cells -> transfer.analyze_transfer),
with two differences from `sweep-engine analyze`, both measured in docs/power.md:
- no joint fits (regimes.py): they take seconds per language and only label cells "beyond low-data", which the
  law then leaves out; here every cell is "unknown" and enters the law, as in any cell the joint fit cannot
  place;
- `bootstrap` replicates (BOOTSTRAP by default, not the space's 200-1000);
and one in the simulation: a held-out split of more than MAX_DOCS documents is simulated with MAX_DOCS and the
same noise on its mean (`fewer_documents`).

Worlds are drawn once and shared by every grid compared (common random numbers): world w is drawn from
`default_rng([seed, w])`, and each grid's ledger from `default_rng([seed, w, 1])`, so two grids differ only by
what they run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.power.prior import Prior
from sweep_engine.analysis.power.questions import Outcome, d_t_answers, law_answers, order_answers
from sweep_engine.analysis.resample import replicate_cells
from sweep_engine.analysis.synthetic import Grid, World, make_ledger, with_noise
from sweep_engine.analysis.transfer import analyze_transfer
from sweep_engine.analysis.transfer_law import MIN_CELLS, MIN_D_F, MIN_SIZES

MAX_DOCS = 400  # held-out documents simulated per split (see fewer_documents)
BOOTSTRAP = 60  # replicates per analysis (transfer_law needs >= 20; see docs/power.md for the comparison)


@dataclass(frozen=True)
class Asked:
    """Which questions to answer and on which cells: those of the base grid, so that a grid with a D_F or a
    size added is judged on the same questions as the grid it extends."""

    questions: frozenset[str]
    sizes: dict[str, float]
    d_f: tuple[float, ...]
    languages: tuple[str, ...]
    width: float

    @property
    def cells(self) -> set[tuple[str, str, float]]:
        return {(g, s, d) for g in self.languages for s in self.sizes for d in self.d_f}

    @classmethod
    def of(cls, grid: Grid, questions: frozenset[str], width: float) -> Asked:
        return cls(questions, dict(grid.sizes), tuple(grid.d_f), tuple(grid.languages or ()), width)


def law_can_be_identified(grid: Grid) -> tuple[bool, str]:
    """Whether transfer_law's counting rule can hold on this grid at all (cells the budget cuts are left out
    of the law), and if not, why. Without it the law is "not identified" in every world: no fit needed."""
    usable = [d for d in grid.d_f if grid.budget_d_f is None or d < grid.budget_d_f]
    cells = len(usable) * len(grid.sizes)
    if len(usable) >= MIN_D_F and len(grid.sizes) >= MIN_SIZES and cells >= MIN_CELLS:
        return True, ""
    return False, (
        f"{len(usable)} D_F that reach their overfitting point x {len(grid.sizes)} sizes = {cells} cells; "
        f"the rule needs {MIN_D_F} D_F, {MIN_SIZES} sizes and {MIN_CELLS} cells"
    )


def fewer_documents(world: World, grid: Grid, most: int = MAX_DOCS) -> tuple[World, Grid]:
    """The same measurement noise with at most `most` held-out documents per split.

    A split's mean loss averages its documents' noise: with J documents its SD is doc_noise / sqrt(J) (and the
    document difficulty's spread likewise over the bootstrap). Simulating J' < J documents with both SDs scaled
    by sqrt(J' / J) keeps those SDs, and the bootstrap still sees hundreds of documents; a paper-scale test set
    (2M tokens, ~2,000 documents) then costs what the laptop's 200 verses do.
    """
    j = max(grid.test_docs, grid.val_docs)
    if j <= most:
        return world, grid
    f = most / j
    small = replace(
        grid, val_docs=max(1, round(grid.val_docs * f)), test_docs=max(1, round(grid.test_docs * f))
    )
    scale = math.sqrt(f)
    return with_noise(world, doc_noise=world.doc_noise * scale, doc_spread=world.doc_spread * scale), small


def answer(
    world: World,
    grid: Grid,
    rng: np.random.Generator,
    asked: Asked,
    bootstrap: int,
    most_docs: int | None = MAX_DOCS,
) -> Outcome:
    """The answers the analysis of `grid`'s ledger in `world` gives to the `asked` questions (`most_docs`
    None: every held-out document simulated)."""
    if most_docs is not None:
        world, grid = fewer_documents(world, grid, most_docs)
    ledger = make_ledger(world, grid, rng)
    cells = best_cells(ledger)
    reps = replicate_cells(cells, ledger, bootstrap=bootstrap, seed=int(rng.integers(2**31)))
    fit_law = "law" in asked.questions and law_can_be_identified(grid)[0]
    ta = analyze_transfer(cells, reps, fit_law=fit_law)
    out = Outcome(noise_unknown=not math.isfinite(reps.run_noise))
    if "d_t" in asked.questions:
        out.d_t = d_t_answers(ta, asked.cells)
    if "order" in asked.questions:
        out.order = order_answers(ta, world, asked.sizes, min(asked.d_f))
    if "law" in asked.questions:
        found = law_answers(ta, world, asked.width)
        out.law = {g: found.get(g, (False, False, False)) for g in asked.languages}
    return out


def world_outcomes(
    prior: Prior,
    seed: int,
    w: int,
    base: Grid,
    grids: list[Grid],
    asked: Asked,
    bootstrap: int,
    most_docs: int | None = MAX_DOCS,
) -> list[Outcome]:
    """World w of the run with `seed` (drawn for the `base` grid), analysed on each grid (common random
    numbers)."""
    world = prior.draw(np.random.default_rng([seed, w]), base)
    return [answer(world, g, np.random.default_rng([seed, w, 1]), asked, bootstrap, most_docs) for g in grids]
