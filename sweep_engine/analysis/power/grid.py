"""The grid a set of target spaces would run, as a `synthetic.Grid`, with its cost.

Each space is expanded by `space.expand` (the trials `launch` would start), so the grid is read off the real
trials: sizes (exact non-embedding N), D_F, the LR x schedule arms of a cell, seeds, held-out documents and
languages. Several target spaces run side by side (one language each, as the shipped spaces do) must agree on
everything but the language: the ordering question compares languages cell by cell.

Two things a space does not say are assumed, and reported with the grid:
- which cells its token cap stops before the overfitting point: those whose cap breaks budgets.py's rule (the
  one `validate` and `plan` warn with: the expected overfitting point, `stopping.overfit_epochs` x D_F, then
  `patience` evaluations, must fit under the cap). They are simulated as stopped on `budget` while still falling
  (from the smallest such D_F up);
- how long a held-out document is when the split is sized in tokens (WEB_DOC_TOKENS) or is not a Bible verse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweep_engine.analysis.synthetic import Grid
from sweep_engine.budgets import cap_checks
from sweep_engine.config import Space, load_space
from sweep_engine.errors import UserError
from sweep_engine.plan import study_flops
from sweep_engine.shapes import non_embedding_params
from sweep_engine.space import count_trials, transfer_sizes

VERSE_CHARS = 128.0  # the pilot: 200 German verses = 13.6K tokens at 1.88 characters per token
WEB_DOC_TOKENS = 1000  # assumed length of a web document (OSCAR, OpenWebText2) in tokens
WEB_CHARS_PER_TOKEN = 4.0  # assumed characters per token of such a document (GPT-2 BPE on English-like text)


@dataclass(frozen=True)
class PlannedGrid:
    """The grid of one study (one or several target spaces) and its cost.

    Attributes:
        grid: what the study runs, for synthetic.make_ledger.
        paths, overrides: the space files and the `key=value` overrides they were read with.
        spaces: the validated spaces.
        flops: training FLOPs (upper bounds, plan.py's 6 N D to the token cap) per stage.
        context: the transfer context (a D_F must hold one window: context + 1 tokens).
        test_tokens: held-out test tokens per run and language (for the cost of a larger test set).
        fits_law: the spaces' `analysis.laws` lists the transfer law (else `analyze` does not fit it).
        notes: the assumptions this grid rests on, in words.
    """

    grid: Grid
    paths: tuple[Path, ...]
    overrides: tuple[str, ...]
    spaces: tuple[Space, ...]
    flops: dict[str, float]
    context: int
    test_tokens: float
    fits_law: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def total_flops(self) -> float:
        return sum(self.flops.values())

    @property
    def transfer_trials(self) -> int:
        return sum(count_trials(s)["transfer"] for s in self.spaces)


def plan_grid(paths: Sequence[Path], overrides: Sequence[str] = ()) -> PlannedGrid:
    """Read the spaces (with overrides) and expand them into one grid.

    Raises:
        UserError: a bad space, a space without a transfer stage, or spaces that differ in more than their
            language.
    """
    spaces = tuple(load_space(p, overrides) for p in paths)
    for path, space in zip(paths, spaces, strict=True):
        if space.transfer is None or space.pretrain is None:
            raise UserError(f"{path}: transfer: plan --power needs a transfer stage (and its pre-training)")
    shapes = [_shape(s) for s in spaces]
    for path, shape in zip(paths[1:], shapes[1:], strict=True):
        differ = [k for k in shape if shape[k] != shapes[0][k]]
        if differ:
            raise UserError(
                f"{path}: {', '.join(differ)}: plan --power compares languages cell by cell, so every space "
                f"must run the same grid as {paths[0]}; got {[shape[k] for k in differ]} vs "
                f"{[shapes[0][k] for k in differ]}"
            )
    return _planned(spaces, tuple(Path(p) for p in paths), tuple(overrides))


def _shape(space: Space) -> dict[str, object]:
    """Everything of a space's transfer grid except its languages."""
    tr = space.transfer
    assert tr is not None
    return {
        "sizes": [non_embedding_params(s) for s in transfer_sizes(space)],
        "transfer.d_f": list(tr.d_f),
        "transfer.lr": list(tr.lr),
        "transfer.schedules": [s.model_dump() for s in tr.schedules],
        "transfer.seeds": list(tr.seeds),
        "transfer.seeds_by_d_f": dict(tr.seeds_by_d_f),
        "transfer.validation": tr.validation.model_dump(),
        "transfer.stopping": tr.stopping.model_dump(),
        "search": space.search.model_dump(),
        "analysis.laws": "transfer" in space.analysis.laws,
    }


def _planned(spaces: tuple[Space, ...], paths: tuple[Path, ...], overrides: tuple[str, ...]) -> PlannedGrid:
    space = spaces[0]
    tr = space.transfer
    assert tr is not None
    sizes = {s.name: float(non_embedding_params(s)) for s in transfer_sizes(space)}
    languages = tuple(
        dict.fromkeys(lang for s in spaces for lang in (s.transfer.languages if s.transfer else {}))
    )
    notes: list[str] = []
    lrs = tuple(float(x) for x in tr.lr)
    if space.search.kind == "optuna":
        # The search samples its LRs at run time; what matters here is how many arms a cell chooses among.
        k = space.search.trials_per_cell or len(lrs)
        lo, hi = space.search.lr_range or (min(lrs), max(lrs))
        lrs = tuple(float(x) for x in np.geomspace(lo, hi, k))
        notes.append(f"Optuna search: {k} LR arms per cell, costed and simulated as a grid")
    schedules = tuple(dict.fromkeys(f"{s.kind}-w{s.warmup_steps}-f{s.decay_floor:g}" for s in tr.schedules))
    v = tr.validation
    bible = all(
        lc.corpus.kind == "builtin"
        for s in spaces
        for lc in (s.transfer.languages.values() if s.transfer else [])
    )
    doc_chars = VERSE_CHARS if bible else WEB_DOC_TOKENS * WEB_CHARS_PER_TOKEN
    if v.unit == "docs":
        val_docs, test_docs = v.size, v.test_size
        test_tokens = test_docs * doc_chars / 2.0  # ~2 characters per token (the laptop languages' mean)
        if not bible:
            notes.append(f"held-out documents assumed {doc_chars:,.0f} characters long")
    else:
        val_docs, test_docs = (
            max(1, math.ceil(x / WEB_DOC_TOKENS)) if x else 0 for x in (v.size, v.test_size)
        )
        test_tokens = float(v.test_size)
        notes.append(
            f"held-out sets sized in tokens: {test_docs:,} test documents of ~{WEB_DOC_TOKENS:,} tokens (assumed)"
        )
    if test_docs == 0:
        notes.append("no test split (validation.test_size 0): cells are chosen and reported on validation")
    budget = [c.d_f for c in cap_checks(space) if not c.reaches]
    if budget:
        notes.append(
            f"D_F >= {min(budget):,} tokens: the cap cannot reach the expected overfitting point "
            f"({tr.stopping.overfit_epochs:g} epochs, budgets.py): simulated as stopped on `budget` while still "
            f"falling (the analysis keeps them out of the curves and the law)"
        )
    if "transfer" not in space.analysis.laws:
        notes.append(
            "analysis.laws does not list transfer: `analyze` fits no transfer law, so no law question"
        )
    if space.search.halving is not None:
        notes.append(
            "successive halving: simulated as the full grid of arms (the winner is chosen either way)"
        )
    if len(languages) == 1:
        notes.append(
            f"one language ({languages[0]}): no ordering question; give several target spaces for one"
        )
    grid = Grid(
        sizes=sizes,
        d_f=tuple(float(d) for d in tr.d_f),
        lrs=lrs,
        schedules=schedules,
        seeds=len(tr.seeds),
        seeds_smallest=None,
        seeds_by_d_f=tuple((float(d), len(s)) for d, s in sorted(tr.seeds_by_d_f.items())),
        val_docs=val_docs,
        test_docs=test_docs,
        doc_chars=doc_chars,
        budget_d_f=float(min(budget)) if budget else None,
        languages=languages,
        record_val_docs=test_docs == 0,  # only the reported split is resampled (synthetic.Grid)
    )
    return PlannedGrid(
        grid=grid,
        paths=paths,
        overrides=overrides,
        spaces=spaces,
        flops=study_flops(list(spaces)),
        context=tr.context,
        test_tokens=test_tokens,
        fits_law="transfer" in space.analysis.laws,
        notes=notes,
    )


def describe(planned: PlannedGrid) -> str:
    """The grid in one line: sizes, D_F, arms, seeds, documents, languages, cost."""
    g = planned.grid
    sizes = " ".join(f"{name} ({n:.3g})" for name, n in g.sizes.items())
    d_f = ", ".join(f"{d:,.0f}" for d in g.d_f)
    return (
        f"{', '.join(g.languages or ())} | sizes {sizes} | D_F {d_f} | {len(g.lrs)} LR x {len(g.schedules)} "
        f"schedule arm(s) | {g.seeds} seed(s) | {g.test_docs:,} test documents | "
        f"{planned.transfer_trials:,} transfer trials, {planned.total_flops:.3g} FLOPs (pre-training "
        f"{planned.flops['pretrain']:.3g}, transfer {planned.flops['transfer']:.3g}; 6 N D to the cap)"
    )
