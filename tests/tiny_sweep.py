"""A tiny two-stage sweep for tests: its space, a stand-in training function, shared caches and stores."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from sweep_engine.config import Space, load_space
from sweep_engine.spec import EvalPoint, StopReason, TrialResult, TrialSpec, prune_requested, read_result


def space_dict(
    storage: Path, name: str = "tiny", languages: tuple[str, ...] = ("es", "de"), **over: Any
) -> dict:
    """A tiny two-stage space on the built-in Bible: one xs model, two D_F, both inits (9 trials for 2 langs)."""
    nt = {"builtin": "bible", "translations": ["web"], "part": "nt"}
    d: dict[str, Any] = {
        "name": name,
        "storage": str(storage),
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "max_retries": 2},
        "tokenizer": {"kind": "bpe", "vocab_size": 512, "corpus": nt},
        "pretrain": {
            "language": "en",
            "corpus": nt,
            "sizes": ["xs"],
            "context": 32,
            "batch_tokens": 1024,
            "lr": 3e-3,
            "schedule": {"kind": "cosine", "warmup_steps": 5, "decay_floor": 0.1},
            "stopping": {"eval_interval_tokens": 8192, "token_cap": 32768, "patience": 3},
            "validation": {"size": 50, "unit": "docs"},
        },
        "transfer": {
            "languages": {lang: {"corpus": {"builtin": "bible", "part": "nt"}} for lang in languages},
            "d_f": [1000, 4000],
            "init": ["scratch", "finetune"],
            "lr": [3e-3],
            "schedules": [{"kind": "cosine", "warmup_steps": 2, "decay_floor": 0.1}],
            "context": 32,
            "batch_tokens": 512,
            "stopping": {"eval_interval_tokens": 4096, "token_cap": 16384, "patience": 2},
            "validation": {"size": 50, "unit": "docs"},
        },
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(d.get(key), dict):
            d[key] = {**d[key], **value}
        else:
            d[key] = value
    return d


def write_space(path: Path, data: dict, cache: Path | None = None, mlflow_db: Path | None = None) -> Space:
    """Write the YAML and load it; `cache` (a shared token cache) is linked in as the storage's cache/, and
    `mlflow_db` (an empty store) copied in as its mlflow.db."""
    path.write_text(yaml.safe_dump(data))
    storage = Path(data["storage"])
    if cache is not None:
        storage.mkdir(parents=True, exist_ok=True)
        if not (storage / "cache").exists():
            (storage / "cache").symlink_to(cache, target_is_directory=True)
    if mlflow_db is not None and not (storage / "mlflow.db").exists():
        storage.mkdir(parents=True, exist_ok=True)
        shutil.copy(mlflow_db, storage / "mlflow.db")
    return load_space(path)


def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, migrated once per session (a new store takes seconds of migrations)."""
    path = tmp_path_factory.getbasetemp() / "mlflow-template.db"
    if not path.exists():
        from sweep_engine.tracking import MlflowTracker

        MlflowTracker(f"sqlite:///{path}", "Default")
    return path


def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One token cache per test session, shared by the test modules (tokenize the Bible once)."""
    path = tmp_path_factory.getbasetemp() / "sweep-token-cache"
    path.mkdir(exist_ok=True)
    return path


def fake_run(
    spec: TrialSpec, reporter: Any, *, workdir: Path, init_dir: Path | None = None, **_: Any
) -> TrialResult:
    """A stand-in for training.loop.run_trial: 4 evaluations, a state file to resume from, result.json at the end.

    The loss falls with tokens and rises with |log10(lr / 1e-3)| (so a search has an optimum to find). Like
    the real loop, it stops as `pruned` after the evaluation at which the sweep has asked it to (PRUNE file).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    done = read_result(workdir)
    if done is not None:
        return done
    if spec.init == "finetune":
        assert init_dir is not None and (init_dir.parent / "result.json").exists(), (
            "fine-tuned before its base"
        )
    with (workdir / "trainings.log").open("a") as f:
        f.write("start\n")
    state = workdir / "state.json"
    curve = [EvalPoint(**p) for p in json.loads(state.read_text())] if state.exists() else []
    base = 5.0 + abs(math.log10(spec.lr / 1e-3))
    stop: StopReason = "budget"
    for tokens in range(len(curve) * 1000 + 1000, 4001, 1000):
        val = base - tokens / 4000
        curve.append(EvalPoint(tokens, tokens // 500, val, val + 0.1, spec.lr))
        state.write_text(json.dumps([vars(p) for p in curve]))
        (workdir / "best").mkdir(exist_ok=True)
        reporter.report(
            {"tokens": tokens, "val_loss": val, "best_val_loss": val, "train_loss": val + 0.1, "lr": spec.lr,
             "tokens_per_s": 1e4, "evals": len(curve)}
        )  # fmt: skip
        if prune_requested(workdir):
            stop = "pruned"
            break
    seen = curve[-1].tokens
    result = TrialResult(
        n_params=1000, n_params_estimate=1000, d_f=spec.data.d_f or 10**6, d_f_chars=3000,
        best_val_loss=curve[-1].val_loss, tokens_at_best=seen, tokens_seen=seen, steps=seen // 500,
        flops=6 * 1000 * float(seen), stop_reason=stop, wall_s=0.01, tokens_per_s=1e4, val_tokens_per_char=0.3,
        curve=curve, zero_shot_loss=6.0 if spec.init == "finetune" else None,
    )  # fmt: skip
    (workdir / "result.json").write_text(json.dumps(result.to_dict()))
    state.unlink()
    return result
