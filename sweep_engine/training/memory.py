"""How much of a model's work fits the device at once: the evaluation batch, the training micro-batch, and
whether the cross-entropy must be computed in chunks.

The estimates are deliberately simple, per window of `context` tokens, in bytes:

- evaluation (no gradients): the activations alive inside one block, ~14 context x d_model values (residual,
  layer norm, q/k/v, attention output, the 4 d_model MLP input and output), plus the attention scores
  (n_head x context^2, twice) where attention is not fused (the CPU's SDPA); the logits are computed in chunks
  of rows (`logit_chunk_rows`), never for a whole batch;
- training: the activations saved for the backward pass, ~34 bytes per context x d_model per layer in 16-bit
  (Korthikanti et al. 2022, with fused attention; twice that in fp32), plus the logits, ~10 bytes per
  context x vocab entry (bf16 logits, their fp32 copy and its gradient) unless the cross-entropy is chunked;
- the model state: 16 bytes per parameter (fp32 weights, gradients and AdamW's two moments).

The budget is what the device has free (CUDA: free memory plus what PyTorch's allocator holds unused; CPU: the
available RAM), of which a fraction is used, so the estimates need only be right within a factor that the
fraction absorbs. A micro-batch that still does not fit raises an out-of-memory error, which run_trial
retries once with half the micro-batch (see loop.py).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

import torch

from sweep_engine.shapes import n_head, non_embedding_params
from sweep_engine.spec import ModelShape

EVAL_FRACTION = 0.25  # of the free memory, for one evaluation batch (training state stays resident meanwhile)
TRAIN_FRACTION = 0.8  # of the device's free memory at start, for the model state and one micro-batch
LOGIT_CHUNK_BYTES = 256 * 2**20  # one chunk of logits and its softmax in fp32
MAX_EVAL_WINDOWS = 256  # more windows per forward buys nothing once the matmuls are large
MIN_MICRO_WINDOWS = 8  # below this many windows per forward, chunk the cross-entropy to fit more
CPU_EVAL_BYTES = 2**30  # the CPU evaluates in batches of at most 1 GiB: larger ones only thrash its caches


@dataclass(frozen=True)
class MemoryPlan:
    """What one rank feeds through the model at once."""

    micro_windows: int  # training windows per forward/backward (the batch is accumulated over the rest)
    logit_chunk_rows: int | None  # chunked cross-entropy in training: rows of logits at a time (None: whole)
    eval_windows: int  # evaluation windows per forward

    def describe(self, accum: int) -> str:
        ce = (
            f"chunked cross-entropy ({self.logit_chunk_rows} rows)"
            if self.logit_chunk_rows
            else "whole logits"
        )
        return f"micro-batch {self.micro_windows} windows x {accum} accumulation steps, {ce}, eval batch " + (
            f"{self.eval_windows} windows"
        )


def free_bytes(device: torch.device) -> int:
    """Memory this process can still use on `device`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + unused)
    try:
        free = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):  # not a POSIX system with these names: assume a modest machine
        free = 8 * 2**30
    return min(free, _headroom_under_limits())


