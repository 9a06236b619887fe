from __future__ import annotations

import math
from pathlib import Path

import yaml

from sweep_engine.config import load_space
from sweep_engine.space import cells, count_trials, expand, pretrain_trials, sweep_key, transfer_trials
from sweep_engine.spec import TrialSpec
from tests.test_config import minimal, write

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


def test_grid_product_and_order(tmp_path: Path) -> None:
    data = minimal()
    data["pretrain"]["sizes"] = ["xs", "s"]
    data["transfer"]["lr"] = [1e-3, 3e-3, 1e-2]
    data["transfer"]["seeds"] = [0, 1]
    space = load_space(write(tmp_path, data))
    trials = expand(space)
    pre = [t for t in trials if t.stage == "pretrain"]
    tr = [t for t in trials if t.stage == "transfer"]
    assert len(pre) == 2
    assert len(tr) == 1 * 2 * 2 * 2 * 3 * 1 * 2 == count_trials(space)["transfer"]
    assert trials[: len(pre)] == pre  # pre-training first
    assert len({t.key() for t in trials}) == len(trials)  # every trial has its own key
    assert len(cells(space)) == 1 * 2 * 2 * 2
    assert [t.lr for t in tr[:6]] == [1e-3, 1e-3, 3e-3, 3e-3, 1e-2, 1e-2]  # seeds vary fastest


def test_finetune_points_at_pretrain_of_same_size(tmp_path: Path) -> None:
    data = minimal()
    data["pretrain"]["sizes"] = ["xs", "s"]
    space = load_space(write(tmp_path, data))
    keys = {t.model.name: t.key() for t in pretrain_trials(space)}
    for t in transfer_trials(space):
        assert t.init_from == (keys[t.model.name] if t.init == "finetune" else None)


def test_keys_are_stable_and_content_derived(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, minimal()))
    first = [t.key() for t in expand(space)]
    again = [t.key() for t in expand(load_space(write(tmp_path, minimal())))]
    assert first == again
    changed = minimal()
    changed["transfer"]["lr"] = [2e-3]
    other = [t.key() for t in transfer_trials(load_space(write(tmp_path, changed, "b.yaml")))]
    assert set(other).isdisjoint(first)


def test_spec_roundtrips_through_dict(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, minimal()))
    for t in expand(space):
        assert TrialSpec.from_dict(t.to_dict()) == t


def test_target_spaces_share_one_pretraining() -> None:
    keys = [
        {t.key() for t in pretrain_trials(load_space(SPACES / f"{n}.yaml"))}
        for n in ("english", "chinese", "spanish", "german")
    ]
    assert keys[0] == keys[1] == keys[2] == keys[3]
    sweeps = {sweep_key(load_space(SPACES / f"{n}.yaml")) for n in ("chinese", "spanish", "german")}
    assert len(sweeps) == 3


def test_paper_space_matches_the_study() -> None:
    space = load_space(SPACES / "paper" / "chinese.yaml")
    assert space.transfer is not None and space.pretrain is not None
    d_f = space.transfer.d_f
    assert min(d_f) == 8000 and max(d_f) >= 4e8 and math.log10(max(d_f) / min(d_f)) > 4.5
    assert space.pretrain.batch_tokens == 512 * 1024 and space.pretrain.context == 1024
    assert space.pretrain.schedule.warmup_steps == 500
    assert {s.warmup_steps for s in space.transfer.schedules} == {300}
    assert len(space.transfer.lr) >= 2
    # Budgets follow D_F: 48 epochs within [1M, 10B] tokens; a short run's warm-up is 5% of its steps.
    trials = {t.data.d_f: t for t in transfer_trials(space) if t.init == "scratch" and t.lr == 1e-4}
    assert trials[8000].stopping.token_cap == 1_048_576 and trials[8000].schedule.warmup_steps == 4
    assert trials[800_000].stopping.token_cap == 38_400_000 and trials[800_000].schedule.warmup_steps == 118
    assert trials[500_000_000].stopping.token_cap == 10_000_000_000
    assert trials[500_000_000].schedule.warmup_steps == 300
    # Evaluated every 6 epochs of small D_F (48,000 tokens: 2 whole steps at 8K), every 4M tokens of large D_F.
    assert trials[8000].stopping.eval_interval_tokens == 48_000
    assert trials[8_000_000].stopping.eval_interval_tokens == 4_194_304
    # One pre-training LR per size, smaller for larger models.
    lrs = [t.lr for t in pretrain_trials(space)]
    assert len(set(lrs)) == 6 and lrs == sorted(lrs, reverse=True)


def test_optuna_counts_budget_per_cell(tmp_path: Path) -> None:
    data = minimal()
    data["search"] = {"kind": "optuna", "trials_per_cell": 5, "lr_range": [1e-4, 1e-2]}
    space = load_space(write(tmp_path, data))
    assert count_trials(space)["transfer"] == len(cells(space)) * 5


def test_minimal_helper_is_valid_yaml(tmp_path: Path) -> None:
    assert yaml.safe_load(write(tmp_path, minimal()).read_text())["name"] == "t"


def test_eval_interval_scales_with_small_d_f(tmp_path: Path) -> None:
    data = minimal()
    data["transfer"]["d_f"] = [100, 1000, 100_000]
    data["transfer"]["stopping"] = {
        "eval_interval_tokens": 8192,
        "token_cap": 200_000,
        "eval_interval_epochs": 2,
    }
    space = load_space(write(tmp_path, data))
    intervals = {t.data.d_f: t.stopping.eval_interval_tokens for t in transfer_trials(space)}
    # never more often than one step (256 tokens), 2 epochs of small sets, the fixed interval for large ones
    assert intervals == {100: 256, 1000: 2000, 100_000: 8192}
