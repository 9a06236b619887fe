"""Validation loss on a whole, fixed token array (the early-stopping rule applied to it: stopping.py).

The array is cut into non-overlapping windows of `context` predicted tokens (window i reads tokens
[i c, (i + 1) c) and predicts [i c + 1, (i + 1) c + 1)); the leftover tail is one shorter window, so every token
after the first is predicted exactly once and the loss is the mean per-token loss of the whole set. Under
data parallelism each rank takes every world_size-th window and the (sum, count) pairs are all-reduced, so all
ranks get the same number.

Given the array's documents (spec.DocIndex.of_target: the document of each predicted position), the same pass
also sums the loss per document, which the analysis resamples for its paired intervals. It costs one
`index_add` per batch: no extra forward pass.
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
    """Mean next-token loss (nats) of `lm` over the whole of `tokens` (see eval_loss_by_doc)."""
    return eval_loss_by_doc(lm, tokens, context, device, autocast=autocast, rank=rank, world_size=world_size)[
        0
    ]


@torch.no_grad()
def eval_loss_by_doc(
    lm: nn.Module,
    tokens: np.ndarray,
    context: int,
    device: torch.device,
    *,
    doc_of_target: np.ndarray | None = None,
    n_docs: int = 0,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[float, np.ndarray | None]:
    """Mean next-token loss (nats) of `lm` over the whole of `tokens`, and its sum per document.

    Args:
        lm: A causal LM whose forward takes `input_ids` and returns an object with `.logits`.
        tokens: The validation token ids (1-D, at least 2).
        context: Window length (the model's training context).
        device: Where the model lives.
        doc_of_target: [len(tokens) - 1] the document of each predicted position (None: no per-document sums).
        n_docs: How many documents `doc_of_target` indexes.
        autocast: Makes the mixed-precision context (default: full precision).
        rank: Data-parallel rank.
        world_size: Data-parallel ranks; with > 1, torch.distributed must be initialised.

    Returns:
        (mean per-token loss, per-document loss sums [n_docs] or None), identical on every rank.
    """
    n = len(tokens)
    if n < 2:
        raise DataError(f"a validation set needs at least 2 tokens, but got {n}")
    if doc_of_target is not None and len(doc_of_target) != n - 1:
        raise DataError(
            f"doc_of_target must hold one document per predicted token ({n - 1}), got {len(doc_of_target)}"
        )
    toks = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    n_full = (n - 1) // context
    # Views, not copies: window i is rows[i, :context] -> rows[i, 1:].
    rows = toks[: n_full * context + 1].unfold(0, context + 1, context) if n_full else toks[:0].view(0, 1)
    mine = rows[rank::world_size]
    docs = torch.from_numpy(np.asarray(doc_of_target, dtype=np.int64)) if doc_of_target is not None else None
    doc_rows = docs[: n_full * context].view(n_full, context)[rank::world_size] if docs is not None else None
    was_training = lm.training
    lm.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    by_doc = torch.zeros(n_docs if docs is not None else 0, dtype=torch.float64, device=device)
    count = mine.shape[0] * context
    vocab = int(getattr(getattr(lm, "config", None), "vocab_size", 0)) or 1
    per_batch = max(1, EVAL_LOGITS_ELEMENTS // (context * vocab))
    for start in range(0, mine.shape[0], per_batch):
        w = mine[start : start + per_batch].to(device, non_blocking=True)
        losses = _token_losses(lm, w, autocast)
        total += losses.sum()
        if doc_rows is not None:
            by_doc.index_add_(0, doc_rows[start : start + per_batch].flatten().to(device), losses.flatten())
    tail = toks[n_full * context :]
    # The tail (fewer than `context` targets) goes to the rank that would get the next full window.
    if len(tail) >= 2 and n_full % world_size == rank:
        losses = _token_losses(lm, tail.view(1, -1).to(device), autocast)
        total += losses.sum()
        count += len(tail) - 1
        if docs is not None:
            by_doc.index_add_(0, docs[n_full * context :].to(device), losses.flatten())
    lm.train(was_training)
    if world_size > 1:
        both = torch.cat(
            [torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=device)]), by_doc]
        )
        dist.all_reduce(both)
        total, count_t, by_doc = both[0], both[1], both[2:]
        mean = float(total / count_t)
    else:
        mean = float(total / count)
    return mean, by_doc.cpu().numpy() if docs is not None else None


def _token_losses(
    lm: nn.Module, windows: torch.Tensor, autocast: Callable[[], AbstractContextManager[object]]
) -> torch.Tensor:
    """Per-token loss (float64, [windows, context]) of predicting windows[:, 1:] from windows[:, :-1]."""
    with autocast():
        logits = lm(input_ids=windows[:, :-1]).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten(), reduction="none")
    return loss.double().view(windows.shape[0], -1)
