"""What a space will cost before it runs: trials, tokens, FLOPs and an estimated wall time per stage, with the
time split into its terms (training, evaluation, checkpoints, compilation).

Upper bounds assume every run trains to its token cap; early stopping at the overfitting point makes the real
cost smaller. Two FLOP counts: Kaplan's C = 6 N D (N non-embedding), the scaling-law compute the ledger
records, and the hardware's, nanoGPT's 6 (N + V d_model) + 12 n_layer context d_model per token
(hardware.train_flops_per_token: the LM head and attention included), which sets the time.

Time per trial, each term stated (`Assumptions`):
- training: tokens x hardware FLOPs per token / (peak FLOP/s of the GPU type x MFU x GPUs), or the CPU's rate;
- evaluation: the tokens evaluated (every interval: validation; before training: the zero-shot sets of
  fine-tuning runs; at the end, with the best weights: test and the extra sets) at 1/3 of the training FLOPs
  per token (a forward pass), at the same utilisation;
- checkpoints: state.pt (16 bytes per parameter: weights, gradients, AdamW moments) at the space's cadence and
  best/ once, at a write bandwidth (local disk when `checkpoint_local_dir` stages them, else shared storage);
- compilation: a fixed cost per trial that compiles (torch.compile on a GPU).
Trials run `max_concurrent_trials` at a time, and a stage lasts at least as long as its longest trial.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from sweep_engine.config import Space
from sweep_engine.hardware import peak_flops, train_flops_per_token
from sweep_engine.shapes import non_embedding_params
from sweep_engine.space import count_trials, expand
from sweep_engine.spec import ModelShape, TrialSpec

# Sustained training FLOP/s of one CPU thread on small GPT-2s, from a pilot on this project's 2-core machines
# (0.1M params at ~10K tokens/s, 0.8M at ~4K tokens/s, vocab 4096): about 2.5e10 counted as 6 (N + V d).
CPU_FLOPS_PER_CORE = 2.5e10
GPT2_VOCAB = 50257
DEFAULT_GPU = "H100"  # when the space names no accelerator_type and plan is given no --gpu


@dataclass(frozen=True)
class Assumptions:
    """The numbers the estimate rests on (printed with it)."""

    gpu: str | None = None  # the GPU type of GPU trials (None: the space's accelerator_type or DEFAULT_GPU)
    mfu: float = 0.4  # model-FLOPs utilisation of training and evaluation on GPUs
    compile_s: float = 60.0  # torch.compile of one trial's model (once per trial process)
    local_write_bytes_per_s: float = 1e9  # state.pt to local NVMe (checkpoint_local_dir)
    shared_write_bytes_per_s: float = 2e8  # state.pt straight to shared storage (NFS/EFS)
    tokens_per_doc: int = 100  # held-out sets sized in documents (the Bible's verses: 30-100 tokens)


@dataclass
class StagePlan:
    stage: str
    trials: int
    tokens: int  # upper bound: every run to its token cap
    flops: float  # upper bound, Kaplan: 6 N tokens
    hardware_flops: float  # upper bound, 6 (N + V d) + 12 L T d per token: what the devices compute
    est_hours: float  # wall time at `concurrency` trials at once, and no less than the longest trial
    concurrency: int
    sizes: list[str] = field(default_factory=list)
    # Trial-hours per term (summed over trials, before dividing by concurrency).
    train_hours: float = 0.0
    eval_hours: float = 0.0
    checkpoint_hours: float = 0.0
    compile_hours: float = 0.0
    eval_tokens: int = 0  # tokens evaluated, summed over trials


@dataclass
class Plan:
    space: str
    stages: list[StagePlan]
    throughput_source: str  # the stated assumptions, or "calibrated on this machine"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def vocab_size(space: Space) -> int:
    return GPT2_VOCAB if space.tokenizer.kind == "files" else space.tokenizer.vocab_size


def gpu_name(trial: TrialSpec, assume: Assumptions) -> str:
    return assume.gpu or trial.resources.accelerator_type or DEFAULT_GPU


def tokens_per_second(
    trial: TrialSpec, vocab: int, measured: dict[str, float] | None, assume: Assumptions = Assumptions()
) -> float:
    """Training tokens/s of one trial: calibrated on this CPU for CPU trials when measured, else peak FLOP/s of
    its devices x utilisation over the hardware FLOPs per token. A CPU calibration never stands in for a GPU."""
    r = trial.resources
    if r.gpus <= 0 and measured and trial.model.name in measured:
        return measured[trial.model.name] * max(r.cpus, 1.0)
    if r.gpus > 0:
        peak = peak_flops(gpu_name(trial, assume)) or peak_flops(DEFAULT_GPU)
        assert peak is not None
        return (
            r.gpus * r.workers * peak * assume.mfu / train_flops_per_token(trial.model, vocab, trial.context)
        )
    # The CPU figure was measured counting 6 (N + V d) per token (attention is small at laptop contexts).
    per_token = 6 * (non_embedding_params(trial.model) + vocab * trial.model.d_model)
    return r.cpus * r.workers * CPU_FLOPS_PER_CORE / per_token


def trial_flops(trial: TrialSpec) -> float:
    """Upper bound on one trial's training FLOPs: 6 N per token up to its token cap (Kaplan)."""
    return 6.0 * non_embedding_params(trial.model) * trial.stopping.token_cap


