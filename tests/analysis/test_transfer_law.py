"""The transfer law in the loss domain: recovered where the grid identifies it, refused where it does not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.resample import CellReplicates, replicate_cells
from sweep_engine.analysis.synthetic import Grid, World, make_ledger
from sweep_engine.analysis.transfer import analyze_transfer


def test_the_law_comes_back_with_honest_intervals(
    cells: pd.DataFrame, reps: CellReplicates, world: World
) -> None:
    ta = analyze_transfer(cells, reps)
    lt = ta.languages["de"]
    law = lt.law
    assert law is not None and law.identified, law.status if law else None
    truth = world.languages["de"]
    for name in ("alpha", "beta"):
        assert abs(law.params[name] - getattr(truth, name)) < 0.2
        lo, hi = law.ci[name]
        assert hi - lo <= 0.8
    assert law.claims["alpha < 1"] in ("holds", "undetermined")
    # k in characters follows from k in tokens through the characters per token.
    cpt = float(np.median(lt.table["d_f_chars"] / lt.table["d_f"]))
    assert law.params["k_chars"] / law.params["k"] == __import__("pytest").approx(
        cpt ** (1 - law.params["alpha"])
    )


def test_every_cell_enters_whatever_the_sign_of_its_d_t(cells: pd.DataFrame, reps: CellReplicates) -> None:
    law = analyze_transfer(cells, reps).languages["zh"].law
    assert law is not None
    t = analyze_transfer(cells, reps).languages["zh"].table
    assert law.n_cells == len(t)  # no truncation on D_T > 0
    assert (t["d_t"] < 0).any() or (t["gap"] > 0).any() or law.n_cells == len(t)


def test_one_size_is_not_identified_and_prints_no_constants(world: World) -> None:
    grid = Grid(sizes={"s": 3.4e5}, d_f=(250.0, 1000.0, 4000.0, 16000.0), seeds=1, seeds_smallest=None)
    led = make_ledger(world, grid, np.random.default_rng(6))
    c = best_cells(led)
    law = analyze_transfer(c, replicate_cells(c, led, bootstrap=30, seed=0)).languages["de"].law
    assert law is not None and not law.identified
    assert any("sizes" in r for r in law.reasons)
    d = law.to_dict()
    assert d["params"] is None and d["ci"] is None and d["status"].startswith("not identified")
    assert law.claims == {"alpha < 1": "not identified", "beta > 0": "not identified"}


def test_the_exact_jacobian_matches_finite_differences(cells: pd.DataFrame, reps: CellReplicates) -> None:
    from scipy.optimize._numdiff import approx_derivative

    from sweep_engine.analysis.transfer_law import _Problem

    lt = analyze_transfer(cells, reps).languages["de"]
    ft = cells[(cells["language"] == "de") & (cells["init"] == "finetune")]
    idx = ft.index.to_numpy()
    sizes = ft["n_params"].to_numpy(float)
    problem = _Problem(ft["d_f"].to_numpy(float), sizes, [lt.curves[n] for n in sizes], reps.loss[idx])
    rng = np.random.default_rng(1)
    for r in (0, 3):
        for theta in problem.starts()[::5]:
            theta = theta + rng.normal(0, 0.05, 3)
            numeric = approx_derivative(problem.residuals, theta, args=(r,), method="3-point")
            np.testing.assert_allclose(problem.jacobian(theta, r), numeric, rtol=1e-3, atol=1e-6)
