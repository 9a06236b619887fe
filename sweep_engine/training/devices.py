"""Which device a trial trains on, chosen without knowing who launched it (the loop stays Ray-free).

A GPU trial (resources.gpus > 0) trains on the device its launcher hands in (`device_fn`: Ray Train's
`ray.train.torch.get_device()` for a Train worker, see sweep/ray_train.py), else on cuda:LOCAL_RANK (torchrun;
a one-worker Ray Tune trial sees only its own GPU, so that is cuda:0). It never falls back to the CPU: a GPU
trial on a process without CUDA (a CPU-only torch, a node without GPUs) is a configuration error, reported as
such, because a silent CPU run of a GPU trial takes days and looks like a hang.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from sweep_engine.errors import ConfigError
from sweep_engine.hardware import peak_flops

DeviceFn = Callable[[], torch.device]


def select_device(gpus: float, device_fn: DeviceFn | None = None) -> torch.device:
    """The device of a trial asking for `gpus` GPUs per worker (0: the CPU), made current when it is a GPU.

    Raises:
        ConfigError: `gpus` > 0 but this process sees no CUDA device, or `device_fn` gives a non-CUDA one.
    """
    if gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"resources.gpus_per_trial={gpus:g} must run on a CUDA device, but this process sees none "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); a GPU trial never falls back to "
            "the CPU: install a CUDA torch on the GPU nodes, or set gpus_per_trial: 0"
        )
    if device_fn is not None:
        device = torch.device(device_fn())
    else:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    if device.type != "cuda":
        raise ConfigError(f"a GPU trial must train on a CUDA device, but its launcher gave {device}")
    torch.cuda.set_device(device)
    return device


def device_peak_flops(device: torch.device, accelerator_type: str | None = None) -> float | None:
    """Peak FLOP/s of the device (hardware.PEAK_FLOPS), from its CUDA name or the space's accelerator type."""
    if device.type != "cuda":
        return None
    return peak_flops(torch.cuda.get_device_name(device)) or peak_flops(accelerator_type)
