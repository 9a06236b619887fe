"""What a space will cost before it runs: trials, tokens, FLOPs and an estimated wall time per stage.

Upper bounds assume every run trains to its token cap; early stopping at the overfitting point makes the real
cost smaller. FLOPs follow Kaplan (6 N per token, N non-embedding). Wall time needs the cost per token including
the embedding and LM-head matmuls (they dominate for laptop-scale models), 6 (N + V d_model), and a throughput.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sweep_engine.config import Space
from sweep_engine.shapes import non_embedding_params
from sweep_engine.space import count_trials, expand
from sweep_engine.spec import TrialSpec

# Sustained training FLOP/s of one CPU thread on small GPT-2s, from a pilot on this project's 2-core machines
# (0.1M params at ~10K tokens/s, 0.8M at ~4K tokens/s, vocab 4096): about 2.5e10 counted as 6 (N + V d).
CPU_FLOPS_PER_CORE = 2.5e10
# One H100 at 40% model-FLOPs utilisation of its ~989 TFLOP/s dense bf16.
GPU_FLOPS = 0.4 * 989e12
GPT2_VOCAB = 50257


@dataclass
class StagePlan:
    stage: str
    trials: int
    tokens: int  # upper bound: every run to its token cap
    flops: float  # upper bound: 6 N tokens
    est_hours: float  # at `concurrency` trials at once, and no less than the longest trial
    concurrency: int
    sizes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    space: str
    stages: list[StagePlan]
    throughput_source: str  # the stated assumption, or "calibrated on this machine"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def vocab_size(space: Space) -> int:
    return GPT2_VOCAB if space.tokenizer.kind == "files" else space.tokenizer.vocab_size


def tokens_per_second(trial: TrialSpec, vocab: int, measured: dict[str, float] | None) -> float:
    """Measured tokens/s for the trial's shape when calibrated, else the stated FLOP/s assumption."""
    if measured and trial.model.name in measured:
        return measured[trial.model.name] * max(trial.resources.cpus, 1.0)
    per_token = 6 * (non_embedding_params(trial.model) + vocab * trial.model.d_model)
    r = trial.resources
    rate = r.gpus * r.workers * GPU_FLOPS if r.gpus > 0 else r.cpus * r.workers * CPU_FLOPS_PER_CORE
    return rate / per_token


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


def make_plan(space: Space, measured: dict[str, float] | None = None) -> Plan:
    """Cost per stage. `measured` maps shape name to one-thread tokens/s (see `training.step.calibrate`)."""
    counts = count_trials(space)
    vocab = vocab_size(space)
    concurrency = space.resources.max_concurrent_trials or 1
    trials = expand(space)
    stages = []
    for stage in ("pretrain", "transfer"):
        grid = [t for t in trials if t.stage == stage]
        # The Optuna search samples its trials at run time; cost it as its budget of trials per cell.
        scale = counts[stage] / len(grid) if grid else 0.0
        tokens = sum(t.stopping.token_cap for t in grid) * scale
        flops = sum(trial_flops(t) for t in grid) * scale
        durations = [t.stopping.token_cap / tokens_per_second(t, vocab, measured) for t in grid]
        # Trials run `concurrency` at a time, but a stage lasts at least as long as its longest trial.
        seconds = max(sum(durations) * scale / concurrency, max(durations, default=0.0))
        stages.append(
            StagePlan(
                stage=stage,
                trials=counts[stage],
                tokens=int(tokens),
                flops=float(flops),
                est_hours=seconds / 3600,
                concurrency=concurrency,
                sizes=list(dict.fromkeys(t.model.name for t in grid)),
            )
        )
    source = (
        "calibrated on this machine (one thread per CPU)"
        if measured
        else f"assumed {CPU_FLOPS_PER_CORE:.1e} FLOP/s per CPU core, {GPU_FLOPS:.1e} per GPU, "
        f"counted as 6 (N + V d_model) per token"
    )
    return Plan(space=space.name, stages=stages, throughput_source=source)