def study_flops(spaces: list[Space]) -> dict[str, float]:
    """Training FLOPs (upper bounds) of several spaces run as one study, per stage.

    The pre-training trials the target spaces share through `pretrain_from` have the same keys and run once,
    so each is counted once; the Optuna search is costed as its budget of trials per cell, as in `make_plan`.
    """
    pretrain: dict[str, float] = {}
    transfer = 0.0
    for space in spaces:
        trials = expand(space)
        grid = [t for t in trials if t.stage == "transfer"]
        scale = count_trials(space)["transfer"] / len(grid) if grid else 0.0
        transfer += sum(trial_flops(t) for t in grid) * scale
        pretrain.update({t.key(): trial_flops(t) for t in trials if t.stage == "pretrain"})
    return {"pretrain": sum(pretrain.values()), "transfer": transfer}


def eval_tokens(trial: TrialSpec, assume: Assumptions = Assumptions()) -> int:
    """Tokens a trial evaluates when it runs to its cap (see the module docstring)."""
    d = trial.data
    per_doc = assume.tokens_per_doc if d.val_unit == "docs" else 1
    val, test = d.val_size * per_doc, d.test_size * per_doc
    extra = len(d.extra_val) * val  # an extra set is that corpus's validation split, sized the same
    evals = math.ceil(trial.stopping.token_cap / (_interval(trial)))
    zero_shot = val + extra if trial.init == "finetune" else 0
    return evals * val + zero_shot + test + extra  # the extra sets once, with the best weights


