"""The training loop of one trial, as a plain function (no Ray): `run_trial(spec, reporter, workdir=...)`.

It reads top to bottom: settings and checks, data, model, optimizer, resume, then the loop, which trains one
optimizer step of `spec.batch_tokens` tokens at a time and every `eval_interval_tokens` evaluates, checkpoints,
reports and decides whether to stop (overfit / plateau, budget, diverged), then the end: the best step's weights
score the test split (and, when they are not evaluated at every step, the extra validation sets) and are
written to best/ once. Under torch.distributed with world_size > 1 the same code runs once per rank with DDP;
rank 0 alone writes files, every rank reports.

The device comes from the caller (`device_fn`, e.g. Ray Train's get_device) or LOCAL_RANK, never the CPU for a
GPU trial (devices.py). What one rank feeds through the model at once is sized to the device's memory
(memory.py); an out-of-memory step is retried once with half the micro-batch.

The sweep layer talks to it only through `Reporter.report(metrics, checkpoint_dir)` and the workdir's files
(see sweep_engine.training.checkpoint): a relaunch after a crash resumes from workdir/state.pt, and a relaunch
after the end returns workdir/result.json without training.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from sweep_engine.data.batches import BatchSource
from sweep_engine.errors import ConfigError, DataError
from sweep_engine.hardware import mfu
from sweep_engine.spec import (
    DocIndex,
    EvalPoint,
    Reporter,
    StoppingSpec,
    TrialData,
    TrialResult,
    TrialSpec,
    prune_requested,
)
from sweep_engine.training import checkpoint as ckpt
from sweep_engine.training.checkpoint import load_result
from sweep_engine.training.devices import DeviceFn, device_peak_flops, select_device
from sweep_engine.training.evaluate import eval_loss, eval_loss_by_doc
from sweep_engine.training.memory import device_budget, plan_memory, smaller_micro
from sweep_engine.training.model import (
    build_model,
    count_non_embedding,
    estimate_n,
    flops_per_token,
    load_pretrained,
    resolve_shape,
)
from sweep_engine.training.schedule import check_schedule, lr_at
from sweep_engine.training.step import (
    GRAD_CLIP,
    NextTokenLoss,
    batch_geometry,
    build_optimizer,
    measure_throughput,
    train_step,
)
from sweep_engine.training.stopping import record_eval

__all__ = [
    "GRAD_CLIP",
    "NextTokenLoss",
    "batch_geometry",
    "build_optimizer",
    "load_result",
    "measure_throughput",
    "run_trial",
    "train_step",
]

log = logging.getLogger(__name__)


def check_token_sets(data: TrialData) -> None:
    """Every token set holds >= 2 ids in [0, vocab_size): checked once, before training, because an
    out-of-range id would otherwise surface as an opaque indexing error mid-run. The id ranges recorded when
    the token files were written are used where they exist, so a paper-scale training sequence is not read.

    Raises:
        DataError: A set too short or with an id outside the vocabulary.
    """
    sets = {"train": data.train, "val": data.val, **data.extra_val}
    if data.test is not None:
        sets["test"] = data.test
    for name, arr in sets.items():
        lo, hi = data.id_range.get(name) or ((int(arr.min()), int(arr.max())) if len(arr) else (0, -1))
        if len(arr) < 2 or hi >= data.vocab_size or lo < 0:
            raise DataError(
                f"token set {name!r} must hold >= 2 ids in [0, vocab_size={data.vocab_size}), but got "
                f"{len(arr)} ids" + (f" in [{lo}, {hi}]" if len(arr) else "")
            )


def eval_every_steps(stop: StoppingSpec, d_f: int, batch_tokens: int) -> int:
    """Steps between evaluations: the interval in tokens, shortened to `eval_interval_epochs` of the training
    set when that is set (pre-training, whose size is known only now), never below one step."""
    tokens = stop.eval_interval_tokens
    if stop.eval_interval_epochs is not None:
        tokens = min(tokens, max(batch_tokens, round(stop.eval_interval_epochs * d_f)))
    return max(1, tokens // batch_tokens)


def compile_backend(setting: str, device: torch.device) -> str | None:
    """The torch.compile backend of ExecutionSpec.compile: "auto" compiles with inductor on CUDA only (on the
    CPU it costs more than it saves at these sizes), "off" never, anything else is a backend name."""
    if setting == "auto":
        return "inductor" if device.type == "cuda" else None
    return None if setting == "off" else setting


def is_oom(exc: BaseException) -> bool:
    """An allocation failure: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def run_trial(
    spec: TrialSpec,
    reporter: Reporter,
    *,
    workdir: Path,
    data: TrialData | None = None,
    init_dir: Path | None = None,
    cache_dir: Path | None = None,
    checkpoint_every: int | None = None,
    device_fn: DeviceFn | None = None,
) -> TrialResult:
    """Train one trial to its overfitting point, token cap or divergence, and return what it recorded.

    Args:
        spec: The trial.
        reporter: Receives metrics after every evaluation (all ranks); `checkpoint_dir` on rank 0 after a save.
        workdir: The trial's directory: best/, state.pt and result.json (sweep_engine.training.checkpoint). Under
            DDP all ranks must see the same directory.
        data: The token arrays; None loads them with sweep_engine.data.load_trial_data(spec.data, cache_dir).
        init_dir: finetune: the English model of the same shape (a save_pretrained directory).
        cache_dir: Where load_trial_data caches tokenized data.
        checkpoint_every: Write state.pt every this many evaluations (overrides
            spec.execution.checkpoint_every_evals; the time and token cadences still apply).
        device_fn: Gives this worker's GPU (Ray Train's get_device); None: cuda:LOCAL_RANK. GPU trials only.

    Returns:
        The TrialResult (also written to workdir/result.json).

    Raises:
        ConfigError: For a spec that breaks a rule (batch geometry, schedule, missing init_dir, a GPU trial
            without a GPU, ...).
        DataError: For token arrays too short or outside the vocabulary.
        torch.OutOfMemoryError: When a step does not fit even after its one retry with half the micro-batch.
    """
    workdir = Path(workdir)
    done = load_result(workdir)
    if done is not None:
        return done  # finished before: a relaunch must not retrain

    # ---- settings: distributed, device, threads, batch geometry, checkpoint cadence --------------------------
    ddp = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    master = rank == 0  # only rank 0 writes files
    device = select_device(spec.resources.gpus, device_fn)
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    global_windows, spec_micro, _ = batch_geometry(spec, world)
    rank_windows = global_windows // world
    check_schedule(spec.schedule)
    stop, execution = spec.stopping, spec.execution
    max_steps = stop.token_cap // spec.batch_tokens  # the token cap, in steps: also the LR decay horizon
    every_evals = checkpoint_every if checkpoint_every is not None else execution.checkpoint_every_evals
    cadence = (every_evals, execution.checkpoint_every_s, execution.checkpoint_every_tokens)
    if max_steps < 1 or stop.patience < 1 or any(c is not None and c <= 0 for c in cadence):
        raise ConfigError(
            "`stopping.token_cap >= batch_tokens`, `stopping.patience >= 1` and every checkpoint cadence > 0 "
            f"must hold, but got (token_cap={stop.token_cap}, batch_tokens={spec.batch_tokens}, "
            f"patience={stop.patience}, checkpoint every evals/s/tokens={cadence})"
        )
    if spec.init == "finetune" and (init_dir is None or not Path(init_dir).is_dir()):
        raise ConfigError(f"a finetune trial needs init_dir, an existing directory, but got {init_dir}")
    # bf16 autocast and compilation pay off on GPUs; on the CPU they cost more than they save at these sizes.
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast: Callable[[], AbstractContextManager[object]] = (
        partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext
    )

    # ---- data -----------------------------------------------------------------------------------------------
    if data is None:
        # Imported here: callers that pass arrays (tests, benchmarks) never touch the corpus/tokenizer stack.
        from sweep_engine.data import load_trial_data

        if cache_dir is None:
            raise ConfigError("run_trial needs `cache_dir` (the data caches) when `data` is not given")
        data = load_trial_data(spec.data, Path(cache_dir))
    check_token_sets(data)
    batches = BatchSource(data.train, spec.context, global_windows, spec.seed, rank, world)
    eval_every = eval_every_steps(stop, len(data.train), spec.batch_tokens)
    # Saved beside the best model, so the model is usable without the engine.
    tokenizer = ckpt.hf_tokenizer(data.tokenizer_file, spec.context) if data.tokenizer_file else None

    # ---- model, what fits the device, optimizer -----------------------------------------------------------
    shape = resolve_shape(spec.model)
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed)
    random.seed(spec.seed)
    notes: list[str] = []
    if spec.init == "finetune":
        assert init_dir is not None
        lm, notes = load_pretrained(Path(init_dir), shape, data.vocab_size, spec.context, spec.data.tokenizer)
        for note in notes:
            log.warning("%s (init_dir %s)", note, init_dir)
    else:
        lm = build_model(shape, data.vocab_size, spec.context)
    nn.Module.to(lm, device)  # (via nn.Module: transformers' typing of .to() rejects a device)
    n_params = count_non_embedding(lm)
    optimizer = build_optimizer(lm, spec.lr, spec.weight_decay, device)
    share = spec.resources.gpus if 0 < spec.resources.gpus < 1 else 1.0
    memory = plan_memory(shape, data.vocab_size, spec.context, rank_windows, spec_micro, device,
                         budget=device_budget(device, share))  # fmt: skip
    backend = compile_backend(execution.compile, device)

    def wrap() -> nn.Module:
        """The module train_step runs: the loss around the LM, under DDP, compiled (torch's recommended
        order: DDP first, so that dynamo splits the graph at DDP's gradient buckets)."""
        wrapped: nn.Module = NextTokenLoss(lm, memory.logit_chunk_rows)
        if ddp:
            wrapped = DDP(wrapped, device_ids=[device.index] if device.type == "cuda" else None)
        if backend is not None:
            wrapped = torch.compile(wrapped, backend=backend)  # type: ignore[assignment]
        return wrapped

    micro = memory.micro_windows
    model = wrap()
    log.info("trial %s on %s: %s", spec.key(), device, memory.describe(rank_windows // micro))

    def evaluate(tokens: np.ndarray) -> float:
        return eval_loss(lm, tokens, spec.context, device, autocast=autocast, rank=rank, world_size=world,
                         batch_windows=memory.eval_windows)  # fmt: skip

    def evaluate_by_doc(tokens: np.ndarray, docs: DocIndex | None) -> tuple[float, np.ndarray | None]:
        of_target, n_docs = (docs.of_target, len(docs.keys)) if docs is not None else (None, 0)
        return eval_loss_by_doc(lm, tokens, spec.context, device, doc_of_target=of_target, n_docs=n_docs,
                                autocast=autocast, rank=rank, world_size=world,
                                batch_windows=memory.eval_windows)  # fmt: skip

    def evaluate_extra() -> dict[str, float]:
        return {name: evaluate(arr) for name, arr in data.extra_val.items()}

    # ---- resume, or start (a fine-tuned run first records its zero-shot losses) -------------------------------
    # The best step's weights stay in memory (every rank, a CPU copy) and in state.pt; best/ is written once, at
    # the end. A state written before states kept them falls back to the best/ of that time.
    best_weights: dict[str, torch.Tensor] | None = None
    state = ckpt.load_state(workdir)
    if state is not None:
        progress = ckpt.restore_state(state, spec.key(), lm, optimizer, batches)
        best_weights = state.get("best_weights") or ckpt.load_best_weights(workdir)
        del state  # the tensors are in the model and optimizer now; do not keep a second copy alive
        log.info("trial %s resumes at step %d", spec.key(), progress.step)
    else:
        progress = ckpt.RunProgress()
        if spec.init == "finetune":
            t0 = time.perf_counter()
            progress.zero_shot_loss = evaluate(data.val)
            progress.zero_shot_extra_val_loss = evaluate_extra()
            progress.eval_s += time.perf_counter() - t0
        if master:
            workdir.mkdir(parents=True, exist_ok=True)
    wall_offset = progress.wall_s - time.perf_counter()  # + perf_counter() = wall time over all sessions
    writer = (
        ckpt.StateWriter(Path(execution.checkpoint_local_dir)) if execution.checkpoint_local_dir else None
    )
    peak = device_peak_flops(device, spec.resources.accelerator_type)

    # ---- the loop -------------------------------------------------------------------------------------------
    evals_since_save = 0
    saved_at_s, saved_at_tokens = time.perf_counter(), progress.step * spec.batch_tokens
    oom_retried = False
    train_loss_sum = torch.zeros((), device=device)
    steps_since_eval = 0
    t_train = time.perf_counter()
    while progress.stop_reason is None and progress.step < max_steps:
        lr = lr_at(progress.step, spec.lr, spec.schedule, max_steps)
        windows = torch.from_numpy(batches.next_batch()).to(device, non_blocking=True)
        try:
            loss = train_step(model, optimizer, windows, lr, accum=rank_windows // micro, autocast=autocast)
        except Exception as exc:
            smaller = smaller_micro(rank_windows, micro)
            # Once, and not under DDP: the other ranks would wait in an all-reduce this rank never joins.
            if not is_oom(exc) or oom_retried or ddp or smaller is None:
                raise
            log.warning("trial %s: out of memory at micro-batch %d windows; retrying with %d", spec.key(),
                        micro, smaller)  # fmt: skip
            oom_retried, micro = True, smaller
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            model = wrap()
            loss = train_step(model, optimizer, windows, lr, accum=rank_windows // micro, autocast=autocast)
            notes.append(f"oom_retry: micro-batch lowered to {micro} windows of {spec.context} tokens")
        train_loss_sum += loss
        progress.step += 1
        steps_since_eval += 1
        if progress.step % eval_every and progress.step < max_steps:
            continue

        # ---- evaluate, decide, checkpoint, report ----
        if ddp:
            dist.all_reduce(train_loss_sum)
            train_loss_sum /= world
        train_loss = float(train_loss_sum) / steps_since_eval  # the one host sync per evaluation
        interval_s = time.perf_counter() - t_train
        progress.train_s += interval_s
        tokens = progress.step * spec.batch_tokens
        t_eval = time.perf_counter()
        val_loss, val_by_doc = evaluate_by_doc(data.val, data.val_docs)
        progress.eval_s += time.perf_counter() - t_eval
        # The extra sets (English after fine-tuning: forgetting) are scored once, with the best weights, at the
        # end: the best step is all that is reported, and evaluating them at every step doubled small runs' cost.
        point = EvalPoint(tokens, progress.step, val_loss, train_loss, lr)
        new_best = record_eval(progress, point, stop, at_cap=progress.step >= max_steps)
        if progress.stop_reason is None and _prune_requested(workdir, master, ddp, device):
            progress.stop_reason = "pruned"  # the sweep stopped this losing arm (sweep/halving.py)
        if new_best:
            best_weights = {k: v.detach().to("cpu", copy=True) for k, v in lm.state_dict().items()}
            progress.best_val_doc_loss = val_by_doc.tolist() if val_by_doc is not None else []
        evals_since_save += 1
        due = (
            (every_evals is not None and evals_since_save >= every_evals)
            or (execution.checkpoint_every_s is not None
                and time.perf_counter() - saved_at_s >= execution.checkpoint_every_s)
            or (execution.checkpoint_every_tokens is not None
                and tokens - saved_at_tokens >= execution.checkpoint_every_tokens)
        )  # fmt: skip
        # No state at the stopping evaluation: the result is written next, and it removes the state anyway.
        saved = master and due and progress.stop_reason is None
        if saved:
            t_save = time.perf_counter()
            progress.wall_s = wall_offset + t_save
            ckpt.save_state(workdir, spec.key(), lm, optimizer, batches, progress, best_weights, writer)
            progress.checkpoint_s += time.perf_counter() - t_save
        if due:
            evals_since_save, saved_at_s, saved_at_tokens = 0, time.perf_counter(), tokens
        interval_tokens_per_s = steps_since_eval * spec.batch_tokens / max(interval_s, 1e-9)
        metrics = {
            "tokens": tokens,
            "step": progress.step,
            "val_loss": point.val_loss,
            "best_val_loss": progress.best_val_loss,
            "train_loss": train_loss,
            "lr": lr,
            "tokens_per_s": interval_tokens_per_s,
            "eval_s": progress.eval_s,
            "train_s": progress.train_s,
            "evals": len(
                progress.curve
            ),  # the same tokens for every arm of a cell: halving compares at these
        }
        if peak is not None:
            metrics["mfu"] = mfu(interval_tokens_per_s, shape, data.vocab_size, spec.context, peak, world)
        if master:
            log.info("trial %s step %d tokens %d val %.4f", spec.key(), progress.step, tokens, point.val_loss)
        reporter.report(metrics, str(workdir) if saved else None)
        train_loss_sum.zero_()
        steps_since_eval = 0
        t_train = time.perf_counter()
    if writer is not None:
        writer.wait()  # the last state is in place before the result removes it

    # ---- the best step's weights: the test split, the extra sets, best/ ----------------------------------------
    test_loss: float | None = None
    doc_losses: dict[str, dict[str, list[object]]] = {}
    if data.val_docs is not None and progress.best_val_doc_loss:
        doc_losses["val"] = data.val_docs.to_json(progress.best_val_doc_loss)
    if best_weights is not None:
        lm.load_state_dict(best_weights)
        t_eval = time.perf_counter()
        progress.best_extra_val_loss = evaluate_extra()
        if data.test is not None:
            test_loss, test_by_doc = evaluate_by_doc(data.test, data.test_docs)
            if data.test_docs is not None and test_by_doc is not None:
                doc_losses["test"] = data.test_docs.to_json(test_by_doc)
        progress.eval_s += time.perf_counter() - t_eval
        if master:
            t_save = time.perf_counter()
            ckpt.save_best(lm, workdir, spec.to_dict(), tokenizer)
            progress.checkpoint_s += time.perf_counter() - t_save

    # ---- the result -----------------------------------------------------------------------------------------
    tokens_seen = progress.step * spec.batch_tokens
    tokens_per_s = tokens_seen / progress.train_s if progress.train_s > 0 else 0.0
    result = TrialResult(
        n_params=n_params,
        n_params_estimate=estimate_n(shape),
        d_f=len(data.train),
        d_f_chars=data.train_chars,
        best_val_loss=progress.best_val_loss,
        tokens_at_best=progress.tokens_at_best,
        tokens_seen=tokens_seen,
        steps=progress.step,
        flops=flops_per_token(n_params) * tokens_seen,
        stop_reason=progress.stop_reason or "budget",
        wall_s=wall_offset + time.perf_counter(),
        tokens_per_s=tokens_per_s,
        val_tokens_per_char=len(data.val) / data.val_chars if data.val_chars else 0.0,
        curve=progress.curve,
        zero_shot_loss=progress.zero_shot_loss,
        best_extra_val_loss=progress.best_extra_val_loss,
        zero_shot_extra_val_loss=progress.zero_shot_extra_val_loss,
        notes=notes,
        test_loss=test_loss,
        test_tokens_per_char=len(data.test) / data.test_chars
        if data.test is not None and data.test_chars
        else 0.0,
        doc_losses=doc_losses,
        train_s=progress.train_s,
        eval_s=progress.eval_s,
        checkpoint_s=progress.checkpoint_s,
        mfu=mfu(tokens_per_s, shape, data.vocab_size, spec.context, peak, world)
        if peak is not None
        else None,
    )
    if master:
        ckpt.write_result(workdir, result)
    log.info("trial %s stopped (%s) at step %d", spec.key(), result.stop_reason, progress.step)
    return result


def _prune_requested(workdir: Path, master: bool, ddp: bool, device: torch.device) -> bool:
    """Whether the sweep asked this run to stop; rank 0 reads the file and tells the others, so that every
    rank stops at the same evaluation (a rank that saw the file a moment later would wait in a collective)."""
    asked = prune_requested(workdir) if master else False
    if ddp:
        flag = torch.tensor([1.0 if asked else 0.0], device=device)
        dist.broadcast(flag, src=0)
        asked = bool(flag.item())
    return asked
