"""The sweep engine's overhead: a small real sweep's wall time against its trials' own training time.

    .venv/bin/python benchmarks/sweep_overhead.py [--token-cap 262144] [--concurrency 2]

One run, one machine: a two-stage sweep of tiny models on the built-in Bible (1 pre-training + 12 transfer
trials, Spanish, D_F 1K/4K/16K, scratch and fine-tuned, two LRs; every run goes to its token cap) through
embedded Ray Tune + MLflow (SQLite). Ideal wall time = sum of the trials' own training times (TrialResult.wall_s:
the training loop, evaluations and checkpoints) / concurrency. Printed:

- ratio_sweep  = (Ray start + sweep) / ideal        goal <= 1.15 on 2 cores
- ratio_engine = sweep (Ray already up) / ideal
- per-trial overhead, amortized: (sweep x concurrency - sum of training) / trials, in seconds
- per-trial overhead, steady state: the median, over trials, of (driver saw start -> driver saw end) - training,
  and the median gap between a trial's end and the next start (what Tune's scheduling costs once warm)

One-time costs (tokenizing the corpora, creating the MLflow store) are paid before the clock starts and printed
apart: a relaunch or a second sweep on the same storage does not pay them again. The machine's other load adds
to every figure; run it on an idle machine for numbers to quote.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sweep_engine.config import load_space
from sweep_engine.ledger import read_ledger
from sweep_engine.sweep.driver import SweepDriver
from sweep_engine.sweep.jobs import NoProgressView, Outcome, SweepPaths
from sweep_engine.sweep.ray_tune import RayExecutor, prepare, ray_session
from sweep_engine.tracking import open_tracker


def space_yaml(storage: Path, token_cap: int, concurrency: int) -> dict[str, Any]:
    nt = {"builtin": "bible", "translations": ["web"], "part": "nt"}
    # patience above the number of evaluations: every run trains to its cap, so trial times are predictable
    stopping = {"eval_interval_tokens": token_cap // 4, "token_cap": token_cap, "patience": 10}
    return {
        "name": "overhead",
        "storage": str(storage),
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": concurrency, "max_retries": 0},
        "tokenizer": {"kind": "bpe", "vocab_size": 512, "corpus": nt},
        "pretrain": {
            "language": "en",
            "corpus": nt,
            "sizes": ["xs"],
            "context": 32,
            "batch_tokens": 1024,
            "lr": 3e-3,
            "schedule": {"kind": "cosine", "warmup_steps": 5},
            "stopping": {**stopping, "eval_interval_tokens": token_cap // 2, "token_cap": token_cap * 2},
            "validation": {"size": 50},
        },
        "transfer": {
            "languages": {"es": {"corpus": {"builtin": "bible", "part": "nt"}}},
            "d_f": [1000, 4000, 16000],
            "init": ["scratch", "finetune"],
            "lr": [1e-3, 3e-3],
            "schedules": [{"kind": "cosine", "warmup_steps": 2}],
            "context": 32,
            "batch_tokens": 512,
            "stopping": stopping,
            "validation": {"size": 50},
        },
    }


class Clock(NoProgressView):
    """Records when the driver saw each trial start and end."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}

    def trial_started(self, stage: str, key: str) -> None:
        self.starts.setdefault(key, time.perf_counter() - self.t0)

    def trial_ended(self, stage: str, outcome: Outcome) -> None:
        if outcome.trial_key in self.starts:  # ran in this launch
            self.ends[outcome.trial_key] = time.perf_counter() - self.t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--token-cap", type=int, default=262144, help="tokens per transfer trial")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (one CPU each)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.yaml"
        path.write_text(yaml.safe_dump(space_yaml(Path(tmp) / "results", args.token_cap, args.concurrency)))
        space = load_space(path)
        t = time.perf_counter()
        prepare(space)
        t_data = time.perf_counter() - t
        t = time.perf_counter()
        tracker = open_tracker(space.tracking_uri, space.experiment_name)
        t_store = time.perf_counter() - t

        t = time.perf_counter()
        with ray_session(None, num_cpus=args.concurrency):
            t_ray = time.perf_counter() - t
            clock = Clock()
            executor = RayExecutor(SweepPaths.of(space), space)
            summary = SweepDriver(space, executor, tracker, clock).run()
        assert summary.exit_code == 0, summary
        t_sweep = summary.wall_s

        ledger = read_ledger(SweepPaths.of(space).ledger).set_index("trial_key")
        train = ledger.wall_s.astype(float)
        n, conc = len(train), args.concurrency
        ideal = float(train.sum()) / conc
        in_trial = [clock.ends[k] - clock.starts[k] - train[k] for k in clock.ends]
        ends = sorted(clock.ends.values())
        starts = sorted(clock.starts.values())[conc:]  # the first `conc` start with the sweep
        gaps = [s - max((e for e in ends if e <= s), default=s) for s in starts]

    print(f"trials: {n} ({args.token_cap} tokens per transfer trial), concurrency {conc}")
    print(f"one-time, before the clock: data {t_data:.1f} s, MLflow store {t_store:.1f} s")
    print(f"sum of trial training times {train.sum():.1f} s -> ideal wall {ideal:.1f} s")
    print(f"Ray start {t_ray:.1f} s, sweep {t_sweep:.1f} s")
    print(f"ratio_sweep  (Ray start + sweep) / ideal = {(t_ray + t_sweep) / ideal:.3f}   (goal <= 1.15)")
    print(f"ratio_engine (sweep, Ray up) / ideal      = {t_sweep / ideal:.3f}")
    print(f"per-trial overhead, amortized:   {(t_sweep * conc - train.sum()) / n:.2f} s")
    print(f"per-trial overhead, steady state (medians): {statistics.median(in_trial):.2f} s inside the trial")
    print(
        f"  (start->end minus training), {statistics.median(gaps):.2f} s from a trial's end to the next start"
    )


if __name__ == "__main__":
    main()
