"""The early-stopping rule (training/stopping.py): overfit, plateau, budget, diverged."""

from __future__ import annotations

import math

from sweep_engine.spec import EvalPoint, StoppingSpec
from sweep_engine.training.checkpoint import RunProgress
from sweep_engine.training.stopping import record_eval


def _run(losses: list[float], **stopping: float) -> RunProgress:
    spec = StoppingSpec(eval_interval_tokens=1, token_cap=10**9, **stopping)  # type: ignore[arg-type]
    progress = RunProgress()
    for i, loss in enumerate(losses):
        if progress.stop_reason is not None:
            raise AssertionError(f"stopped before evaluation {i}")
        record_eval(progress, EvalPoint(i + 1, i + 1, loss, loss), spec, at_cap=False)
    return progress


def test_overfit_after_patience_evaluations_without_improvement() -> None:
    p = _run([3.0, 2.0, 2.1, 2.2, 2.3], patience=3)
    assert p.stop_reason == "overfit" and p.best_val_loss == 2.0 and p.tokens_at_best == 2


def test_plateau_when_the_last_loss_is_within_min_delta_of_the_best() -> None:
    p = _run([3.0, 2.0, 1.99, 1.995, 2.001], patience=3, min_delta=0.05)
    assert (
        p.stop_reason == "plateau" and p.best_val_loss == 1.99
    )  # best is the minimum, not the last big gain


def test_first_evaluation_never_stops_the_run() -> None:
    assert _run([5.0], patience=1).stop_reason is None


def test_divergence_non_finite_or_far_above_the_first_evaluation() -> None:
    assert _run([3.0, 4.6], diverge_factor=1.5).stop_reason == "diverged"
    assert _run([3.0, 4.4], diverge_factor=1.5).stop_reason is None
    assert _run([3.0, math.nan]).stop_reason == "diverged"
    first_nan = _run([math.inf])
    assert first_nan.stop_reason == "diverged" and first_nan.best_val_loss == math.inf


def test_budget_at_the_cap_unless_patience_ran_out() -> None:
    spec = StoppingSpec(eval_interval_tokens=1, token_cap=2, patience=1)
    p = RunProgress()
    record_eval(p, EvalPoint(1, 1, 3.0), spec, at_cap=False)
    record_eval(p, EvalPoint(2, 2, 2.5), spec, at_cap=True)
    assert p.stop_reason == "budget"
    q = RunProgress()
    record_eval(q, EvalPoint(1, 1, 3.0), spec, at_cap=False)
    record_eval(q, EvalPoint(2, 2, 3.5), spec, at_cap=True)
    assert q.stop_reason == "overfit"