def _headroom_under_limits() -> int:
    """What this process may still allocate under its own limits: RLIMIT_DATA (private memory) and a cgroup
    v2 memory.max (a container's), which the machine's free memory does not show."""
    room = 1 << 62
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    if soft != resource.RLIM_INFINITY:
        room = min(room, soft - _status_kib("VmData") * 1024)
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            room = min(room, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass  # no cgroup v2 memory controller here
    return max(0, room)


def _status_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def device_budget(device: torch.device, share: float = 1.0) -> int:
    """Bytes a trial may plan with: what is free, and on a GPU shared by fractional trials (gpus_per_trial
    0.5: two trials per GPU) no more than its share of the whole, since its neighbour may not have started."""
    free = free_bytes(device)
    if device.type == "cuda" and 0 < share < 1:
        total = torch.cuda.get_device_properties(device).total_memory
        return int(min(free, share * total))
    return free


def logit_chunk_rows(vocab: int) -> int:
    """Rows of logits (positions) per chunk: LOGIT_CHUNK_BYTES of fp32 logits, their softmax and gradient."""
    return max(1, LOGIT_CHUNK_BYTES // (12 * vocab))


def eval_bytes_per_window(shape: ModelShape, context: int, fused_attention: bool) -> int:
    """Peak bytes one evaluation window adds (see the module docstring), at 4 bytes per value."""
    values = 14 * context * shape.d_model
    if not fused_attention:
        values += 2 * n_head(shape.d_model) * context * context
    return 4 * values


def eval_windows(shape: ModelShape, context: int, device: torch.device, budget: int | None = None) -> int:
    """Evaluation windows per forward pass for this device's memory (at least 1, at most MAX_EVAL_WINDOWS)."""
    budget = free_bytes(device) if budget is None else budget
    usable = EVAL_FRACTION * budget - LOGIT_CHUNK_BYTES
    if device.type != "cuda":
        usable = min(usable, CPU_EVAL_BYTES)
    per_window = eval_bytes_per_window(shape, context, fused_attention=device.type == "cuda")
    return int(max(1, min(MAX_EVAL_WINDOWS, usable // per_window)))


def train_bytes_per_window(
    shape: ModelShape, context: int, vocab: int, chunked: bool, bytes_per_value: int
) -> int:
    """Bytes one training window keeps until its backward pass (see the module docstring)."""
    activations = 34 * shape.n_layer * context * shape.d_model * bytes_per_value // 2
    logits = 0 if chunked else 10 * context * vocab
    return activations + logits


def state_bytes(shape: ModelShape, vocab: int, context: int) -> int:
    """Weights, gradients and AdamW moments: 16 bytes per parameter (embeddings included)."""
    params = non_embedding_params(shape) + (vocab + context) * shape.d_model
    return 16 * params


def plan_memory(
    shape: ModelShape,
    vocab: int,
    context: int,
    rank_windows: int,
    max_micro_windows: int,
    device: torch.device,
    budget: int | None = None,
) -> MemoryPlan:
    """The largest micro-batch (a divisor of this rank's windows, at most the spec's) whose training memory
    fits the device with whole logits; when that is fewer than MIN_MICRO_WINDOWS windows (or than the spec's
    micro-batch, if smaller), the largest that fits with chunked cross-entropy instead (its recomputed LM head
    costs ~9% more FLOPs at GPT-2's vocabulary, worth it only when whole logits would starve the batch). And
    the evaluation batch.

    Args:
        shape, vocab, context: The model.
        rank_windows: Windows of one optimizer step on this rank.
        max_micro_windows: The spec's micro-batch (its `micro_batch_tokens` / context), an upper bound.
        device: The device.
        budget: Bytes available (default: what the device has free now).
    """
    budget = free_bytes(device) if budget is None else budget
    usable = TRAIN_FRACTION * budget - state_bytes(shape, vocab, context)
    bytes_per_value = 2 if device.type == "cuda" else 4  # bf16 autocast on GPUs
    divisors = [m for m in range(1, max_micro_windows + 1) if rank_windows % m == 0]

    def largest(chunked: bool) -> int:
        per_window = train_bytes_per_window(shape, context, vocab, chunked, bytes_per_value)
        return max([m for m in divisors if m * per_window <= usable], default=1)

    whole = largest(chunked=False)
    if whole >= min(MIN_MICRO_WINDOWS, max(divisors)):
        return MemoryPlan(whole, None, eval_windows(shape, context, device, budget))
    return MemoryPlan(
        largest(chunked=True), logit_chunk_rows(vocab), eval_windows(shape, context, device, budget)
    )


def smaller_micro(rank_windows: int, micro: int) -> int | None:
    """The largest divisor of `rank_windows` at most half of `micro` (None when micro is already 1)."""
    if micro <= 1:
        return None
    return max(m for m in range(1, micro // 2 + 1) if rank_windows % m == 0)
