"""plan --power end to end on the quick space: replayable, the same in one process or two, printable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweep_engine.analysis.power.report import render, to_dict
from sweep_engine.analysis.power.run import check_options, power_analysis
from sweep_engine.errors import UserError

QUICK = Path(__file__).resolve().parents[3] / "search_spaces" / "quick" / "german.yaml"


def test_a_seed_replays_in_one_process_or_two() -> None:
    one = power_analysis([QUICK], worlds=10, seed=4, jobs=1, suggest=False)
    two = power_analysis([QUICK], worlds=10, seed=4, jobs=2, suggest=False)
    assert one.probabilities.d_t.equals(two.probabilities.d_t)
    assert one.probabilities.headline == two.probabilities.headline
    text = render(two)
    for part in ("1. D_T > 0 resolved", "2. language ordering: one language", "3. transfer law", "weakest:"):
        assert part in text
    out = json.loads(json.dumps(to_dict(two)))  # plain JSON types throughout
    assert out["questions"]["order"] == {"applies": False, "why": "one language"}
    assert out["seed"] == 4 and out["worlds"] == 10 and out["changes"] == []


@pytest.mark.parametrize(
    ("worlds", "bootstrap", "width", "rule"),
    [
        (9, 60, 0.2, "--worlds: must be at least 10"),
        (60, 10, 0.2, "--bootstrap: must be at least 20"),
        (60, 60, 1.5, "--width: must lie between 0 and 1"),
    ],  # fmt: skip
)
def test_bad_options_name_the_option_and_the_rule(
    worlds: int, bootstrap: int, width: float, rule: str
) -> None:
    with pytest.raises(UserError, match=rule):
        check_options(worlds, bootstrap, width)
