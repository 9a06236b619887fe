from __future__ import annotations

from pathlib import Path

import pytest

from sweep_engine.config import load_space
from sweep_engine.plan import make_plan, study_flops
from sweep_engine.shapes import non_embedding_params
from sweep_engine.space import count_trials, expand
from tests.test_config import minimal, write

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


def test_paper_plan_counts_and_flops() -> None:
    space = load_space(SPACES / "paper" / "chinese.yaml")
    plan = {s.stage: s for s in make_plan(space).stages}
    assert plan["transfer"].trials == count_trials(space)["transfer"] == 1 * 6 * 6 * 2 * 3 * 1 * 1
    assert plan["pretrain"].trials == 6
    # Pre-training six sizes (3.3M..124M, ~300M in all) on 26B tokens: 6 N D ~ 4.7e19 FLOPs.
    assert 1e19 < plan["pretrain"].flops < 1e20
    # 216 transfer runs of at most 15M tokens: ~1e18.
    assert 1e17 < plan["transfer"].flops < 1e19
    assert plan["transfer"].tokens == 216 * 15_000_000


def test_plan_sums_six_n_tokens(tmp_path: Path) -> None:
    space = load_space(SPACES / "chinese.yaml")
    stages = {s.stage: s for s in make_plan(space).stages}
    expected = sum(
        6 * non_embedding_params(t.model) * t.stopping.token_cap
        for t in expand(space)
        if t.stage == "transfer"
    )
    assert stages["transfer"].flops == expected
    assert stages["transfer"].est_hours > 0


def test_measured_throughput_changes_estimate() -> None:
    space = load_space(SPACES / "english.yaml")
    slow = make_plan(space, {"xs": 100.0, "s": 100.0, "m": 100.0}).stages[0]
    fast = make_plan(space, {"xs": 1e6, "s": 1e6, "m": 1e6}).stages[0]
    assert slow.est_hours > 100 * fast.est_hours


@pytest.mark.slow
def test_calibrate_measures_each_shape(tmp_path: Path) -> None:
    """--calibrate runs real training steps of each size here and feeds their tokens/s to the estimate."""
    from sweep_engine.training.step import calibrate

    space = load_space(write(tmp_path, minimal()))
    measured = calibrate(space, seconds_per_shape=0.3)
    assert set(measured) == {"xs"} and measured["xs"] > 100
    plan = make_plan(space, measured)
    assert plan.throughput_source.startswith("calibrated")
    pre = plan.stages[0]
    expected_s = space.pretrain.stopping.token_cap / measured["xs"]
    assert pre.est_hours * 3600 == pytest.approx(expected_s, rel=1e-6)


def test_study_flops_count_shared_pretraining_once() -> None:
    spaces = [load_space(SPACES / f"{name}.yaml") for name in ("german", "chinese")]
    one = [{s.stage: s.flops for s in make_plan(space).stages} for space in spaces]
    both = study_flops(spaces)
    assert both["pretrain"] == pytest.approx(one[0]["pretrain"]) == pytest.approx(one[1]["pretrain"])
    assert both["transfer"] == pytest.approx(one[0]["transfer"] + one[1]["transfer"])