def _interval(trial: TrialSpec) -> int:
    return max(1, trial.stopping.eval_interval_tokens // trial.batch_tokens) * trial.batch_tokens


def _params(shape: ModelShape, vocab: int, context: int) -> int:
    return non_embedding_params(shape) + (vocab + context) * shape.d_model


def trial_seconds(
    trial: TrialSpec, vocab: int, measured: dict[str, float] | None, assume: Assumptions = Assumptions()
) -> dict[str, float]:
    """Seconds of each term of one trial run to its cap."""
    rate = tokens_per_second(trial, vocab, measured, assume)
    train = trial.stopping.token_cap / rate
    evaluate = eval_tokens(trial, assume) / (3 * rate)  # a forward pass: a third of a training step's FLOPs
    ex = trial.execution
    evals = math.ceil(trial.stopping.token_cap / _interval(trial))
    saves = 0.0
    if ex.checkpoint_every_evals:
        saves = max(saves, evals / ex.checkpoint_every_evals)
    if ex.checkpoint_every_tokens:
        saves = max(saves, trial.stopping.token_cap / ex.checkpoint_every_tokens)
    if ex.checkpoint_every_s:
        saves = max(saves, (train + evaluate) / ex.checkpoint_every_s)
    bandwidth = assume.local_write_bytes_per_s if ex.checkpoint_local_dir else assume.shared_write_bytes_per_s
    params = _params(trial.model, vocab, trial.context)
    checkpoint = (saves * 16 * params + 4 * params) / bandwidth  # states, then best/ once
    compiles = ex.compile not in ("auto", "off") or (ex.compile == "auto" and trial.resources.gpus > 0)
    return {
        "train": train,
        "eval": evaluate,
        "checkpoint": checkpoint,
        "compile": assume.compile_s if compiles else 0.0,
    }


def make_plan(
    space: Space, measured: dict[str, float] | None = None, assume: Assumptions = Assumptions()
) -> Plan:
    """Cost per stage. `measured` maps shape name to one-thread CPU tokens/s (see `training.step.calibrate`)."""
    counts = count_trials(space)
    vocab = vocab_size(space)
    concurrency = space.resources.max_concurrent_trials or 1
    trials = expand(space)
    stages = []
    for stage in ("pretrain", "transfer"):
        grid = [t for t in trials if t.stage == stage]
        # The Optuna search samples its trials at run time; cost it as its budget of trials per cell.
        scale = counts[stage] / len(grid) if grid else 0.0
        terms = [trial_seconds(t, vocab, measured, assume) for t in grid]
        durations = [sum(t.values()) for t in terms]

        def total(key: str, terms: list[dict[str, float]] = terms, scale: float = scale) -> float:
            return sum(t[key] for t in terms) * scale / 3600

        # Trials run `concurrency` at a time, but a stage lasts at least as long as its longest trial.
        seconds = max(sum(durations) * scale / concurrency, max(durations, default=0.0))
        stages.append(
            StagePlan(
                stage=stage,
                trials=counts[stage],
                tokens=int(sum(t.stopping.token_cap for t in grid) * scale),
                flops=float(sum(trial_flops(t) for t in grid) * scale),
                hardware_flops=float(
                    sum(train_flops_per_token(t.model, vocab, t.context) * t.stopping.token_cap for t in grid)
                    * scale
                ),
                est_hours=seconds / 3600,
                concurrency=concurrency,
                sizes=list(dict.fromkeys(t.model.name for t in grid)),
                train_hours=total("train"),
                eval_hours=total("eval"),
                checkpoint_hours=total("checkpoint"),
                compile_hours=total("compile"),
                eval_tokens=int(sum(eval_tokens(t, assume) for t in grid) * scale),
            )
        )
    return Plan(space=space.name, stages=stages, throughput_source=describe(trials, measured, assume))


def describe(trials: list[TrialSpec], measured: dict[str, float] | None, assume: Assumptions) -> str:
    """The assumptions behind the estimate, in one line."""
    gpus = sorted({gpu_name(t, assume) for t in trials if t.resources.gpus > 0})
    parts = []
    if gpus:
        peaks = ", ".join(f"{g} {peak_flops(g) or peak_flops(DEFAULT_GPU):.3g} FLOP/s" for g in gpus)
        parts.append(f"GPU peak (dense bf16) {peaks} at {assume.mfu:.0%} MFU")
    if any(t.resources.gpus <= 0 for t in trials):
        parts.append(
            "CPU calibrated on this machine (one thread per CPU)"
            if measured
            else f"CPU {CPU_FLOPS_PER_CORE:.1e} FLOP/s per core"
        )
    parts.append("GPU FLOPs per token 6 (N + V d) + 12 L T d, evaluation a third of that")
    parts.append(
        f"checkpoints at {assume.local_write_bytes_per_s / 1e9:g} GB/s local, "
        f"{assume.shared_write_bytes_per_s / 1e9:g} GB/s shared; compile {assume.compile_s:g} s per GPU trial"
    )
    return "; ".join(parts)
