from __future__ import annotations

from pathlib import Path

import pytest

from sweep_engine.config import load_space
from sweep_engine.plan import Assumptions, make_plan, study_flops
from sweep_engine.shapes import SIZES, non_embedding_params
from sweep_engine.space import count_trials, expand
from sweep_engine.sweep import halving
from tests.test_config import minimal, write

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


def test_paper_plan_counts_flops_and_time_terms() -> None:
    space = load_space(SPACES / "paper" / "chinese.yaml")
    plan = {s.stage: s for s in make_plan(space).stages}
    assert plan["transfer"].trials == count_trials(space)["transfer"] == 1 * 6 * 6 * 2 * 3 * 1 * 1
    assert plan["pretrain"].trials == 6
    # Pre-training six sizes (3.3M..124M, ~300M in all) on 26B tokens: 6 N D ~ 4.7e19 FLOPs; the hardware
    # also computes the LM head (50K x d) and attention (12 L T d): nearly twice that.
    assert 1e19 < plan["pretrain"].flops < 1e20
    assert 1.5 < plan["pretrain"].hardware_flops / plan["pretrain"].flops < 2.5
    trials = [t for t in expand(space) if t.stage == "transfer"]
    assert plan["transfer"].tokens == sum(t.stopping.token_cap for t in trials)
    for s in plan.values():  # the wall time is made of its terms (one trial at a time: concurrency aside)
        assert s.train_hours > 0 and s.eval_hours > 0 and s.checkpoint_hours > 0 and s.compile_hours > 0


def test_the_gpu_type_sets_the_time_and_a_cpu_calibration_never_stands_in_for_it() -> None:
    space = load_space(SPACES / "paper" / "english.yaml")
    a100 = make_plan(space).stages[0]  # the space's accelerator_type
    h100 = make_plan(space, assume=Assumptions(gpu="H100")).stages[0]
    assert a100.train_hours / h100.train_hours == pytest.approx(989 / 312, rel=1e-6)
    calibrated = make_plan(space, {name: 1.0 for name in SIZES}).stages[0]  # absurdly slow CPU figures
    assert calibrated.train_hours == pytest.approx(a100.train_hours)


def test_an_attention_term_grows_with_the_context() -> None:
    from sweep_engine.hardware import train_flops_per_token

    shape = SIZES["124M"]
    short, long = train_flops_per_token(shape, 50257, 128), train_flops_per_token(shape, 50257, 1024)
    assert long - short == 12 * shape.n_layer * shape.d_model * (1024 - 128)
    assert short == 6 * (non_embedding_params(shape) + 50257 * shape.d_model) + 12 * 10 * 1024 * 128


def test_plan_sums_six_n_tokens(tmp_path: Path) -> None:
    space = load_space(SPACES / "chinese.yaml")
    stages = {s.stage: s for s in make_plan(space).stages}
    # Successive halving (search.halving): every first-seed arm runs, and the later seeds of one arm per cell.
    grid = halving.plan(space)
    runs = [t for arms in grid.first.values() for t in arms]
    runs += [t for arms in grid.later.values() for t in next(iter(arms.values()))]
    assert len(runs) == stages["transfer"].trials < sum(t.stage == "transfer" for t in expand(space))
    expected = sum(6 * non_embedding_params(t.model) * t.stopping.token_cap for t in runs)
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
    assert plan.throughput_source.startswith("CPU calibrated on this machine")
    pre = plan.stages[0]
    expected_s = space.pretrain.stopping.token_cap / measured["xs"]
    assert pre.train_hours * 3600 == pytest.approx(expected_s, rel=1e-6)
    assert pre.est_hours == pytest.approx(pre.train_hours + pre.eval_hours + pre.checkpoint_hours, rel=1e-9)


def test_study_flops_count_shared_pretraining_once() -> None:
    spaces = [load_space(SPACES / f"{name}.yaml") for name in ("german", "chinese")]
    one = [{s.stage: s.flops for s in make_plan(space).stages} for space in spaces]
    both = study_flops(spaces)
    assert both["pretrain"] == pytest.approx(one[0]["pretrain"]) == pytest.approx(one[1]["pretrain"])
    assert both["transfer"] == pytest.approx(one[0]["transfer"] + one[1]["transfer"])
