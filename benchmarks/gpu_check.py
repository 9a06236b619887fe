"""The GPU check behind benchmarks/gpu_check.sh: the paper's 124M trial through run_trial on synthetic tokens.

On a CUDA machine: the 124M model (10 x 1024, context 1024, GPT-2's vocabulary) at the paper pre-training batch
(512 x 1024 tokens) for `--steps` optimizer steps through the production path (select_device, the memory plan,
torch.compile, bf16 autocast, fused AdamW, batched evaluation), then one with two ranks under DDP (NCCL) when
two GPUs are visible. It prints tokens/s and MFU of the steady-state intervals (the first, which compiles, is
left out), the micro-batch the memory plan chose, and the peak GPU memory. Goal: MFU >= 40% (moonshot 50%).

With `--dry-run`, or without CUDA, the same path runs scaled down on the CPU (a 2 x 64 model, context 128,
16 windows per step, gloo for the DDP part) so that the script itself is tested anywhere.

    bash benchmarks/gpu_check.sh              # on a GPU machine: under 8 minutes
    bash benchmarks/gpu_check.sh --dry-run    # here
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweep_engine.hardware import peak_flops
from sweep_engine.shapes import SIZES
from sweep_engine.spec import (
    CorpusSpec,
    DataSpec,
    ExecutionSpec,
    ListReporter,
    ModelShape,
    ResourceSpec,
    ScheduleSpec,
    StoppingSpec,
    TokenizerSpec,
    TrialData,
    TrialSpec,
)
from sweep_engine.training.loop import run_trial


@dataclasses.dataclass(frozen=True)
class Setting:
    shape: ModelShape
    vocab: int
    context: int
    batch_windows: int
    gpus: float
    compile: str


GPU = Setting(SIZES["124M"], 50257, 1024, 512, 1.0, "auto")
DRY = Setting(SIZES["xs"], 4096, 128, 16, 0.0, "off")


def trial(setting: Setting, steps: int, every: int) -> tuple[TrialSpec, TrialData]:
    """A pre-training trial of `steps` steps evaluated every `every` steps, on random tokens."""
    rng = np.random.default_rng(0)
    n_train = max(setting.batch_windows * setting.context * 4, 2**20)
    train = rng.integers(0, setting.vocab, n_train).astype(np.uint16)
    val = rng.integers(0, setting.vocab, 32 * setting.context + 1).astype(np.uint16)
    batch = setting.batch_windows * setting.context
    corpus = CorpusSpec(kind="path", language="en", path="synthetic.jsonl")
    spec = TrialSpec(
        sweep="gpu-check", stage="pretrain", language="en", init="scratch", model=setting.shape,
        data=DataSpec(corpus=corpus, tokenizer=TokenizerSpec(kind="files"), d_f=None, val_size=len(val),
                      val_unit="tokens"),
        context=setting.context, batch_tokens=batch, lr=6e-4,
        schedule=ScheduleSpec(kind="cosine", warmup_steps=min(10, steps // 4)),
        stopping=StoppingSpec(eval_interval_tokens=every * batch, token_cap=steps * batch, patience=10**6),
        resources=ResourceSpec(cpus=float(os.cpu_count() or 1), gpus=setting.gpus),
        execution=ExecutionSpec(checkpoint_every_evals=None, compile=setting.compile),
    )  # fmt: skip
    return spec, TrialData(train=train, val=val, vocab_size=setting.vocab)


def peak_memory_gb(device_type: str) -> float:
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB


def single(setting: Setting, steps: int, every: int) -> dict[str, Any]:
    spec, data = trial(setting, steps, every)
    reporter = ListReporter()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_trial(spec, reporter, workdir=Path(tmp), data=data)
    steady = reporter.reports[1:] or reporter.reports  # the first interval includes compilation
    device = "cuda" if setting.gpus > 0 else "cpu"
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "steps": result.steps,
        "wall_s": time.perf_counter() - start,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
        "mfu": statistics.median(r["mfu"] for r in steady) if "mfu" in steady[0] else None,
        "first_interval_tokens_per_s": reporter.reports[0]["tokens_per_s"],
        "eval_per_train": result.eval_s / result.train_s,
        "peak_memory_gb": peak_memory_gb(device),
        "val_loss": result.best_val_loss,
    }


def _ddp_rank(rank: int, world: int, port: int, setting: Setting, steps: int, out: str) -> None:
    backend = "nccl" if setting.gpus > 0 else "gloo"
    if setting.gpus > 0:
        os.environ["LOCAL_RANK"] = str(rank)
    torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)  # fmt: skip
    try:
        spec, data = trial(setting, steps, steps)
        # Every rank sees the same workdir (rank 0 writes it), as on a cluster's shared storage.
        result = run_trial(spec, ListReporter(), workdir=Path(out) / "workdir", data=data)
        Path(out, f"rank{rank}.json").write_text(
            json.dumps({"val_loss": result.best_val_loss, "tokens_per_s": result.tokens_per_s})
        )
    finally:
        torch.distributed.destroy_process_group()


def ddp(setting: Setting, steps: int) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as out:
        torch.multiprocessing.spawn(_ddp_rank, args=(2, port, setting, steps, out), nprocs=2, join=True)
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(2)]
    return {
        "ranks_agree": ranks[0]["val_loss"] == ranks[1]["val_loss"],
        "val_loss": ranks[0]["val_loss"],
        "tokens_per_s": ranks[0]["tokens_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="the scaled-down CPU version (automatic without CUDA)"
    )
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 100 GPU, 20 dry)")
    parser.add_argument("--every", type=int, default=None, help="steps per interval (default: steps / 5)")
    args = parser.parse_args()
    dry = args.dry_run or not torch.cuda.is_available()
    setting = DRY if dry else GPU
    steps = args.steps or (20 if dry else 100)
    every = args.every or max(1, steps // 5)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    loop_log = logging.getLogger("sweep_engine.training.loop")
    loop_log.setLevel(logging.INFO)
    loop_log.addFilter(
        lambda record: "micro-batch" in record.getMessage() or record.levelno >= logging.WARNING
    )
    if dry:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
        print("dry run: no CUDA (or --dry-run); the same path scaled down on the CPU")
    s = setting
    print(f"model {s.shape.n_layer} x {s.shape.d_model} ({s.shape.name}), context {s.context}, vocab {s.vocab}, "
          f"batch {s.batch_windows} x {s.context} tokens, {steps} steps, evaluated every {every}")  # fmt: skip
    r = single(setting, steps, every)
    peak = peak_flops(r["device"])
    print(
        f"device: {r['device']} (peak {peak:.3g} FLOP/s)"
        if peak
        else f"device: {r['device']} (no peak known)"
    )
    print(f"tokens/s: {r['tokens_per_s']:,.0f} (steady intervals; first interval, with compilation: "
          f"{r['first_interval_tokens_per_s']:,.0f})")  # fmt: skip
    print(
        f"MFU: {r['mfu']:.1%} (goal >= 40%)" if r["mfu"] is not None else "MFU: n/a (no peak for this device)"
    )
    print(f"peak memory: {r['peak_memory_gb']:.2f} GB ({'GPU, allocated' if not dry else 'CPU, max RSS'})")
    print(
        f"eval s / train s: {r['eval_per_train']:.3f}; final val loss {r['val_loss']:.3f}; wall {r['wall_s']:.0f} s"
    )
    if dry or torch.cuda.device_count() >= 2:
        d = ddp(setting, max(4, steps // 10))
        print(f"DDP 2 ranks ({'gloo' if dry else 'nccl'}): ranks agree {d['ranks_agree']}, val loss {d['val_loss']:.3f}, "
              f"{d['tokens_per_s']:,.0f} tokens/s")  # fmt: skip
    else:
        print("DDP: skipped (fewer than 2 GPUs)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
