"""Validation loss on a whole, fixed token array (the early-stopping rule applied to it: stopping.py).

The array is cut into non-overlapping windows of `context` predicted tokens (window i reads tokens
[i c, (i + 1) c) and predicts [i c + 1, (i + 1) c + 1)); the leftover tail is one shorter window, so every token
after the first is predicted exactly once and the loss is the mean per-token loss of the whole set. Under
data parallelism each rank takes every world_size-th window and the (sum, count) pairs are all-reduced, so all
ranks get the same number.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sweep_engine.errors import DataError

# Cap on the logits of one eval batch (elements): 2^25 fp32 logits are 128 MiB, large enough that a small model's
# eval is a handful of big matmuls, small enough for a 50K vocabulary at context 1024 (0.66 windows -> 1).
EVAL_LOGITS_ELEMENTS = 2**25


@torch.no_grad()
def eval_loss(
    lm: nn.Module,
    tokens: np.ndarray,
    context: int,
    device: torch.device,
    *,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
    rank: int = 0,
    world_size: int = 1,
) -> float:
    """Mean next-token loss (nats) of `lm` over the whole of `tokens`.

    Args:
        lm: A causal LM whose forward takes `input_ids` and returns an object with `.logits`.
        tokens: The validation token ids (1-D, at least 2).
        context: Window length (the model's training context).
        device: Where the model lives.
        autocast: Makes the mixed-precision context (default: full precision).
        rank: Data-parallel rank.
        world_size: Data-parallel ranks; with > 1, torch.distributed must be initialised.

    Returns:
        The mean per-token loss, identical on every rank.
    """
    n = len(tokens)
    if n < 2:
        raise DataError(f"a validation set needs at least 2 tokens, but got {n}")
    toks = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    n_full = (n - 1) // context
    # Views, not copies: window i is rows[i, :context] -> rows[i, 1:].
    rows = toks[: n_full * context + 1].unfold(0, context + 1, context) if n_full else toks[:0].view(0, 1)
    mine = rows[rank::world_size]
    was_training = lm.training
    lm.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = mine.shape[0] * context
    vocab = int(getattr(getattr(lm, "config", None), "vocab_size", 0)) or 1
    per_batch = max(1, EVAL_LOGITS_ELEMENTS // (context * vocab))
    for start in range(0, mine.shape[0], per_batch):
        w = mine[start : start + per_batch].to(device, non_blocking=True)
        total += _sum_loss(lm, w, autocast)
    tail = toks[n_full * context :]
    # The tail (fewer than `context` targets) goes to the rank that would get the next full window.
    if len(tail) >= 2 and n_full % world_size == rank:
        total += _sum_loss(lm, tail.view(1, -1).to(device), autocast)
        count += len(tail) - 1
    lm.train(was_training)
    if world_size > 1:
        both = torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=device)])
        dist.all_reduce(both)
        total, count_t = both[0], both[1]
        return float(total / count_t)
    return float(total / count)


def _sum_loss(
    lm: nn.Module, windows: torch.Tensor, autocast: Callable[[], AbstractContextManager[object]]
) -> torch.Tensor:
    with autocast():
        logits = lm(input_ids=windows[:, :-1]).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten(), reduction="none")
    return loss.double().sum()
