"""The results ledger: one row per ended trial, every documented column, atomic rewrites."""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import replace
from pathlib import Path

from sweep_engine.ledger import COLUMNS, Ledger, read_ledger, trial_row
from sweep_engine.space import transfer_trials
from sweep_engine.spec import FAILED, FINISHED, EvalPoint, TrialResult
from tests.tiny_sweep import space_dict, write_space

REPO = Path(__file__).resolve().parent.parent


def result(loss: float = 3.0) -> TrialResult:
    return TrialResult(
        n_params=1234, n_params_estimate=1200, d_f=1000, d_f_chars=3100, best_val_loss=loss, tokens_at_best=2048,
        tokens_seen=4096, steps=8, flops=6 * 1234 * 4096.0, stop_reason="overfit", wall_s=1.5, tokens_per_s=2730.0,
        val_tokens_per_char=0.32, curve=[EvalPoint(2048, 4, loss, 3.2, 1e-3, {"en": 4.0})], zero_shot_loss=6.1,
        best_extra_val_loss={"en": 4.0}, zero_shot_extra_val_loss={"en": 3.5}, notes=["reinit_embeddings"],
    )  # fmt: skip


def specs(tmp_path: Path) -> list:
    return transfer_trials(write_space(tmp_path / "s.yaml", space_dict(tmp_path / "r")))


def test_finished_row_flattens_spec_and_result(tmp_path: Path) -> None:
    spec = specs(tmp_path)[0]
    row = trial_row(spec, "sk", status=FINISHED, result=result())
    assert set(COLUMNS) <= set(row)
    assert (row["trial_key"], row["sweep_key"], row["language"], row["d_model"]) == (
        spec.key(),
        "sk",
        spec.language,
        64,
    )
    assert row["best_val_bpc"] == 3.0 * 0.32 / math.log(2)
    assert row["extra_val_loss_en"] == 4.0 and row["zero_shot_extra_val_loss_en"] == 3.5
    assert json.loads(row["curve"])[0]["extra_val_loss"] == {"en": 4.0}
    assert json.loads(row["spec"])["lr"] == spec.lr and row["failure_reason"] == ""
    # Results recorded before evaluation was timed: NaN, not a ratio of zeros.
    assert math.isnan(row["eval_per_train"]) and math.isnan(row["mfu"])
    timed = trial_row(
        spec, "sk", status=FINISHED, result=replace(result(), train_s=10.0, eval_s=2.5, mfu=0.41)
    )
    assert (timed["train_s"], timed["eval_s"], timed["eval_per_train"], timed["mfu"]) == (
        10.0,
        2.5,
        0.25,
        0.41,
    )


def test_failed_row_has_reason_and_nan_quantities(tmp_path: Path) -> None:
    spec = specs(tmp_path)[0]
    row = trial_row(spec, "sk", status=FAILED, failure_reason="oom", error="CUDA out of memory")
    assert (row["status"], row["failure_reason"], row["error"]) == (FAILED, "oom", "CUDA out of memory")
    assert math.isnan(row["best_val_loss"]) and row["d_f"] == spec.data.d_f and row["stop_reason"] == ""


def test_one_row_per_trial_atomic_and_readable(tmp_path: Path) -> None:
    ss = specs(tmp_path)
    path = tmp_path / "sweep" / "trials.parquet"
    assert read_ledger(path).empty and list(read_ledger(path).columns) == COLUMNS
    ledger = Ledger(path)
    ledger.upsert(trial_row(ss[0], "sk", status=FAILED, failure_reason="crash", error="boom"))
    ledger.upsert(trial_row(ss[1], "sk", status=FINISHED, result=result()))
    ledger.upsert(trial_row(ss[0], "sk", status=FINISHED, result=result(2.0)))  # retried later: replaced
    frame = read_ledger(path)
    assert len(frame) == 2 and frame.trial_key.is_unique and set(frame.status) == {FINISHED}
    assert frame.columns.get_loc("extra_val_loss_en") == COLUMNS.index("zero_shot_loss") + 1
    assert [p.name for p in path.parent.iterdir()] == ["trials.parquet"]  # no temporary file left
    reopened = Ledger(path)
    assert len(reopened) == 2 and reopened.status(ss[0].key()) == FINISHED and ss[2].key() not in reopened


def test_readers_never_see_half_a_file(tmp_path: Path) -> None:
    ss = specs(tmp_path)
    path = tmp_path / "trials.parquet"
    ledger = Ledger(path)
    ledger.upsert(trial_row(ss[0], "sk", status=FINISHED, result=result()))
    stop, errors = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                assert len(read_ledger(path)) >= 1
            except Exception as exc:  # a torn write would show up here
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(30):
        ledger.upsert(trial_row(ss[i % len(ss)], "sk", status=FINISHED, result=result(float(i))))
    stop.set()
    reader.join()
    assert not errors


def test_docs_list_every_column() -> None:
    doc = (REPO / "docs" / "ledger.md").read_text()
    documented = set()
    for cell in re.findall(r"^\| ([^|]+) \|", doc, flags=re.M):
        documented |= {c.strip() for c in cell.split(",")}
    assert set(COLUMNS) <= documented, set(COLUMNS) - documented


def test_mlflow_gets_the_evaluation_cost_and_mfu_of_a_trial() -> None:
    from sweep_engine.sweep.record import final_metrics

    untimed = final_metrics(result())
    assert "eval_per_train" not in untimed and "mfu" not in untimed  # None and 0/0 are not logged
    timed = final_metrics(replace(result(), train_s=8.0, eval_s=2.0, checkpoint_s=0.5, mfu=0.38))
    assert timed["eval_per_train"] == 0.25 and timed["mfu"] == 0.38 and timed["checkpoint_s"] == 0.5
