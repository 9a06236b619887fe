"""The loss module of one optimizer step (training/step.py)."""

from __future__ import annotations

import pytest
import torch

from sweep_engine.training.model import SIZES, build_model
from sweep_engine.training.step import NextTokenLoss


@pytest.mark.parametrize("chunk_rows", [1, 7, 40, 10_000])
def test_chunked_cross_entropy_gives_the_same_loss_and_gradients(chunk_rows: int) -> None:
    torch.manual_seed(0)
    lm = build_model(SIZES["xs"], 97, 16)
    windows = torch.randint(0, 97, (3, 17))
    whole = NextTokenLoss(lm)
    loss = whole(windows)
    loss.backward()
    want = {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}
    lm.zero_grad(set_to_none=True)
    chunked = NextTokenLoss(lm, chunk_rows=chunk_rows)(windows)
    chunked.backward()
    assert chunked.item() == pytest.approx(loss.item(), rel=1e-6)
    for name, p in lm.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)
