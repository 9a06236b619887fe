"""Validation loss on a whole, fixed token array (the early-stopping rule applied to it: stopping.py).

The array is cut into non-overlapping windows of `context` predicted tokens (window i reads tokens
[i c, (i + 1) c) and predicts [i c + 1, (i + 1) c + 1)); the leftover tail is one shorter window, so every token
after the first is predicted exactly once and the loss is the mean per-token loss of the whole set. Under
data parallelism each rank takes every world_size-th window and the (sum, count) pairs are all-reduced, so all
ranks get the same number.

Windows go through the model in batches sized to the device's memory (memory.eval_windows; at vocab 50,257 and
context 1024 a fixed logits cap would allow one window per forward), and the logits are computed a chunk of
positions at a time from the last hidden states, so a batch never holds its whole [windows, context, vocab]
logits. Only the batch's windows are gathered from the (memory-mapped) array and converted to int64.

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

from sweep_engine.data.tokenfile import release
from sweep_engine.errors import DataError
from sweep_engine.spec import ModelShape
from sweep_engine.training.memory import eval_windows, logit_chunk_rows


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
    batch_windows: int | None = None,
) -> float:
    """Mean next-token loss (nats) of `lm` over the whole of `tokens` (see eval_loss_by_doc)."""
    return eval_loss_by_doc(
        lm, tokens, context, device, autocast=autocast, rank=rank, world_size=world_size,
        batch_windows=batch_windows,
    )[0]  # fmt: skip


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
    batch_windows: int | None = None,
) -> tuple[float, np.ndarray | None]:
    """Mean next-token loss (nats) of `lm` over the whole of `tokens`, and its sum per document.

    Args:
        lm: A GPT-2 style causal LM (`.transformer` gives hidden states, `.lm_head` the logits); any other
            model whose forward takes `input_ids` and returns `.logits` is evaluated whole-logits.
        tokens: The validation token ids (1-D, at least 2; any integer dtype, typically a memory map).
        context: Window length (the model's training context).
        device: Where the model lives.
        doc_of_target: [len(tokens) - 1] the document of each predicted position (None: no per-document sums).
        n_docs: How many documents `doc_of_target` indexes.
        autocast: Makes the mixed-precision context (default: full precision).
        rank: Data-parallel rank.
        world_size: Data-parallel ranks; with > 1, torch.distributed must be initialised.
        batch_windows: Windows per forward pass (None: memory.eval_windows, sized to the device's free memory).

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
    if batch_windows is None:
        config = getattr(lm, "config", None)
        shape = ModelShape("lm", int(getattr(config, "n_layer", 12)), int(getattr(config, "n_embd", 768)))
        batch_windows = eval_windows(shape, context, device)
    n_full = (n - 1) // context
    mine = np.arange(rank, n_full, world_size, dtype=np.int64)  # this rank's full windows
    offsets = np.arange(context + 1, dtype=np.int64)
    was_training = lm.training
    lm.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    by_doc = torch.zeros(n_docs if doc_of_target is not None else 0, dtype=torch.float64, device=device)
    count = len(mine) * context
    chunk = logit_chunk_rows(int(getattr(getattr(lm, "config", None), "vocab_size", 0)) or 1)
    for start in range(0, len(mine), max(1, batch_windows)):
        first = mine[start : start + batch_windows] * context
        # Gather only this batch's windows (contiguous for one rank) and convert only them to int64.
        batch = np.asarray(tokens[first[:, None] + offsets], dtype=np.int64)
        losses = _token_losses(lm, torch.from_numpy(batch).to(device, non_blocking=True), autocast, chunk)
        total += losses.sum()
        if doc_of_target is not None:
            docs = np.asarray(doc_of_target[first[:, None] + offsets[:-1]], dtype=np.int64)
            by_doc.index_add_(0, torch.from_numpy(docs).flatten().to(device), losses.flatten())
    tail = np.asarray(tokens[n_full * context :], dtype=np.int64)
    # The tail (fewer than `context` targets) goes to the rank that would get the next full window.
    if len(tail) >= 2 and n_full % world_size == rank:
        losses = _token_losses(lm, torch.from_numpy(tail).view(1, -1).to(device), autocast, chunk)
        total += losses.sum()
        count += len(tail) - 1
        if doc_of_target is not None:
            tail_docs = torch.from_numpy(np.asarray(doc_of_target[n_full * context :], dtype=np.int64))
            by_doc.index_add_(0, tail_docs.to(device), losses.flatten())
    lm.train(was_training)
    release(
        tokens
    )  # the set's mapped pages (see data.batches): they stay in the page cache for the next pass
    if world_size > 1:
        both = torch.cat(
            [torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=device)]), by_doc]
        )
        dist.all_reduce(both)
        total, count_t, by_doc = both[0], both[1], both[2:]
        mean = float(total / count_t)
    else:
        mean = float(total / count)
    return mean, by_doc.cpu().numpy() if doc_of_target is not None else None


def _token_losses(
    lm: nn.Module,
    windows: torch.Tensor,
    autocast: Callable[[], AbstractContextManager[object]],
    chunk_rows: int,
) -> torch.Tensor:
    """Per-token loss (float64, [windows, context]) of predicting windows[:, 1:] from windows[:, :-1]."""
    inputs, targets = windows[:, :-1], windows[:, 1:].flatten()
    body, head = getattr(lm, "transformer", None), getattr(lm, "lm_head", None)
    with autocast():
        if body is None or head is None:
            logits = lm(input_ids=inputs).logits
            return (
                F.cross_entropy(logits.float().flatten(0, 1), targets, reduction="none")
                .double()
                .view(windows.shape[0], -1)
            )
        hidden = body(input_ids=inputs).last_hidden_state.flatten(0, 1)
        parts = [
            F.cross_entropy(
                head(hidden[i : i + chunk_rows]).float(), targets[i : i + chunk_rows], reduction="none"
            )
            for i in range(0, hidden.shape[0], chunk_rows)
        ]
    return torch.cat(parts).double().view(windows.shape[0], -1)
