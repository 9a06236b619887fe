"""Evaluation seconds per training second of the paper spaces' 124M trials, measured on this CPU.

A 124M model at context 1024 and GPT-2's vocabulary trains at tens of tokens per second on a CPU, so the paper
runs themselves cannot be timed here. The benchmark measures, side by side in one run, the two rates the ratio
is made of, on the real code paths (training/step.py's train_step, training/evaluate.py's batched evaluation):

- seconds per trained token: `--train-windows` windows of 1024 tokens per step (a scaled-down batch);
- seconds per evaluated token: the evaluation batch memory.eval_windows picks for this CPU (and, for contrast,
  one window per forward, as before evaluation was batched);
  interleaved round by round, so that both see the same load on a shared machine;

then applies them to the token counts of the paper spaces' settings (search_spaces/paper/*.yaml): the tokens a
124M trial trains until the stop `validate` expects (its overfitting point, then `patience` evaluations;
budgets.py; the pre-training runs to its cap), and every token it evaluates on the way (validation at each
interval, zero-shot sets of fine-tuned runs, the test split and the extra sets once at the end with the best
weights). `--loop` also runs run_trial itself on a scaled-down 124M trial and prints its recorded eval_s /
train_s next to the ratio the per-token rates predict for it.

    .venv/bin/python benchmarks/eval_cost.py            # ~10 minutes on a 2-core machine
    .venv/bin/python benchmarks/eval_cost.py --loop     # + one scaled-down run_trial (~10 minutes more)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sweep_engine.budgets import cap_checks
from sweep_engine.config import load_space
from sweep_engine.shapes import SIZES
from sweep_engine.space import pretrain_trials, transfer_trials
from sweep_engine.spec import TrialSpec
from sweep_engine.training.evaluate import eval_loss
from sweep_engine.training.memory import eval_windows
from sweep_engine.training.model import build_model
from sweep_engine.training.step import NextTokenLoss, build_optimizer, train_step

SPACES = Path(__file__).resolve().parent.parent / "search_spaces" / "paper"
VOCAB, CONTEXT = 50257, 1024
SHAPE = SIZES["124M"]


def measure(
    train_windows: int, eval_windows_n: int, batch_windows: int, rounds: int
) -> dict[str, list[float]]:
    """Seconds per token of training and of evaluation, interleaved: each round times one training step of
    `train_windows` windows, one evaluation of `eval_windows_n` windows in batches of `batch_windows`, and one
    with one window per forward, so that all three see the same load on a shared machine."""
    torch.manual_seed(0)
    lm = build_model(SHAPE, VOCAB, CONTEXT)
    model, optimizer = NextTokenLoss(lm), build_optimizer(lm, 1e-4, 0.1, torch.device("cpu"))
    batch = torch.randint(0, VOCAB, (train_windows, CONTEXT + 1))
    tokens = np.random.default_rng(0).integers(0, VOCAB, eval_windows_n * CONTEXT + 1).astype(np.uint16)
    cpu = torch.device("cpu")
    train_step(model, optimizer, batch, 1e-4)  # warm-up: allocations, thread pools
    eval_loss(lm, tokens[: batch_windows * CONTEXT + 1], CONTEXT, cpu, batch_windows=batch_windows)
    out: dict[str, list[float]] = {"train": [], "eval": [], "eval_1": []}
    for _ in range(rounds):
        start = time.perf_counter()
        train_step(model, optimizer, batch, 1e-4)
        out["train"].append((time.perf_counter() - start) / (train_windows * CONTEXT))
        start = time.perf_counter()
        eval_loss(lm, tokens, CONTEXT, cpu, batch_windows=batch_windows)
        out["eval"].append((time.perf_counter() - start) / (eval_windows_n * CONTEXT))
        start = time.perf_counter()
        eval_loss(lm, tokens[: batch_windows * CONTEXT + 1], CONTEXT, cpu, batch_windows=1)
        out["eval_1"].append((time.perf_counter() - start) / (batch_windows * CONTEXT))
    return out


def interval(t: TrialSpec) -> int:
    return max(1, t.stopping.eval_interval_tokens // t.batch_tokens) * t.batch_tokens


def token_counts(t: TrialSpec, trained: int) -> tuple[int, int]:
    """(tokens trained, tokens evaluated) of a trial that stops after `trained` tokens."""
    d = t.data
    assert d.val_unit == "tokens", "the paper spaces size their held-out sets in tokens"
    val, test, extra = d.val_size, d.test_size, len(d.extra_val) * d.val_size
    evals = math.ceil(trained / interval(t))
    zero_shot = val + extra if t.init == "finetune" else 0
    return trained, evals * val + zero_shot + test + extra  # test and extra sets once, with the best weights


def paper_cases() -> list[tuple[str, TrialSpec, int]]:
    """(label, trial, tokens trained) of the 124M trials the criterion names."""
    cases = []
    english = load_space(SPACES / "english.yaml")
    pre = next(t for t in pretrain_trials(english) if t.model.name == "124M")
    cases.append(("pre-training 124M (to its cap)", pre, pre.stopping.token_cap))
    for name in ("chinese", "spanish", "german"):
        space = load_space(SPACES / f"{name}.yaml")
        d_f = min(space.transfer.d_f) if space.transfer else 0
        check = next(c for c in cap_checks(space) if c.d_f == d_f)
        for init in ("scratch", "finetune"):
            t = next(t for t in transfer_trials(space)
                     if t.model.name == "124M" and t.data.d_f == d_f and t.init == init)  # fmt: skip
            cases.append(
                (f"{name} D_F={d_f:,} {init} (to its expected stop)", t, min(check.needed, check.token_cap))
            )
    return cases


def run_loop(train_s_per_token: float, eval_s_per_token: float) -> None:
    """A scaled-down 124M trial through run_trial: its recorded eval_s / train_s against the prediction."""
    import dataclasses
    import tempfile

    from sweep_engine.spec import (
        CorpusSpec,
        DataSpec,
        ListReporter,
        ScheduleSpec,
        StoppingSpec,
        TokenizerSpec,
        TrialData,
        TrialSpec,
    )
    from sweep_engine.training.loop import run_trial

    corpus = CorpusSpec(kind="path", language="zh", path="synthetic.txt")
    rng = np.random.default_rng(1)
    train = rng.integers(0, VOCAB, 8 * CONTEXT).astype(np.uint16)
    val = rng.integers(0, VOCAB, 4 * CONTEXT + 1).astype(np.uint16)
    test = rng.integers(0, VOCAB, 8 * CONTEXT + 1).astype(np.uint16)
    data = TrialData(train=train, val=val, vocab_size=VOCAB, test=test)
    spec = TrialSpec(
        sweep="bench", stage="transfer", language="zh", init="scratch", model=SHAPE,
        data=DataSpec(corpus=corpus, tokenizer=TokenizerSpec(kind="files"), d_f=len(train), val_size=len(val),
                      val_unit="tokens", test_size=len(test)),
        context=CONTEXT, batch_tokens=2 * CONTEXT, lr=1e-4, schedule=ScheduleSpec(kind="constant"),
        stopping=StoppingSpec(eval_interval_tokens=4 * CONTEXT, token_cap=8 * CONTEXT, patience=100),
    )  # fmt: skip
    spec = dataclasses.replace(
        spec, resources=dataclasses.replace(spec.resources, cpus=torch.get_num_threads())
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = run_trial(spec, ListReporter(), workdir=Path(tmp), data=data)
    trained = result.tokens_seen
    evaluated = result.steps // 2 * len(val) + len(test)  # val at each of the 2 evaluations, test at the end
    predicted = evaluated * eval_s_per_token / (trained * train_s_per_token)
    print(
        f"run_trial, scaled down ({trained:,} tokens trained in steps of 2 windows, {evaluated:,} evaluated): "
        f"recorded eval_s / train_s = {result.eval_s:.1f} / {result.train_s:.1f} = "
        f"{result.eval_s / result.train_s:.3f}; predicted from the per-token rates {predicted:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-windows", type=int, default=2, help="windows per measured training step")
    parser.add_argument("--eval-windows", type=int, default=10, help="windows per measured evaluation")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are used)")
    parser.add_argument("--loop", action="store_true", help="also time one scaled-down run_trial")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batched = eval_windows(SHAPE, CONTEXT, torch.device("cpu"))
    print(
        f"124M ({SHAPE.n_layer} x {SHAPE.d_model}), context {CONTEXT}, vocab {VOCAB}, {args.threads} threads"
    )
    m = measure(args.train_windows, args.eval_windows, batched, args.rounds)
    train, evaluate, single = (statistics.median(m[k]) for k in ("train", "eval", "eval_1"))
    costs = [e / t for e, t in zip(m["eval"], m["train"], strict=True)]
    print(f"training:   {1 / train:8.1f} tokens/s ({args.train_windows} windows per step)")
    print(
        f"evaluation: {1 / evaluate:8.1f} tokens/s ({batched} windows per forward, the batch sized to this CPU)"
    )
    print(f"            {1 / single:8.1f} tokens/s (1 window per forward, for contrast)")
    print(f"evaluated / trained token cost: {evaluate / train:.3f} (medians of {args.rounds} interleaved rounds; "
          f"per round {min(costs):.3f}..{max(costs):.3f})")  # fmt: skip
    print()
    print(f"{'trial':<56} {'trained':>14} {'evaluated':>13} {'eval s / train s':>17}")
    for label, t, trained in paper_cases():
        trained, evaluated = token_counts(t, trained)
        ratio = evaluated * evaluate / (trained * train)
        print(f"{label:<56} {trained:>14,} {evaluated:>13,} {ratio:>17.3f}")
    if args.loop:
        print()
        run_loop(train, evaluate)


if __name__ == "__main__":
    main()
