from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2LMHeadModel

from sweep_engine.data.batches import BatchSource
from sweep_engine.spec import EvalPoint, TrialResult
from sweep_engine.training.checkpoint import (
    RunProgress,
    atomic_write_text,
    load_result,
    load_state,
    restore_state,
    save_best,
    save_state,
    write_result,
)
from sweep_engine.training.model import SIZES, build_model


def _result() -> TrialResult:
    return TrialResult(
        n_params=1,
        n_params_estimate=1,
        d_f=10,
        d_f_chars=20,
        best_val_loss=math.inf,
        tokens_at_best=0,
        tokens_seen=5,
        steps=1,
        flops=30.0,
        stop_reason="diverged",
        wall_s=0.1,
        tokens_per_s=50.0,
        val_tokens_per_char=0.5,
        curve=[EvalPoint(5, 1, math.nan, 1.0, 0.1, {"en": 2.0})],
        notes=["n"],
    )


def test_result_round_trip_and_absence(tmp_path: Path) -> None:
    assert load_result(tmp_path) is None
    (tmp_path / "state.pt").write_bytes(b"x")
    write_result(tmp_path, _result())
    back = load_result(tmp_path)
    assert back is not None and back.curve[0].extra_val_loss == {"en": 2.0} and back.notes == ["n"]
    assert math.isnan(back.curve[0].val_loss) and back.best_val_loss == math.inf  # non-finite values survive
    assert not (tmp_path / "state.pt").exists()  # the result is final: the resumable state goes


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "two"


def test_save_best_replaces_the_previous_best(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a, b = build_model(SIZES["xs"], 32, 8), build_model(SIZES["xs"], 32, 8)
    save_best(a, tmp_path, {"seed": 0})
    save_best(b, tmp_path, {"seed": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path / "best")
    assert torch.equal(
        loaded.state_dict()["transformer.h.0.mlp.c_fc.weight"],
        b.state_dict()["transformer.h.0.mlp.c_fc.weight"],
    )
    assert (tmp_path / "best" / "trial_spec.json").read_text().strip().endswith("}")


def test_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(SIZES["xs"], 32, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(input_ids=torch.zeros(1, 8, dtype=torch.long)).logits.sum().backward()
    opt.step()
    batches = BatchSource(np.arange(100) % 32, 8, 2, seed=0)
    batches.next_batch()
    progress = RunProgress(step=3, curve=[EvalPoint(16, 1, 2.0)], best_val_loss=2.0, wait=1)
    save_state(tmp_path, "key", model, opt, batches, progress)
    torch.manual_seed(1)
    model2 = build_model(SIZES["xs"], 32, 8)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    batches2 = BatchSource(np.arange(100) % 32, 8, 2, seed=0)
    state = load_state(tmp_path)
    assert state is not None
    back = restore_state(state, "key", model2, opt2, batches2)
    assert back == progress
    assert all(
        torch.equal(x, y)
        for x, y in zip(model.state_dict().values(), model2.state_dict().values(), strict=True)
    )
    assert (batches2.next_batch() == batches.next_batch()).all()
