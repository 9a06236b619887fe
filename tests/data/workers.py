"""Functions that test_cache.py runs in separate processes (importable by a spawned child)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sweep_engine.data.cache import build_once


def slow_build(entry: str, log: str, start_at: float) -> str:
    """build_once, called at `start_at` (so two processes race), with a builder that takes a while and
    records each time it runs."""

    def build(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write(f"build {os.getpid()}\n")
        time.sleep(0.5)
        tmp.write_text(f"built by {os.getpid()}")

    time.sleep(max(0.0, start_at - time.time()))
    with open(log, "a") as f:
        f.write(f"call {os.getpid()} entry_exists={Path(entry).exists()}\n")
    return build_once(Path(entry), build).read_text()


def trial_data(data_pickle: bytes, cache_dir: str, start_at: float) -> bytes:
    """load_trial_data in a child process, called at `start_at`; returns the arrays' bytes."""
    import pickle

    from sweep_engine.data import load_trial_data

    time.sleep(max(0.0, start_at - time.time()))
    td = load_trial_data(pickle.loads(data_pickle), Path(cache_dir))
    return td.train.tobytes() + b"|" + td.val.tobytes()
