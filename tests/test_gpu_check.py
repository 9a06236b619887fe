"""benchmarks/gpu_check.sh runs anywhere: without CUDA it is the same path scaled down on the CPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
def test_gpu_check_dry_run_reports_throughput_memory_and_ddp() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--steps", "12", "--every", "4"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    for expected in ("dry run", "micro-batch 16 windows", "tokens/s:", "MFU: n/a", "peak memory:",
                     "eval s / train s:", "DDP 2 ranks (gloo): ranks agree True"):  # fmt: skip
        assert expected in out, (expected, out)
