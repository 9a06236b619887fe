#!/usr/bin/env bash
# The GPU check of the paper-scale path, one script, under 8 minutes on a GPU machine: the 124M model at the
# paper batch (512 x 1024 tokens) for 100 steps through run_trial, with tokens/s, MFU and peak memory, then a
# 2-GPU DDP run if two GPUs are visible. Without CUDA (or with --dry-run) it runs the same path scaled down on
# the CPU. Extra arguments go to benchmarks/gpu_check.py (--steps N, --every N). docs/gpu.md has its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec timeout 480 "$PYTHON" benchmarks/gpu_check.py "$@"
