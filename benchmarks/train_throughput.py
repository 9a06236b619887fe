"""Tokens/s of run_trial's training step against a minimal hand-written PyTorch step, side by side in one run.

Both train the same GPT2LMHeadModel (same shape, same initial weights, same threads) on the same batches and do
the same computation: forward, next-token cross-entropy, backward, clip to norm 1, AdamW step, zero grads.

- engine: one iteration of run_trial's loop: lr_at + BatchSource.next_batch + train.train_step (NextTokenLoss,
  build_optimizer's AdamW: fused, decay on matrices only).
- minimal: the textbook loop over pre-built batches: `model(x).logits`, F.cross_entropy, backward,
  clip_grad_norm_, torch.optim.AdamW defaults (foreach).

Repeats interleave A B B A A B ... so drift (other processes, thermal) hits both alike; medians are reported.
The goal is a ratio >= 1.0: the engine's bookkeeping costs nothing measurable.

    .venv/bin/python benchmarks/train_throughput.py [--size s] [--vocab 4096] [--context 128] [--batch-windows 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from sweep_engine.data.batches import BatchSource
from sweep_engine.spec import ScheduleSpec
from sweep_engine.training.model import SIZES, build_model, count_non_embedding
from sweep_engine.training.schedule import lr_at
from sweep_engine.training.step import GRAD_CLIP, NextTokenLoss, build_optimizer, train_step

LR = 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="s", choices=sorted(SIZES))
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-windows", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    shape = SIZES[args.size]
    tokens = np.random.default_rng(0).integers(0, args.vocab, 200_000).astype(np.int32)

    # engine: exactly what run_trial builds
    torch.manual_seed(0)
    lm_a = build_model(shape, args.vocab, args.context)
    model_a = NextTokenLoss(lm_a)
    opt_a = build_optimizer(lm_a, LR, 0.1, device)
    source = BatchSource(tokens, args.context, args.batch_windows, seed=0)
    schedule = ScheduleSpec(kind="cosine", warmup_steps=10)
    step_a = 0

    def engine_steps(n: int) -> None:
        nonlocal step_a
        for _ in range(n):
            lr = lr_at(step_a, LR, schedule, 10_000)
            windows = torch.from_numpy(source.next_batch())
            train_step(model_a, opt_a, windows, lr)
            step_a += 1

    # minimal: the same model and weights, a textbook loop over the same kind of batches
    torch.manual_seed(0)
    lm_b = build_model(shape, args.vocab, args.context)
    opt_b = torch.optim.AdamW(lm_b.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1)
    fixed = BatchSource(tokens, args.context, args.batch_windows, seed=0)
    batches = [torch.from_numpy(fixed.next_batch()) for _ in range(args.steps)]

    def minimal_steps(n: int) -> None:
        for i in range(n):
            w = batches[i % len(batches)]
            x, y = w[:, :-1], w[:, 1:]
            logits = lm_b(input_ids=x).logits
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm_b.parameters(), GRAD_CLIP)
            opt_b.step()
            opt_b.zero_grad(set_to_none=True)

    tokens_per_step = args.batch_windows * args.context
    engine_steps(3)  # warm-up: allocator, first-call overheads
    minimal_steps(3)
    rates: dict[str, list[float]] = {"engine": [], "minimal": []}
    pair = (("engine", engine_steps), ("minimal", minimal_steps))
    for r in range(args.repeats):
        # A B, then B A: neither side always runs right after the other (caches, allocator, frequency).
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            t = time.perf_counter()
            fn(args.steps)
            rates[name].append(args.steps * tokens_per_step / (time.perf_counter() - t))
    engine, minimal = statistics.median(rates["engine"]), statistics.median(rates["minimal"])
    # Each repeat's own ratio too: a slow spell (another process) hits both halves of a pair alike.
    paired = sorted(a / b for a, b in zip(rates["engine"], rates["minimal"], strict=True))
    print(
        f"model {args.size} ({shape.n_layer}x{shape.d_model}, N={count_non_embedding(lm_a):,}), vocab {args.vocab}, "
        f"context {args.context}, batch {args.batch_windows} windows = {tokens_per_step} tokens, "
        f"{args.threads} thread(s), {args.repeats} x {args.steps} steps each, interleaved"
    )
    print(f"engine  (run_trial step): {engine:10,.0f} tokens/s (median)")
    print(f"minimal (hand-written)  : {minimal:10,.0f} tokens/s (median)")
    print(f"ratio engine / minimal  : {engine / minimal:.3f}  (goal >= 1.0)")
    print(
        f"paired ratios           : median {statistics.median(paired):.3f}, range {paired[0]:.3f}..{paired[-1]:.3f}"
    )


if __name__ == "__main__":
    main()
