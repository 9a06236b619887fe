"""The fitting core: input checks, seeded bootstrap, batching, the batched L-BFGS, and the published fits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sweep_engine.analysis.fit import fit_groups, fit_law
from sweep_engine.analysis.lbfgs import minimize_batched
from sweep_engine.errors import FitError

REFERENCE = Path(__file__).parent / "reference"  # published data, shipped with the tests (see its README)


def _power_data(
    seed: int = 0, e: float = 2.0, b: float = 40.0, beta: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    x = np.geomspace(1e4, 1e8, 8)
    y = (e + b / x**beta) * np.exp(np.random.default_rng(seed).normal(0, 0.003, x.size))
    return x, y


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1e4, 1e5, 1e6, 1e7], [3.0, 2.5, float("nan"), 2.1], "'loss' must be finite, but got nan at row 2"),
        ([1e4, 1e5, 1e6, 1e7], [3.0, 2.5, -1.0, 2.1], "'loss' must be > 0 .* got -1 at row 2"),
        ([1e4, 0.0, 1e6, 1e7], [3.0, 2.5, 2.2, 2.1], "'tokens' must be > 0 .* got 0 at row 1"),
        ([1e4, 1e5], [3.0, 2.5], "has 3 parameters .* needs at least as many points, but got 2"),
        ([1e4, 1e4, 1e4, 1e4], [3.0, 2.5, 2.2, 2.1], "'tokens' has a single distinct value"),
        ([1e4, 1e5, 1e6], [3.0, 2.5, 2.2, 2.1], "'tokens' has 3 values but 'loss' has 4"),
    ],
)
def test_bad_data_raises_a_clear_fit_error(x: list[float], y: list[float], message: str) -> None:
    with pytest.raises(FitError, match=message):
        fit_law("power", {"x": x}, y, bootstrap=0, labels={"x": "tokens", "target": "loss"})


def test_missing_input_names_the_law_and_formula() -> None:
    with pytest.raises(FitError, match=r"law chinchilla needs input 'd' \(L\(N, D\) = E"):
        fit_law("chinchilla", {"n": [1, 2, 3, 4, 5]}, [1, 2, 3, 4, 5])


def test_bootstrap_is_seeded() -> None:
    x, y = _power_data()
    a = fit_law("power", {"x": x}, y, bootstrap=60, seed=4)
    b = fit_law("power", {"x": x}, y, bootstrap=60, seed=4)
    c = fit_law("power", {"x": x}, y, bootstrap=60, seed=5)
    assert a.ci == b.ci
    assert a.ci != c.ci
    assert a.params == c.params  # the point estimate does not depend on the bootstrap
    assert a.boot_theta.shape == (60, 3)
    assert a.boot_converged > 0.9


def test_groups_fit_together_as_they_fit_alone() -> None:
    groups = [
        ({"x": x}, y) for x, y in (_power_data(0), _power_data(1, e=1.5, beta=0.5), _power_data(2, b=80))
    ]
    together = fit_groups("power", groups, bootstrap=40, seed=1)
    for (inputs, y), res in zip(groups, together, strict=True):
        alone = fit_law("power", inputs, y, bootstrap=40, seed=1)
        for k in res.params:
            assert res.params[k] == pytest.approx(alone.params[k], rel=1e-6)
            assert res.ci[k] == pytest.approx(alone.ci[k], rel=1e-3)
    assert together[1].params["beta"] == pytest.approx(0.5, abs=0.03)


def test_groups_name_the_bad_group() -> None:
    x, y = _power_data()
    bad = y.copy()
    bad[3] = 0.0
    with pytest.raises(FitError, match=r"^lang=zh: 'target' must be > 0"):
        fit_groups("power", [({"x": x}, y), ({"x": x}, bad)], names=["lang=de", "lang=zh"], bootstrap=0)


def test_result_is_json_and_predicts_with_bands() -> None:
    x, y = _power_data()
    res = fit_law("power", {"x": x}, y, bootstrap=50)
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert {"law", "params", "ci", "rmsd_log", "n_points"} <= set(json.loads(text))
    assert d["ci"]["beta"][0] <= d["params"]["beta"] <= d["ci"]["beta"][1]
    grid = np.geomspace(1e4, 1e8, 5)
    lo, hi = res.band(x=grid)
    pred = res.predict(x=grid)
    assert np.all(lo <= pred + 1e-9) and np.all(pred <= hi + 1e-9)
    assert res.predict(x=x) == pytest.approx(y, rel=0.01)


def test_batched_lbfgs_solves_many_rosenbrocks_at_once() -> None:
    # f(x) = (a - x0)^2 + 100 (x1 - x0^2)^2 with a different a per problem: minimum at (a, a^2).
    a = torch.linspace(0.5, 2.0, 64, dtype=torch.float64)

    def make(idx: torch.Tensor):  # type: ignore[no-untyped-def]
        ai = a[idx]
        return lambda x: (ai - x[:, 0]) ** 2 + 100 * (x[:, 1] - x[:, 0] ** 2) ** 2

    x0 = torch.tensor([[-1.2, 1.0]], dtype=torch.float64).repeat(64, 1)
    res = minimize_batched(make, x0, max_iter=500)
    assert bool(res.converged.all())
    torch.testing.assert_close(res.x[:, 0], a, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.x[:, 1], a**2, atol=1e-4, rtol=0)


def test_batched_lbfgs_respects_bounds() -> None:
    def make(idx: torch.Tensor):  # type: ignore[no-untyped-def]
        return lambda x: ((x - 3.0) ** 2).sum(-1)

    lower = torch.tensor([-1.0, -1.0], dtype=torch.float64)
    upper = torch.tensor([1.0, 5.0], dtype=torch.float64)
    res = minimize_batched(make, torch.zeros(4, 2, dtype=torch.float64), lower=lower, upper=upper)
    torch.testing.assert_close(res.x, torch.tensor([[1.0, 3.0]] * 4, dtype=torch.float64), atol=1e-6, rtol=0)


def chinchilla_points() -> pd.DataFrame:
    df = pd.read_csv(REFERENCE / "chinchilla_svg_extracted_data.csv")
    df = df.sort_values("loss").iloc[:-5]  # drop the 5 highest-loss points (Besiroglu et al. 2024)
    return df.assign(N=df["Model Size"], D=df["Training FLOP"] / (6 * df["Model Size"]))


PUBLISHED = {
    "A": (482.01, 124.5),
    "B": (2085.43, 1293),
    "E": (1.817, 0.026),
    "alpha": (0.3478, 0.015),
    "beta": (0.3658, 0.021),
}


@pytest.mark.slow
def test_chinchilla_fit_lands_on_the_published_replication() -> None:
    df = chinchilla_points()
    assert len(df) == 240
    res = fit_law("chinchilla", {"n": df["N"], "d": df["D"]}, df["loss"], bootstrap=100, seed=0)
    assert res.n_starts == 4500
    assert res.converged
    for k, (value, se) in PUBLISHED.items():
        assert abs(res.params[k] - value) <= se, f"{k}: {res.params[k]:.4g} vs published {value} +- {se}"
        # The bootstrap spread is the published one (their standard errors are bootstrap ones too).
        assert se / 2 <= res.se[k] <= 2 * se, f"{k}: bootstrap se {res.se[k]:.3g} vs published {se}"


@pytest.mark.slow
def test_rectified_fits_match_or_beat_the_published_rmsd() -> None:
    published = pd.read_csv(REFERENCE / "rectified_rmsd_published.csv")
    keys, groups = [], []
    for ds in ("flan", "wmt19", "gigaword"):
        df = pd.read_csv(REFERENCE / f"rectified_{ds}.csv", index_col=0)
        # As published: the 14 fine-tuning sizes, without the zero-shot column (size 0).
        sizes = [c for c in df.columns if c.isdigit() and int(c) > 0]
        for model, row in df.iterrows():
            keys.append((ds.upper(), model))
            groups.append(({"d": np.array(sizes, dtype=float)}, row[sizes].to_numpy(float)))
    fits = fit_groups("rectified", groups, bootstrap=0)
    ours = pd.DataFrame(
        [(*k, f.rmsd_log) for k, f in zip(keys, fits, strict=True)], columns=["dataset", "model", "ours"]
    )
    both = ours.merge(published, on=["dataset", "model"])
    assert len(both) == 90
    at_or_below = int((both["ours"] <= both["our_rmsd_under_log"] * (1 + 1e-6)).sum())
    assert at_or_below >= 85, f"{at_or_below} of 90 at or below the published RMSD"
