"""Results made before trial keys had a written rule are still found by a relaunch.

tests/fixtures/pre_key_rule/ holds what the code of commit 2c1c91b left behind (see its make.py): a ledger, the
checkpoints of four finished trials and of one interrupted after two evaluations, an MLflow store with a run
for each, and a `best/` directory saved by that code. Today's code must train nothing twice, open no second
MLflow run, resume the interrupted trial where it stopped, and fine-tune from that `best/` without
re-initialising its embeddings.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from sweep_engine.config import Space, load_space
from sweep_engine.ledger import read_ledger
from sweep_engine.space import expand
from sweep_engine.spec import FINISHED, KILLED, TrialSpec
from sweep_engine.sweep.driver import SweepDriver
from sweep_engine.sweep.jobs import InlineExecutor, SweepPaths
from sweep_engine.tracking import TRIAL, MlflowTracker
from tests.tiny_sweep import fake_run

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pre_key_rule"
OLD = [t["key"] for t in json.loads((FIXTURE / "keys.json").read_text())["trials"]]


@pytest.fixture
def old_sweep(tmp_path: Path) -> Space:
    """A copy of the fixture, its space pointed at the copy's storage and its MLflow store unpacked."""
    shutil.copytree(FIXTURE / "results", tmp_path / "results")
    with (
        gzip.open(tmp_path / "results" / "mlflow.db.gz") as src,
        open(tmp_path / "results" / "mlflow.db", "wb") as dst,
    ):
        shutil.copyfileobj(src, dst)
    text = (FIXTURE / "tiny.yaml").read_text().replace("STORAGE", str(tmp_path / "results"))
    (tmp_path / "tiny.yaml").write_text(text)
    return load_space(tmp_path / "tiny.yaml")


def trainings(space: Space, key: str) -> int:
    log = SweepPaths.of(space).checkpoints_dir / key / "trainings.log"
    return len(log.read_text().splitlines())


def test_todays_code_computes_the_keys_it_wrote(old_sweep: Space) -> None:
    assert [t.key() for t in expand(old_sweep)] == OLD
    ledger = read_ledger(old_sweep.results_dir / "trials.parquet")
    assert sorted(ledger.trial_key) == sorted(OLD[:-1])  # the interrupted trial has no row yet
    # The specs it recorded (corpus kinds in their old words) read back as the same trials.
    for key, spec in zip(ledger.trial_key, ledger.spec, strict=True):
        assert TrialSpec.from_dict(json.loads(spec)).key() == key


def test_relaunch_finds_every_result_checkpoint_and_run(old_sweep: Space) -> None:
    tracker = MlflowTracker(old_sweep.tracking_uri, old_sweep.experiment_name)
    before = {r.tags["trial_key"]: r for r in tracker.runs(TRIAL)}
    assert set(before) == set(OLD) and before[OLD[-1]].status == KILLED
    summary = SweepDriver(old_sweep, InlineExecutor(fake_run), tracker).run()
    assert summary.exit_code == 0
    assert [s.reused for s in summary.stages] == [1, 3]  # only the interrupted trial ran
    assert [trainings(old_sweep, k) for k in OLD] == [1, 1, 1, 1, 2]  # one start each; the last resumed
    after = {r.tags["trial_key"]: r for r in tracker.runs(TRIAL)}
    assert {k: r.run_id for k, r in after.items()} == {k: r.run_id for k, r in before.items()}
    assert {r.status for r in after.values()} == {FINISHED}
    # The resumed run continued its curve: the two evaluations before Ctrl-C are not logged twice.
    assert [s for s, _ in tracker.metric_history(after[OLD[-1]].run_id, "val_loss")] == [
        1000,
        2000,
        3000,
        4000,
    ]
    ledger = read_ledger(old_sweep.results_dir / "trials.parquet")
    assert sorted(ledger.trial_key) == sorted(OLD) and set(ledger.status) == {FINISHED}


def test_finetuning_from_an_old_best_keeps_its_embeddings(old_sweep: Space, tmp_path: Path) -> None:
    from sweep_engine.training.model import build_model, load_pretrained

    pre, finetune = expand(old_sweep)[0], expand(old_sweep)[2]
    assert finetune.init_from == pre.key()
    old_best = SweepPaths.of(old_sweep).checkpoints_dir / pre.key() / "best"
    best = tmp_path / "best"
    build_model(pre.model, 512, pre.context).save_pretrained(best)  # the fixture keeps no weights
    shutil.copy(old_best / "trial_spec.json", best / "trial_spec.json")
    _, notes = load_pretrained(best, pre.model, 512, finetune.context, finetune.data.tokenizer)
    assert notes == []


def test_data_caches_keep_their_names() -> None:
    """Cache names hash the corpus fingerprint, which keeps the corpus kinds' first words (2c1c91b's values)."""
    from sweep_engine.data.corpora import fingerprint
    from sweep_engine.data.tokenizer import tokenizer_key
    from sweep_engine.spec import CorpusSpec, TokenizerSpec, content_hash

    bible = CorpusSpec("builtin", "en", ("web",), "nt")
    assert tokenizer_key(TokenizerSpec(kind="bpe", vocab_size=512, corpus=bible)) == "0df82e74776b"
    assert content_hash(fingerprint(CorpusSpec("hf", "de", name="x/y", config="c"))) == "2e37846247fd"
