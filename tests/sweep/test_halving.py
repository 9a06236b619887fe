"""Successive halving between a cell's LR/schedule arms, and later seeds that follow the winner."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep_engine.config import Space
from sweep_engine.ledger import read_ledger
from sweep_engine.space import cells, count_trials
from sweep_engine.sweep import halving
from sweep_engine.sweep.driver import SweepDriver
from sweep_engine.sweep.jobs import InlineExecutor
from sweep_engine.tracking import InMemoryTracker
from tests.tiny_sweep import fake_run, space_dict, write_space

LRS = [1e-3, 3e-3, 1e-2]  # fake_run's loss grows with |log10(lr / 1e-3)|: 1e-3 wins every cell


@pytest.fixture
def space(tmp_path: Path) -> Space:
    d = space_dict(tmp_path / "results", languages=("de",))
    d["transfer"] = {**d["transfer"], "lr": LRS, "seeds": [0, 1], "seeds_by_d_f": {1000: [0, 1, 2]}}
    d["search"] = {"kind": "grid", "halving": {"eta": 2, "first_rung": 1}}
    return write_space(tmp_path / "tiny.yaml", d)


def _halving(keys: list[str], eta: int = 2, first_rung: int = 1) -> halving.Halving:
    h = halving.Halving({}, eta, first_rung)
    cell = ("de", "xs", 1000, "scratch")
    h.arms[cell] = {k: halving._Arm(k) for k in keys}  # type: ignore[index]
    h.cell_of.update({k: cell for k in keys})  # type: ignore[misc]
    h.arm_config.update({k: (float(i), "cosine", 0, 0.1) for i, k in enumerate(keys)})
    return h


def test_the_worse_half_stops_at_matched_evaluations() -> None:
    h = _halving(["a", "b", "c", "d"])
    assert h.report("a", 1, 5.0) == []  # alone at the rung: nothing to compare with
    assert h.report("b", 1, 4.0) == ["a"]  # 2 at rung 1: keep the best ceil(2 / 2) = 1
    assert h.report("c", 1, 4.5) == []  # b, c, a: keep 2 (a was asked already)
    assert h.report("d", 1, 3.0) == ["c"]  # d, b, c, a: keep 2
    assert h.report("b", 2, 3.9) == []  # rung 2 (1 x eta): b alone there
    assert h.report("d", 2, 2.0) == ["b"]  # d beats b at matched evaluations


def test_an_arm_that_ended_by_itself_competes_with_its_final_best() -> None:
    h = _halving(["a", "b"], first_rung=2)
    h.report("a", 1, 4.0)
    assert h.ended("a", 3.5) == []  # overfit after one evaluation, with best 3.5
    assert h.report("b", 1, 4.2) == []  # not a rung
    assert h.report("b", 2, 3.6) == ["b"]  # rung 2: a takes part with its final 3.5, and wins
    assert h.settled(next(iter(h.arms))) is False  # b still has to end
    h.ended("b", 3.6, pruned=True)
    assert h.winner(next(iter(h.arms))) == h.arm_config["a"]


def test_a_cell_keeps_one_arm_that_can_finish_when_reports_arrive_late() -> None:
    # The driver reads reports late: "a" is asked to stop at rung 1, but before it stops it reports rung 2,
    # where it beats "b". Stopping "b" too would leave the cell without a run that trained to its own end.
    h = _halving(["a", "b"])
    h.report("b", 1, 3.0)
    assert h.report("a", 1, 3.5) == ["a"]
    h.report("b", 2, 2.9)
    assert h.report("a", 2, 2.5) == []
    h.ended("a", 2.5, pruned=True)
    h.ended("b", 2.7)
    assert h.winner(("de", "xs", 1000, "scratch")) == h.arm_config["b"]  # type: ignore[arg-type]


def test_an_arm_the_cap_cut_wins_only_when_no_arm_found_its_overfitting_point() -> None:
    h = _halving(["a", "b", "c"])
    h.ended("a", 3.4, capped=True)  # the lowest loss, but the token cap ended it: compute, not data
    h.ended("b", 3.5)
    h.ended("c", 3.3, pruned=True)
    assert h.winner(("de", "xs", 1000, "scratch")) == h.arm_config["b"]  # type: ignore[arg-type]
    h = _halving(["a", "b"])
    h.ended("a", 3.4, capped=True)
    h.ended("b", 3.2, pruned=True)
    assert h.winner(("de", "xs", 1000, "scratch")) == h.arm_config["a"]  # type: ignore[arg-type]


def test_winner_is_the_best_unpruned_arm_and_agrees_with_the_ledger(space: Space) -> None:
    tracker = InMemoryTracker()
    summary = SweepDriver(space, InlineExecutor(fake_run), tracker).run()
    assert summary.exit_code == 0
    n = count_trials(space)["transfer"]
    transfer = next(s for s in summary.stages if s.stage == "transfer")
    assert transfer.total == n == transfer.finished  # every planned trial ran; nothing else did
    ledger = read_ledger(space.results_dir / "trials.parquet")
    tr = ledger[ledger["stage"] == "transfer"]
    assert len(tr) == n
    for cell in cells(space):
        mine = tr[(tr["d_f"] == cell.d_f) & (tr["init"] == cell.init)]
        first = mine[mine["seed"] == 0]
        assert sorted(first["lr"]) == LRS  # every arm ran on the first seed
        assert set(first.loc[first["lr"] != 1e-3, "stop_reason"]) == {"pruned"}  # the losers stopped early
        assert (first.loc[first["lr"] != 1e-3, "tokens_seen"] < 4000).all()
        later = mine[mine["seed"] > 0]
        assert set(later["lr"]) == {1e-3}  # the other seeds ran the winner only
        assert sorted(later["seed"]) == ([1, 2] if cell.d_f == 1000 else [1])
    rows = {str(r["trial_key"]): r for r in ledger.to_dict("records")}
    winners = halving.winners_from_ledger(space, rows)
    assert {w[0] for w in winners.values() if w} == {1e-3}


def test_a_relaunch_finds_the_same_winner_and_trains_nothing(space: Space) -> None:
    SweepDriver(space, InlineExecutor(fake_run), InMemoryTracker()).run()
    again = SweepDriver(space, InlineExecutor(fake_run), InMemoryTracker()).run()
    transfer = next(s for s in again.stages if s.stage == "transfer")
    assert transfer.reused == transfer.total == count_trials(space)["transfer"]


def test_halving_saves_tokens_against_the_full_grid(space: Space, tmp_path: Path) -> None:
    SweepDriver(space, InlineExecutor(fake_run), InMemoryTracker()).run()
    d = space_dict(tmp_path / "grid", languages=("de",))
    d["transfer"] = {**d["transfer"], "lr": LRS, "seeds": [0, 1], "seeds_by_d_f": {1000: [0, 1, 2]}}
    grid = write_space(tmp_path / "grid.yaml", d)
    SweepDriver(grid, InlineExecutor(fake_run), InMemoryTracker()).run()
    tokens = {
        name: read_ledger(s.results_dir / "trials.parquet").query("stage == 'transfer'")["tokens_seen"].sum()
        for name, s in (("halving", space), ("grid", grid))
    }
    assert tokens["halving"] < 0.5 * tokens["grid"]


def test_status_counts_the_plan_and_names_the_winners_seeds(space: Space) -> None:
    from sweep_engine.sweep.status import sweep_status, trial_statuses

    before = {s.stage: s for s in sweep_status(space, running_keys=set())}
    assert before["transfer"].total == count_trials(space)["transfer"] == before["transfer"].pending
    SweepDriver(space, InlineExecutor(fake_run), InMemoryTracker()).run()
    after = {s.stage: s for s in sweep_status(space, running_keys=set())}
    assert after["transfer"].total == after["transfer"].done == count_trials(space)["transfer"]
    later = [t for t in trial_statuses(space, running_keys=set()) if t.stage == "transfer" and t.seed > 0]
    assert {t.lr for t in later} == {1e-3}
