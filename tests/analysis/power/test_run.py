"""plan --power end to end on the quick space: replayable, the same in one process or two, printable."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sweep_engine.analysis.power import run
from sweep_engine.analysis.power.report import render, to_dict
from sweep_engine.analysis.power.run import PowerReport, check_options, power_analysis
from sweep_engine.analysis.power.simulate import Asked
from sweep_engine.analysis.power.suggest import Change
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


def test_changes_run_cheapest_first_and_skip_those_that_cannot_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change whose gain, even to 1, would buy less per FLOP than a measurable one found is not run; a gain
    within its noise does not count as found. Each "grid" here names the per-world answers it gives."""
    answers = {
        "noisy": [1.0] + [0.0] * 19,  # +0.05 ± 0.05 for 1e14: would be 0.5 per 1e15, but not measurable
        "good": [1.0] * 10 + [0.0] * 10,  # +0.50 for 2e15: 0.25 per 1e15
        "close": [1.0] * 4 + [0.0] * 16,  # could reach 1/3 per 1e15: run
        "dear": [1.0] * 20,  # could reach at most 1/5 per 1e15: not run
    }
    costs = {"dear": 5e15, "close": 3e15, "good": 2e15, "noisy": 1e14}
    ran: list[str] = []

    def fake_run_worlds(*args: object) -> list[object]:
        ran.append(args[4][0])  # type: ignore[index]
        return [answers[args[4][0]]]  # type: ignore[index]

    changes = [Change(n, n, "", n, f) for n, f in costs.items()]  # type: ignore[arg-type]
    monkeypatch.setattr(run, "candidate_changes", lambda planned: changes)
    monkeypatch.setattr(run, "run_worlds", fake_run_worlds)
    monkeypatch.setattr(run, "per_world", lambda o, q, a: np.asarray(o, dtype=float))
    asked = Asked(frozenset({"d_t"}), {}, (), (), 0.2)
    found = run._try_changes(SimpleNamespace(grid=None), None, 0, 20, [0.0] * 20, asked, "d_t", 60, 1)  # type: ignore[arg-type]
    assert ran == ["noisy", "good", "close"]
    assert [c.change.name for c in found if c.skipped] == ["dear"]
    best = PowerReport(None, [], 0, 20, 60, 1, 0.2, None, "", "d_t", found).best  # type: ignore[arg-type]
    assert best is not None and best.change.name == "good"
