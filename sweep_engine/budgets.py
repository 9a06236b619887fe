"""Can each transfer cell's token cap reach its overfitting point? The rule `validate` and `plan` warn with.

The study reads D_E off runs stopped at their overfitting point; a run stopped by its cap while its loss still
falls measures compute, not data, and the analysis has to discard it (docs/analysis.md, `still_falling`). So a
cap must leave room for the whole stopping rule to play out:

    a cell reaches its overfitting point when  token_cap >= (ceil(T_o / I) + patience) x I,
    with T_o = stopping.overfit_epochs x D_F (the expected overfitting point) and I its evaluation interval

(the first evaluation at or after T_o, then `patience` evaluations without improvement). `overfit_epochs` is an
assumption, stated in the space (default 16: Muennighoff et al. 2023 find repeated tokens worth little beyond
~16 epochs; the laptop pilot's runs of D_F <= 16K overfit after 16-50 epochs, docs/pilot.md); replace it with a
pilot's measurement. Pre-training reads its whole corpus once or less and has no such point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sweep_engine.config import Space
from sweep_engine.space import transfer_trials


@dataclass(frozen=True)
class CapCheck:
    """The rule applied to the cells of one D_F (their cap, interval and patience are the same)."""

    d_f: int
    trials: int
    token_cap: int
    interval: int  # tokens between evaluations, in whole steps
    patience: int
    overfit_tokens: int  # T_o
    needed: int

    @property
    def reaches(self) -> bool:
        return self.token_cap >= self.needed

    def warning(self, overfit_epochs: float) -> str:
        return (
            f"transfer d_f={self.d_f:,} ({self.trials} trials): token cap {self.token_cap:,} cannot reach the "
            f"expected overfitting point: {overfit_epochs:g} epochs = {self.overfit_tokens:,} tokens, then "
            f"{self.patience} evaluations every {self.interval:,} tokens need {self.needed:,} (rule: cap >= "
            f"(ceil(overfit_epochs x D_F / interval) + patience) x interval; raise stopping.token_cap or "
            f"token_cap_epochs, or measure stopping.overfit_epochs with a pilot)"
        )


def cap_checks(space: Space) -> list[CapCheck]:
    """The rule for every D_F of the transfer stage (none without one)."""
    if space.transfer is None:
        return []
    epochs = space.transfer.stopping.overfit_epochs
    by_d_f: dict[int, CapCheck] = {}
    for t in transfer_trials(space):
        d_f = t.data.d_f
        assert d_f is not None
        interval = max(1, t.stopping.eval_interval_tokens // t.batch_tokens) * t.batch_tokens
        overfit = math.ceil(epochs * d_f)
        needed = (math.ceil(overfit / interval) + t.stopping.patience) * interval
        check = CapCheck(d_f, 1, t.stopping.token_cap, interval, t.stopping.patience, overfit, needed)
        if d_f in by_d_f:
            check = CapCheck(**{**by_d_f[d_f].__dict__, "trials": by_d_f[d_f].trials + 1})
        by_d_f[d_f] = check
    return [by_d_f[d] for d in sorted(by_d_f)]


def cap_warnings(space: Space) -> list[str]:
    """One warning per D_F whose cap cannot reach the expected overfitting point."""
    if space.transfer is None:
        return []
    epochs = space.transfer.stopping.overfit_epochs
    return [c.warning(epochs) for c in cap_checks(space) if not c.reaches]
