"""One world through the real analysis, scored against its truth."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.power.grid import plan_grid
from sweep_engine.analysis.power.prior import DefaultPrior, grid_refs
from sweep_engine.analysis.power.questions import QUESTIONS, order_answers, true_order
from sweep_engine.analysis.power.simulate import Asked, answer, fewer_documents, law_can_be_identified
from sweep_engine.analysis.resample import replicate_cells
from sweep_engine.analysis.synthetic import LAPTOP_GRID, Grid, LanguageTruth, World, make_ledger, with_noise
from sweep_engine.analysis.transfer import analyze_transfer

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"
GRID = Grid(**{**LAPTOP_GRID.__dict__, "languages": ("de", "es", "zh"), "seeds": 2, "seeds_smallest": 3})


def _world(seed: int, ratios: dict[str, float], alpha: float = 0.3, beta: float = 0.4) -> World:
    """A prior world whose D_T / D_F at the grid's reference cell is `ratios` (clear when large)."""
    base = DefaultPrior().draw(np.random.default_rng(seed), GRID)
    n_ref, d_ref = grid_refs(GRID)
    laws = {
        g: LanguageTruth(
            r * d_ref / (d_ref**alpha * n_ref**beta), alpha, beta, base.languages[g].chars_per_token
        )
        for g, r in ratios.items()
    }
    return replace(base, languages=laws)


def test_a_clear_world_is_answered_and_answered_right(fresh_seed: int) -> None:
    world = with_noise(_world(fresh_seed, {"de": 8.0, "es": 2.0, "zh": 0.5}), run_noise=0.002)
    asked = Asked.of(GRID, frozenset(QUESTIONS), 0.2)
    out = answer(world, GRID, np.random.default_rng(fresh_seed), asked, bootstrap=60)
    smallest = [v for (_, _, d), v in out.d_t.items() if d == min(GRID.d_f)]
    assert np.mean([v == 1 for v in smallest]) >= 0.8
    # The wrong way round no more often than a 95% interval's lower tail allows (2.5% of cells, plus one).
    assert list(out.d_t.values()).count(-1) <= 0.025 * len(out.d_t) + 1
    assert sum(out.order.values()) >= len(GRID.sizes) - 1  # resolved, in the true order, at nearly every size
    assert all(v[0] for v in out.law.values())  # identified for every language
    assert sum(v[1] and v[2] for v in out.law.values()) >= 2


def test_the_ordering_is_judged_against_the_truth(fresh_seed: int) -> None:
    """The same ledger scored against a world whose languages are the other way round is never resolved."""
    world = with_noise(_world(fresh_seed, {"de": 8.0, "es": 2.0, "zh": 0.5}), run_noise=0.002)
    flipped = replace(world, languages={"de": world.languages["zh"], "es": world.languages["es"],
                                        "zh": world.languages["de"]})  # fmt: skip
    n = GRID.sizes["m"]
    assert true_order(world, ["zh", "es", "de"], n, 250.0) == ["de", "es", "zh"]
    assert true_order(flipped, ["zh", "es", "de"], n, 250.0) == ["zh", "es", "de"]
    led = make_ledger(world, GRID, np.random.default_rng(fresh_seed))
    cells = best_cells(led)
    ta = analyze_transfer(cells, replicate_cells(cells, led, bootstrap=60, seed=0), fit_law=False)
    assert sum(order_answers(ta, world, GRID.sizes, 250.0).values()) >= len(GRID.sizes) - 1
    assert not any(order_answers(ta, flipped, GRID.sizes, 250.0).values())


def test_fewer_documents_keep_the_noise_of_a_mean() -> None:
    """A 2,000-document split simulated with 400: the spread of its mean loss across draws is the same."""
    world = replace(_world(1, {"de": 1.0}), run_noise=0.0)
    grid = Grid(sizes={"m": 7.9e5}, d_f=(1000.0,), lrs=(1e-3,), seeds=1, seeds_smallest=None,
                val_docs=2000, test_docs=2000, languages=("de",))  # fmt: skip
    spread = {}
    for name, (w, g) in {"exact": (world, grid), "fewer": fewer_documents(world, grid, 400)}.items():
        losses = [make_ledger(w, g, np.random.default_rng(i)).query("stage == 'transfer'")["test_loss"]
                  for i in range(150)]  # fmt: skip
        spread[name] = float(np.std(np.log(np.stack(losses)), axis=0).mean())
    assert fewer_documents(world, grid, 400)[1].test_docs == 400
    assert abs(spread["fewer"] / spread["exact"] - 1) < 0.25  # 150 draws: the SD's own SE is ~6%


def test_a_grid_that_cannot_identify_the_law_says_why() -> None:
    # The paper space with the fixed 15M-token cap it had before its caps followed D_F: only D_F 8K and 80K
    # can reach their overfitting point, and the law needs 3 D_F.
    fixed_cap = [
        "transfer.stopping.token_cap_epochs=null",
        "transfer.stopping.token_cap_min=null",
        "transfer.stopping.token_cap=15000000",
    ]
    ok, why = law_can_be_identified(plan_grid([SPACES / "paper" / "german.yaml"], fixed_cap).grid)
    assert not ok and why.startswith("2 D_F that reach their overfitting point")
    assert law_can_be_identified(plan_grid([SPACES / "paper" / "german.yaml"]).grid)[0]
    assert law_can_be_identified(plan_grid([SPACES / "german.yaml"]).grid)[0]
