"""Preparing and training on a corpus several times larger than a memory limit stays within the limit.

Runs benchmarks/memory_bound.py --ci: each size in a fresh process whose private memory is capped
(RLIMIT_DATA) at what it uses after its imports plus 96 MiB, and whose peak RSS is measured from there. The
token cache is written from synthetic ids through the writer the tokenizer feeds (tokenizing 64M tokens takes
minutes); the held-out sets, the training sequence, loading and training are the real path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_bound.py"


@pytest.mark.slow
def test_memory_stays_bounded_on_a_corpus_larger_than_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--ci"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    with capsys.disabled():
        print()
        for r in rows:
            print(
                f"memory: {r['tokens']:,} tokens (token file {r['token_file_mb']} MB, {r['as_int64_mb']} MB as "
                f"int64), limit +{r['limit_mb']} MiB: peak RSS {r['peak_rss_mb']} MB, "
                f"{r['peak_over_baseline_mb']} MB over the baseline, {r['trained_steps']} steps trained"
            )
    small, large = rows
    assert large["tokens"] > 7 * small["tokens"]
    # The corpus is several times the limit, the process's peak stays under it, and 8x the corpus adds
    # little (the epoch's window index: 8 bytes per context-64 window, ~1/16 of the token file's growth).
    assert large["as_int64_mb"] > 5 * large["limit_mb"] and large["token_file_mb"] > large["limit_mb"]
    assert large["peak_over_baseline_mb"] < large["limit_mb"]
    growth = large["peak_over_baseline_mb"] - small["peak_over_baseline_mb"]
    assert growth < 0.25 * (large["token_file_mb"] - small["token_file_mb"])
    assert large["trained_steps"] == 20
