"""The single changes: exactly the grid the overrides would run, costed by plan.py's model."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from sweep_engine.analysis.power.grid import plan_grid
from sweep_engine.analysis.power.suggest import candidate_changes, per_flop
from sweep_engine.config import load_space
from sweep_engine.plan import study_flops
from sweep_engine.shapes import LAPTOP_SIZES, non_embedding_params

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


def _changes(*paths: Path) -> dict:  # type: ignore[type-arg]
    return {c.name: c for c in candidate_changes(plan_grid(list(paths)))}


def test_laptop_changes_and_their_costs() -> None:
    path = SPACES / "german.yaml"
    planned = plan_grid([path])
    space = load_space(path)
    assert space.transfer is not None and space.search.halving is not None
    c = _changes(path)
    # One run of every size to the token cap, per init (plan.py's 6 N D). With successive halving the first seed
    # runs both LR arms and each later seed the winner only: an added seed is one such run per D_F.
    runs = 6 * space.transfer.stopping.token_cap * sum(planned.grid.sizes.values()) * len(space.transfer.init)
    # One more seed everywhere, the D_F with seeds of its own (250: 3 seeds) included.
    assert c["seed"].grid.seeds == 3 and c["seed"].grid.seeds_at(250.0) == 4
    assert c["seed"].extra_flops == pytest.approx(runs * len(planned.grid.d_f))
    assert c["seed_smallest"].grid.seeds_at(250.0) == 4 and c["seed_smallest"].grid.seeds_at(500.0) == 2
    assert c["seed_smallest"].extra_flops == pytest.approx(runs)
    # 250 / 2 = 125 tokens cannot fill a 128-token window: the new D_F is one window plus one token, run with
    # the space's 2 seeds (both arms of the first, the winner of the second).
    assert c["d_f_below"].grid.d_f[0] == 129.0 and "'transfer.d_f=[129, 250," in c["d_f_below"].how
    assert c["d_f_below"].extra_flops == pytest.approx(runs * (planned.grid.seeds + 1))
    # The next laptop size, with its English pre-training.
    n_l = non_embedding_params(LAPTOP_SIZES["l"])
    assert c["size"].grid.sizes["l"] == n_l
    added = study_flops([load_space(path, shlex.split(c["size"].how))])
    assert c["size"].extra_flops == pytest.approx(sum(added.values()) - planned.total_flops)
    assert c["size"].extra_flops > added["pretrain"] - planned.flops["pretrain"] > 0
    # A larger test set: only its evaluation, a small fraction of the study.
    assert c["test_set"].grid.test_docs == 2 * planned.grid.test_docs
    assert 0 < c["test_set"].extra_flops < 0.05 * planned.total_flops


def test_sizes_come_from_the_spaces_family() -> None:
    assert _changes(SPACES / "quick" / "german.yaml")["size"].grid.sizes.keys() >= {"s"}
    paper = _changes(SPACES / "paper" / "german.yaml")["size"]
    # Every paper size is in the grid already: half the smallest one's layers.
    assert "3.3M-half" in paper.grid.sizes and paper.grid.sizes["3.3M-half"] < paper.grid.sizes["3.3M"]
    # The paper space gives one pre-training LR per size: the smaller model gets a larger one, on the same line.
    space = load_space(SPACES / "paper" / "german.yaml", shlex.split(paper.how))
    assert space.pretrain is not None and isinstance(space.pretrain.lr, dict)
    assert space.pretrain.lr["3.3M-half"] > space.pretrain.lr["3.3M"] > space.pretrain.lr["16M"]
    # The paper space's new D_F: 8,000 / 10 = 800 tokens is under one 1,024-token window.
    assert _changes(SPACES / "paper" / "german.yaml")["d_f_below"].grid.d_f[0] == 1025.0


def test_only_gains_count_per_flop() -> None:
    assert per_flop(0.1, 1e15) == pytest.approx(0.1)
    assert per_flop(0.0, 1e15) == per_flop(-0.1, 1e15) == float("-inf")
