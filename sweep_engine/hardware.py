"""Accelerators and the FLOPs of a training step, without torch (plan and validate stay light).

FLOPs per trained token follow nanoGPT's `estimate_mfu` (after PaLM, appendix B): 6 per parameter that a token
passes through, counting the tied LM head as the d_model x vocab matmul it is, plus attention's
12 n_layer context d_model (the QK^T and AV matmuls, forward and backward). Kaplan's C = 6 N D (N
non-embedding) stays the scaling-law compute of the ledger's `flops` column; this count is what the hardware
does, for wall time (plan) and model-FLOPs utilisation (MFU) per trial.

Peak FLOP/s are dense bf16 tensor-core figures from NVIDIA's data sheets (fp16 where the chip has no bf16).
"""

from __future__ import annotations

from sweep_engine.shapes import non_embedding_params
from sweep_engine.spec import ModelShape

# Dense (not 2:4 sparse) bf16 tensor FLOP/s per GPU. Matched against torch.cuda.get_device_name() by the first
# key it contains, so the more specific names come first.
PEAK_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM5 (H100 whitepaper, table 3)
    "H200": 989e12,  # the H100 SXM's compute with more memory
    "A100": 312e12,
    "L40S": 362e12,
    "A40": 149.7e12,
    "A10G": 125e12,  # AWS g5: NVIDIA publishes no A10G sheet; the A10's figure is assumed
    "A10": 125e12,
    "L4": 121e12,
    "V100": 125e12,  # fp16 (no bf16)
    "T4": 65e12,  # fp16 (no bf16)
}


def peak_flops(device_name: str | None) -> float | None:
    """The peak FLOP/s of a GPU named like torch.cuda.get_device_name() or Ray's accelerator type ("A100",
    "NVIDIA A100-SXM4-80GB"); None when it is not in the table (a CPU, an unknown GPU)."""
    if not device_name:
        return None
    name = device_name.upper()
    for key, flops in PEAK_FLOPS.items():
        if key.upper() in name:
            return flops
    return None


def train_flops_per_token(shape: ModelShape, vocab: int, context: int) -> float:
    """FLOPs of training on one token (forward and backward), see the module docstring."""
    n = non_embedding_params(shape) + vocab * shape.d_model
    return 6.0 * n + 12.0 * shape.n_layer * context * shape.d_model


def mfu(
    tokens_per_s: float, shape: ModelShape, vocab: int, context: int, peak: float, devices: int = 1
) -> float:
    """Model-FLOPs utilisation: FLOP/s achieved on `tokens_per_s` over the peak of `devices` GPUs."""
    return tokens_per_s * train_flops_per_token(shape, vocab, context) / (peak * max(1, devices))
