"""Training tokens/s of the laptop sizes at two vocabularies, side by side in one run (the laptop spaces' 1024).

At laptop scale the LM head, not the non-embedding body N, is most of a step: xs (2 x 64) has 0.10M
non-embedding parameters, and its tied head at a 4,096-token vocabulary multiplies 4,096 x 64 = 0.26M weights
per token, 2.6x the body. The benchmark times the engine's own step (training/step.py's NextTokenLoss,
build_optimizer and train_step) for each size at `--vocabs`, one thread, the laptop spaces' batch (32 windows of
128), repeats interleaved A B B A ... so that load on a shared machine hits every vocabulary alike, and prints
the median tokens/s and the ratio to the largest vocabulary.

    .venv/bin/python benchmarks/vocab_cost.py [--sizes xs s m] [--vocabs 4096 1024] [--repeats 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sweep_engine.shapes import SIZES
from sweep_engine.training.model import build_model
from sweep_engine.training.step import NextTokenLoss, build_optimizer, train_step

CONTEXT, WINDOWS = 128, 32  # the laptop spaces' pre-training batch: 4,096 tokens


def _stepper(size: str, vocab: int) -> tuple[NextTokenLoss, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    lm = NextTokenLoss(build_model(SIZES[size], vocab, CONTEXT))
    optimizer = build_optimizer(lm, 3e-3, 0.1, torch.device("cpu"))
    windows = torch.randint(0, vocab, (WINDOWS, CONTEXT + 1))
    return lm, optimizer, windows


def _tokens_per_s(
    lm: NextTokenLoss, optimizer: torch.optim.Optimizer, windows: torch.Tensor, steps: int
) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        train_step(lm, optimizer, windows, 3e-3)
    return steps * WINDOWS * CONTEXT / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["xs", "s", "m"])
    parser.add_argument("--vocabs", nargs="+", type=int, default=[4096, 1024])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread per trial, as the laptop spaces run
    base = max(args.vocabs)
    print(f"size  vocab  tokens/s (median of {args.repeats})  ratio to {base}")
    for size in args.sizes:
        steppers = {v: _stepper(size, v) for v in args.vocabs}
        for v in args.vocabs:  # warm-up: allocator, first-call overheads
            _tokens_per_s(*steppers[v], steps=2)
        rates: dict[int, list[float]] = {v: [] for v in args.vocabs}
        for r in range(args.repeats):
            order = args.vocabs if r % 2 == 0 else list(reversed(args.vocabs))
            for v in order:
                rates[v].append(_tokens_per_s(*steppers[v], steps=args.steps))
        median = {v: statistics.median(rates[v]) for v in args.vocabs}
        for v in args.vocabs:
            print(f"{size:<5} {v:>5}  {median[v]:>10,.0f}  {median[v] / median[base]:.2f}x")


if __name__ == "__main__":
    main()
