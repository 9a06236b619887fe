"""The grid `plan --power` reads off the spaces is the grid `launch` would run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweep_engine.analysis.power.grid import WEB_DOC_TOKENS, plan_grid
from sweep_engine.budgets import cap_checks
from sweep_engine.config import load_space
from sweep_engine.errors import UserError
from sweep_engine.plan import make_plan, study_flops
from sweep_engine.shapes import SIZES, non_embedding_params
from sweep_engine.space import expand

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


def test_laptop_grid_is_the_expanded_space() -> None:
    path = SPACES / "german.yaml"
    planned = plan_grid([path])
    g = planned.grid
    trials = [t for t in expand(load_space(path)) if t.stage == "transfer"]
    assert g.sizes == {t.model.name: float(non_embedding_params(t.model)) for t in trials}
    assert g.d_f == tuple(sorted({float(t.data.d_f) for t in trials if t.data.d_f}))
    assert set(g.lrs) == {t.lr for t in trials}
    for d_f in g.d_f:  # seeds per D_F, those of seeds_by_d_f included
        assert g.seeds_at(d_f) == len({t.seed for t in trials if t.data.d_f == d_f})
    assert g.test_docs == trials[0].data.test_size and g.languages == ("de",)
    # The cells whose cap cannot reach the expected overfitting point (the rule `validate` warns with).
    short = [c.d_f for c in cap_checks(load_space(path)) if not c.reaches]
    assert g.budget_d_f == (min(short) if short else None)
    # One space: its plan's FLOPs; the note says there is no ordering question.
    assert planned.total_flops == pytest.approx(sum(s.flops for s in make_plan(load_space(path)).stages))
    assert any("no ordering question" in n for n in planned.notes)


def test_paper_grid_sizes_its_test_set_in_documents() -> None:
    planned = plan_grid([SPACES / "paper" / "german.yaml"])
    space = load_space(SPACES / "paper" / "german.yaml")
    assert space.transfer is not None
    assert planned.grid.test_docs == -(-space.transfer.validation.test_size // WEB_DOC_TOKENS)
    assert len(planned.grid.lrs) == len(space.transfer.lr)
    assert planned.grid.sizes["124M"] == non_embedding_params(SIZES["124M"])


def test_several_spaces_are_one_study_with_shared_pretraining() -> None:
    paths = [SPACES / "german.yaml", SPACES / "spanish.yaml", SPACES / "chinese.yaml"]
    planned = plan_grid(paths)
    assert planned.grid.languages == ("de", "es", "zh")
    one = study_flops([load_space(paths[0])])
    # The English models are trained once for all three languages; transfer triples.
    assert planned.flops["pretrain"] == pytest.approx(one["pretrain"])
    assert planned.flops["transfer"] == pytest.approx(3 * one["transfer"])


def test_overrides_reach_the_grid() -> None:
    overrides = [
        "transfer.seeds=[0, 1, 2]",
        "transfer.d_f=[250, 1000, 4000]",
        "transfer.seeds_by_d_f={250: [0, 1, 2, 3]}",
    ]
    planned = plan_grid([SPACES / "german.yaml"], overrides)
    assert planned.grid.seeds == 3 and planned.grid.d_f == (250.0, 1000.0, 4000.0)
    assert planned.grid.seeds_at(250.0) == 4 and planned.grid.seeds_at(1000.0) == 3
    assert planned.grid.budget_d_f is None


def test_spaces_that_differ_beyond_language_are_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load((SPACES / "chinese.yaml").read_text())
    raw["pretrain_from"] = str(SPACES / "english.yaml")
    raw["transfer"]["d_f"] = [250, 1000]  # 250 keeps its seeds_by_d_f entry valid
    other = tmp_path / "chinese.yaml"
    other.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        UserError, match=r"chinese\.yaml: transfer\.d_f: plan --power compares languages cell by"
    ):
        plan_grid([SPACES / "german.yaml", other])
