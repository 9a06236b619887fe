"""One optimizer step and what it needs: batch geometry, the loss module, AdamW, and a throughput probe.

Kept apart from loop.py so that the loop there reads as the run's story; `train_step` is the exact computation
run_trial performs per step (benchmarks/train_throughput.py times it against a hand-written step).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

from sweep_engine.errors import ConfigError
from sweep_engine.spec import ModelShape, TrialSpec
from sweep_engine.training.model import build_model, resolve_shape

if TYPE_CHECKING:
    from sweep_engine.config import Space

BETAS = (0.9, 0.95)  # beta2 0.95 (GPT-3, Kaplan) rides out loss spikes better than 0.999 with short warm-ups
GRAD_CLIP = 1.0  # max global gradient norm


def batch_geometry(spec: TrialSpec, world_size: int) -> tuple[int, int, int]:
    """Split `spec.batch_tokens` into windows: (global windows, micro-batch windows per rank, accumulation steps).

    `micro_batch_tokens` is what one rank feeds through the model at once (None: its whole share of the batch).

    Raises:
        ConfigError: Unless batch_tokens is a multiple of context x world_size x micro-batch windows.
    """
    ctx, batch = spec.context, spec.batch_tokens
    micro = spec.micro_batch_tokens if spec.micro_batch_tokens is not None else batch // max(1, world_size)
    if ctx < 1 or micro < ctx or micro % ctx or batch % (ctx * world_size * (micro // ctx)):
        raise ConfigError(
            "`batch_tokens` must be a multiple of context x world_size x (micro_batch_tokens / context), and "
            f"micro_batch_tokens a multiple of context, but got (batch_tokens={batch}, context={ctx}, "
            f"world_size={world_size}, micro_batch_tokens={spec.micro_batch_tokens})"
        )
    micro_windows = micro // ctx
    return batch // ctx, micro_windows, batch // (ctx * world_size * micro_windows)


class NextTokenLoss(nn.Module):
    """Wraps the LM so that forward(windows of context + 1 tokens) is the mean next-token loss.

    Putting the loss inside the module lets DDP and torch.compile see the whole computation.

    With `chunk_rows`, the cross-entropy is computed `chunk_rows` positions at a time from the last hidden
    states, each chunk's logits recomputed in the backward pass (activation checkpointing) instead of kept: a
    micro-batch then never holds its [windows x context x vocab] logits (~10 bytes each: 16 GB for 32 windows at
    GPT-2's vocabulary), at the price of one more LM-head matmul per token. The loss and gradients are the same
    up to float rounding (tests/training/test_step.py).
    """

    def __init__(self, lm: nn.Module, chunk_rows: int | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.chunk_rows = chunk_rows

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        inputs, targets = windows[:, :-1], windows[:, 1:].flatten()
        if self.chunk_rows is None:
            logits = self.lm(input_ids=inputs).logits
            return F.cross_entropy(logits.float().flatten(0, 1), targets)
        body, head = self.lm.get_submodule("transformer"), self.lm.get_submodule("lm_head")  # GPT-2's
        hidden = body(input_ids=inputs).last_hidden_state.flatten(0, 1)
        weight = head.get_parameter("weight")
        total = hidden.new_zeros((), dtype=torch.float32)
        for i in range(0, hidden.shape[0], self.chunk_rows):
            part = checkpoint(_summed_loss, hidden[i : i + self.chunk_rows], weight,
                              targets[i : i + self.chunk_rows], use_reentrant=False)  # fmt: skip
            total = total + part
        return total / targets.numel()


def _summed_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")


def build_optimizer(lm: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (nanoGPT: decaying biases and layer-norm gains only hurts),
    fused where the device has a fused kernel (CPU and CUDA: one kernel per step instead of one per tensor)."""
    params = [p for p in lm.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, fused=device.type in ("cuda", "cpu"))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    windows: torch.Tensor,
    lr: float,
    *,
    accum: int = 1,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> torch.Tensor:
    """One optimizer step: forward + backward over `accum` micro-batches, clip, AdamW, zero grads.

    Args:
        model: A NextTokenLoss, or DDP of one, possibly compiled; under DDP gradients sync only on the last
            micro-batch (no_sync on the others).
        optimizer: The optimizer; its LR is set to `lr` first.
        windows: This rank's share of the batch, (windows, context + 1) tokens, on the model's device.
        lr: Learning rate of this step.
        accum: Micro-batches to split `windows` into.
        autocast: Makes the mixed-precision context.

    Returns:
        The batch's mean loss as a 0-d tensor (no host sync: read it only when needed).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = torch.zeros((), device=windows.device)
    ddp = getattr(model, "_orig_mod", model)  # torch.compile(DDP(...)) keeps the DDP module as _orig_mod
    for i, micro in enumerate(windows.chunk(accum)):
        sync = nullcontext() if i == accum - 1 or not isinstance(ddp, DDP) else ddp.no_sync()
        with sync:
            with autocast():
                loss = model(micro)
            (loss / accum).backward()
        total += loss.detach()
    nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / accum


def measure_throughput(
    shape: ModelShape,
    vocab_size: int,
    context: int,
    *,
    seconds: float = 2.0,
    threads: int = 1,
    batch_tokens: int = 2048,
) -> float:
    """Training tokens/s of `train_step` for a shape on this machine's CPU (for planning a sweep's time).

    Runs one warm-up step, then real steps on random tokens until `seconds` have passed (at least two).

    Args:
        shape: The model shape.
        vocab_size: Vocabulary size (the LM head is a large part of a small model's step).
        context: Context length.
        seconds: Time to spend measuring.
        threads: Torch threads during the measurement (restored afterwards).
        batch_tokens: Tokens per step (rounded down to whole windows, at least one).

    Returns:
        Tokens per second.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        lm = build_model(resolve_shape(shape), vocab_size, context)
        model = NextTokenLoss(lm)
        optimizer = build_optimizer(lm, 1e-4, 0.1, torch.device("cpu"))
        windows = torch.randint(0, vocab_size, (max(1, batch_tokens // context), context + 1))
        train_step(model, optimizer, windows, 1e-4)
        steps, start = 0, time.perf_counter()
        while steps < 2 or time.perf_counter() - start < seconds:
            train_step(model, optimizer, windows, 1e-4)
            steps += 1
        return steps * windows.shape[0] * context / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)


def calibrate(space: Space, seconds_per_shape: float = 2.0) -> dict[str, float]:
    """Measure one-thread training tokens/s of every shape in the space with a few real steps (`plan
    --calibrate`; plan.make_plan turns them into wall time)."""
    from sweep_engine.plan import vocab_size
    from sweep_engine.space import expand

    shapes: dict[str, ModelShape] = {t.model.name: t.model for t in expand(space)}
    context = space.pretrain.context if space.pretrain else 128
    return {
        name: measure_throughput(shape, vocab_size(space), context, seconds=seconds_per_shape)
        for name, shape in shapes.items()
    }
