"""The early-stopping rule: when a run ends, given its validation curve so far.

A run stops at its overfitting point (the study's D_E is read off the best validation loss), on a plateau, at
the token cap, or when it diverges. A new rule goes here, as a branch of `record_eval` with a `StopReason` of its
own (sweep_engine.spec) and, if it needs settings, a field of `StoppingSpec` / `StoppingConfig`.
"""

from __future__ import annotations

import math

from sweep_engine.spec import EvalPoint, StoppingSpec
from sweep_engine.training.checkpoint import RunProgress


def record_eval(progress: RunProgress, point: EvalPoint, stopping: StoppingSpec, at_cap: bool) -> bool:
    """Add an evaluation to the run's progress, apply the stopping rule, and say whether it is a new best.

    The rule, checked in this order: a non-finite loss, or a validation loss above `diverge_factor` x the first
    evaluation's, is "diverged"; `patience` evaluations in a row without beating the best by `min_delta` end
    the run as "overfit" when the last loss is above best + min_delta, else "plateau"; the token cap is "budget".
    The first evaluation always counts as an improvement, so no run stops before it has a curve.

    Args:
        progress: The run's progress (updated in place: curve, best, patience counter, stop_reason).
        point: The evaluation.
        stopping: The trial's stopping settings.
        at_cap: Whether this evaluation is at the token cap.

    Returns:
        True when `point` is the best finite validation loss so far (the caller saves the model).
    """
    val = point.val_loss
    progress.curve.append(point)
    progress.wait = 0 if val < progress.best_val_loss - stopping.min_delta else progress.wait + 1
    new_best = math.isfinite(val) and val < progress.best_val_loss
    if new_best:
        progress.best_val_loss, progress.tokens_at_best = val, point.tokens
        progress.best_extra_val_loss = dict(point.extra_val_loss)
    finite = math.isfinite(val) and (point.train_loss is None or math.isfinite(point.train_loss))
    if not finite or val > stopping.diverge_factor * progress.curve[0].val_loss:
        progress.stop_reason = "diverged"
    elif progress.wait >= stopping.patience:
        progress.stop_reason = "overfit" if val > progress.best_val_loss + stopping.min_delta else "plateau"
    elif at_cap:
        progress.stop_reason = "budget"
    return new_best
