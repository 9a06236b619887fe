"""Several sweeps as one executor run: shared pre-training once, every sweep's ledger and runs complete."""

from __future__ import annotations

from pathlib import Path

from sweep_engine.ledger import read_ledger
from sweep_engine.space import expand, pretrain_trials
from sweep_engine.sweep.driver import SweepDriver
from sweep_engine.sweep.jobs import InlineExecutor, SweepPaths
from sweep_engine.sweep.together import Together, run_together
from sweep_engine.tracking import TRIAL, InMemoryTracker
from tests.tiny_sweep import fake_run, space_dict, write_space


def test_two_sweeps_share_one_pretraining_and_finish_together(tmp_path: Path) -> None:
    storage = tmp_path / "results"
    spaces = [
        write_space(tmp_path / f"{lang}.yaml", space_dict(storage, name=f"tiny-{lang}", languages=(lang,)))
        for lang in ("es", "de")
    ]
    trackers = [InMemoryTracker(), InMemoryTracker()]
    executor = InlineExecutor(fake_run)
    drivers = [SweepDriver(s, executor, t) for s, t in zip(spaces, trackers, strict=True)]
    order: list[str] = []
    real_next = Together.next_job

    def spy(self: Together):  # type: ignore[no-untyped-def]
        job = real_next(self)
        if not isinstance(job, str) and job is not None:
            order.append(job.spec.language + ":" + job.spec.stage)
        return job

    Together.next_job = spy  # type: ignore[method-assign]
    try:
        summaries = run_together(drivers, executor, "together-test")
    finally:
        Together.next_job = real_next  # type: ignore[method-assign]
    assert [s.exit_code for s in summaries] == [0, 0]
    pre = pretrain_trials(spaces[0])[0]
    assert pre.key() == pretrain_trials(spaces[1])[0].key()  # the same English model
    log = SweepPaths.of(spaces[0]).workdir(pre) / "trainings.log"
    assert len(log.read_text().splitlines()) == 1  # trained once, for both sweeps
    assert order[0] == "en:pretrain" and order.count("en:pretrain") == 1
    transfer = [o for o in order if o.endswith("transfer")]
    assert transfer[:2] in (["es:transfer", "de:transfer"], ["de:transfer", "es:transfer"])  # taking turns
    for space, tracker, summary in zip(spaces, trackers, summaries, strict=True):
        ledger = read_ledger(space.results_dir / "trials.parquet")
        assert sorted(ledger["trial_key"]) == sorted(t.key() for t in expand(space))
        assert {r.tags["trial_key"] for r in tracker.runs(TRIAL)} == {t.key() for t in expand(space)}
        pre_stage = next(s for s in summary.stages if s.stage == "pretrain")
        assert pre_stage.finished == 1
    assert next(s for s in summaries[1].stages if s.stage == "pretrain").reused == 1
    assert next(s for s in summaries[0].stages if s.stage == "pretrain").reused == 0
