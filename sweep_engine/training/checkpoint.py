"""What a trial leaves in its workdir, each file written atomically (temporary file, then os.replace).

- workdir/best/: the best model of the run and its tokenizer, `save_pretrained`, loadable with transformers alone
  (`AutoModelForCausalLM` / `AutoTokenizer.from_pretrained`), plus trial_spec.json, the spec that trained it, so
  that fine-tuning can tell tokenizers apart. Written once, when the run stops: until then the best weights are
  a CPU copy in memory and in state.pt.
- workdir/state.pt: the resumable state (weights, optimizer, batch position, RNGs, progress and the best
  weights so far), rewritten at evaluations by the execution's cadence; removed once the result is written.
- workdir/result.json: TrialResult.to_dict(); the run is finished, a relaunch returns it without training.

A state can be written to a local directory first and moved to the workdir in the background (`StateWriter`),
so a 2 GB state on shared storage costs the training loop only the local write.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from sweep_engine.data.batches import BatchSource
from sweep_engine.errors import ConfigError
from sweep_engine.spec import PRUNE_FILE, RESULT_FILE, EvalPoint, StopReason, TrialResult, read_result

BEST_DIR = "best"
STATE_FILE = "state.pt"
SPEC_FILE = "trial_spec.json"


def _tmp(path: Path) -> Path:
    # The pid keeps two writers (which should never happen) from clobbering each other's temporary file.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old file or the new one, never half of one."""
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` to `path` atomically."""
    tmp = _tmp(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def hf_tokenizer(tokenizer_file: str | Path, context: int) -> PreTrainedTokenizerFast:
    """The trial's tokenizer as Hugging Face loads it (`AutoTokenizer.from_pretrained(best)`): the same
    tokenizers JSON, its end-of-text token as EOS, BOS and UNK (GPT-2's convention), `context` as its length."""
    from sweep_engine.data.tokenizer import EOT

    return PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        eos_token=EOT,
        bos_token=EOT,
        unk_token=EOT,
        model_max_length=context,
    )


def save_best(
    model: PreTrainedModel,
    workdir: Path,
    spec_dict: dict[str, Any],
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> None:
    """Save `model` as workdir/best (save_pretrained) with the spec that trained it and, when given, its
    tokenizer, so that `AutoModelForCausalLM` and `AutoTokenizer.from_pretrained(best)` load both.

    Written to a sibling directory first and swapped in, so a crash mid-save leaves the previous best intact.
    """
    best = workdir / BEST_DIR
    tmp = workdir / f".{BEST_DIR}.tmp"
    old = workdir / f".{BEST_DIR}.old"
    for d in (tmp, old):
        shutil.rmtree(d, ignore_errors=True)
    if tokenizer is not None:
        # GPT-2's config names id 50256 as BOS/EOS; a model with its own vocabulary generates up to its own.
        model.config.bos_token_id = model.config.eos_token_id = tokenizer.eos_token_id
        tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    (tmp / SPEC_FILE).write_text(json.dumps(spec_dict, sort_keys=True, indent=1))
    if best.exists():
        os.replace(best, old)
    os.replace(tmp, best)
    shutil.rmtree(old, ignore_errors=True)


def load_best_weights(workdir: Path) -> dict[str, torch.Tensor] | None:
    """The weights in workdir/best, or None when there are none: a resume from a state.pt written before
    states carried the best weights (then best/ was rewritten at every improvement)."""
    best = workdir / BEST_DIR
    if not (best / "config.json").exists():
        return None
    from transformers import GPT2LMHeadModel

    weights: dict[str, torch.Tensor] = GPT2LMHeadModel.from_pretrained(best).state_dict()
    return weights


def rng_states() -> dict[str, Any]:
    """Every RNG a run touches (torch CPU and CUDA, numpy's global, Python's)."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states()` captured."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_state(workdir: Path) -> dict[str, Any] | None:
    """The resumable state in workdir/state.pt, or None when there is none."""
    path = workdir / STATE_FILE
    if not path.exists():
        return None
    # weights_only=False: the state holds numpy and Python RNG states; the file is our own, written by this run.
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def write_result(workdir: Path, result: TrialResult) -> None:
    """Write workdir/result.json atomically and drop the resumable state, which is no longer needed."""
    atomic_write_text(workdir / RESULT_FILE, json.dumps(result.to_dict(), indent=1))
    (workdir / PRUNE_FILE).unlink(missing_ok=True)  # a stop request is answered by the result
    (workdir / STATE_FILE).unlink(missing_ok=True)


