"""Validation loss over a whole fixed token set (training/evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweep_engine.errors import DataError
from sweep_engine.training.evaluate import eval_loss
from sweep_engine.training.model import SIZES, build_model

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
