from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sweep_engine.checkpoint import Progress
from sweep_engine.errors import DataError
from sweep_engine.evaluate import eval_loss, record_eval
from sweep_engine.model import SIZES, build_model
from sweep_engine.spec import EvalPoint, StoppingSpec

CTX = 16


def test_eval_loss_covers_the_whole_set_including_the_tail() -> None:
    torch.manual_seed(0)
    model = build_model(SIZES["xs"], 64, CTX)
    tokens = np.random.default_rng(0).integers(0, 64, 1000)  # 999 targets: 62 windows of 16 and a tail of 7
    losses = []
    with torch.no_grad():
        for start in range(0, 999, CTX):
            window = torch.from_numpy(tokens[start : start + CTX + 1].astype(np.int64))[None]
            logits = model(input_ids=window[:, :-1]).logits[0]
            losses.append(torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="none"))
    assert torch.cat(losses).numel() == 999
    expected = torch.cat(losses).double().mean().item()
    assert eval_loss(model, tokens, CTX, torch.device("cpu")) == pytest.approx(expected, abs=1e-6)
    assert model.training  # left as it was found


def test_eval_loss_needs_two_tokens() -> None:
    with pytest.raises(DataError, match="at least 2"):
        eval_loss(build_model(SIZES["xs"], 64, CTX), np.array([3]), CTX, torch.device("cpu"))


def _run(losses: list[float], **stopping: float) -> Progress:
    spec = StoppingSpec(eval_interval_tokens=1, token_cap=10**9, **stopping)  # type: ignore[arg-type]
    progress = Progress()
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
    p = Progress()
    record_eval(p, EvalPoint(1, 1, 3.0), spec, at_cap=False)
    record_eval(p, EvalPoint(2, 2, 2.5), spec, at_cap=True)
    assert p.stop_reason == "budget"
    q = Progress()
    record_eval(q, EvalPoint(1, 1, 3.0), spec, at_cap=False)
    record_eval(q, EvalPoint(2, 2, 3.5), spec, at_cap=True)
    assert q.stop_reason == "overfit"