# The finished result in workdir/result.json, or None (defined in spec.py, where torch-free readers find it).
load_result = read_result


@dataclass
class RunProgress:
    """Where a run stands: everything besides weights, optimizer and data position that a resume needs."""

    step: int = 0
    curve: list[EvalPoint] = field(default_factory=list)
    best_val_loss: float = math.inf
    tokens_at_best: int = 0
    best_extra_val_loss: dict[str, float] = field(default_factory=dict)
    wait: int = 0  # evaluations since the last improvement of at least min_delta
    stop_reason: StopReason | None = None  # set at the evaluation that ends the run
    zero_shot_loss: float | None = None
    zero_shot_extra_val_loss: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0  # wall time of earlier sessions of this trial
    train_s: float = 0.0  # training time only (no evaluation, no checkpoints), for throughput
    eval_s: float = 0.0  # evaluation time (zero-shot and every interval; the final sets are added at the end)
    checkpoint_s: float = 0.0  # time the loop spent writing state.pt
    best_val_doc_loss: list[float] = field(default_factory=list)  # per validation document, at the best step


def save_state(
    workdir: Path,
    spec_key: str,
    lm: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchSource,
    progress: RunProgress,
    best_weights: dict[str, torch.Tensor] | None = None,
    writer: StateWriter | None = None,
) -> None:
    """Write workdir/state.pt atomically: model, optimizer, batch position, RNG states, progress and the best
    weights so far (so a resumed run still scores its test split with, and saves, the best step's model).

    There is no scheduler state: the LR is a pure function of the step (sweep_engine.training.schedule).

    Args:
        writer: Where the bytes go first (a local directory, then moved in the background); None writes to
            the workdir directly.
    """
    state = {
        "spec_key": spec_key,
        "model": lm.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"step": progress.step},
        "batches": batches.state_dict(),
        "rng": rng_states(),
        "progress": dataclasses.asdict(progress),
        "best_weights": best_weights,
    }
    if writer is None:
        atomic_torch_save(state, workdir / STATE_FILE)
    else:
        writer.save(state, workdir / STATE_FILE)


class StateWriter:
    """Writes states to a local directory, then moves each to its destination on a background thread.

    torch.save to local disk is what the training loop waits for; the copy to shared storage (NFS/EFS, often
    ten times slower) overlaps with training. One move is in flight at a time: a new save first waits for the
    previous move, so states reach the destination in order. `wait()` before anything that reads or removes
    the destination (the end of the run).

    Args:
        local_dir: A directory on local disk (created if missing).
    """

    def __init__(self, local_dir: Path) -> None:
        self.local_dir = Path(local_dir)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, obj: Any, dest: Path) -> None:
        self.wait()
        local = self.local_dir / f"{dest.parent.name}-{dest.name}.{os.getpid()}"
        torch.save(obj, local)
        self._thread = threading.Thread(target=self._move, args=(local, dest), daemon=True)
        self._thread.start()

    def _move(self, local: Path, dest: Path) -> None:
        try:
            tmp = _tmp(dest)
            shutil.copyfile(local, tmp)  # a copy, not a rename: the two are usually different file systems
            os.replace(tmp, dest)
        except BaseException as exc:  # re-raised by wait(), in the training thread
            self._error = exc
        finally:
            local.unlink(missing_ok=True)

    def wait(self) -> None:
        """Block until the last move is done; raise what it raised."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def restore_state(
    state: dict[str, Any],
    spec_key: str,
    lm: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchSource,
) -> RunProgress:
    """Load a `save_state` state into the model, optimizer, batch source and RNGs; return the progress (the best
    weights stay in `state["best_weights"]`, None in states written before they were kept there).

    Raises:
        ConfigError: If the state was written by another trial.
    """
    if state["spec_key"] != spec_key:
        raise ConfigError(f"state.pt belongs to trial {state['spec_key']}, not to trial {spec_key}")
    lm.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    batches.load_state_dict(state["batches"])
    set_rng_states(state["rng"])
    progress = RunProgress(**state["progress"])
    progress.curve = [EvalPoint(**p) for p in state["progress"]["curve"]]
    return progress
