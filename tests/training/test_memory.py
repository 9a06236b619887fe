"""What fits a device at once (training/memory.py): the plan from a memory budget, no GPU needed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sweep_engine.shapes import SIZES
from sweep_engine.training.memory import plan_memory, smaller_micro

GB = 2**30
CUDA = torch.device("cuda", 0)  # only its type is read: plans are computed for a budget


@pytest.mark.parametrize(
    ("gb", "micro", "chunked"),
    # H100-80GB, A100-40GB, A10G, half an A10G (at 95% of each): whole logits while they leave >= 8 windows.
    [(76, 64, False), (38, 32, False), (22.8, 16, False), (11.4, 16, True)],
)
def test_the_124m_micro_batch_at_the_paper_batch_fits_each_gpu(gb: float, micro: int, chunked: bool) -> None:
    plan = plan_memory(SIZES["124M"], 50257, 1024, 512, 512, CUDA, budget=int(gb * GB))
    assert plan.micro_windows == micro and (plan.logit_chunk_rows is not None) == chunked
    assert 512 % plan.micro_windows == 0 and 1 <= plan.eval_windows <= 256


def test_small_models_keep_the_spec_micro_batch_and_a_halving_is_a_divisor() -> None:
    plan = plan_memory(SIZES["xs"], 64, 16, 16, 4, torch.device("cpu"), budget=8 * GB)
    assert (plan.micro_windows, plan.logit_chunk_rows) == (4, None)  # never above the spec's
    assert smaller_micro(24, 24) == 12 and smaller_micro(24, 8) == 4 and smaller_micro(10, 5) == 2
    assert smaller_micro(16, 1) is None


def test_the_cpu_budget_honours_the_process_memory_limit() -> None:
    code = (
        "import resource; from sweep_engine.training.memory import free_bytes, _status_kib; import torch;"
        "used = _status_kib('VmData') * 1024;"
        "resource.setrlimit(resource.RLIMIT_DATA, (used + 300 * 2**20, resource.RLIM_INFINITY));"
        "print(free_bytes(torch.device('cpu')) // 2**20)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 250 <= int(out) <= 300
