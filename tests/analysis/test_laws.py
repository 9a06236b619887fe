"""Every law recovers random known constants from noisy synthetic data, with intervals covering the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep_engine.analysis.fit import fit_law
from sweep_engine.analysis.laws import LAWS, data_for_loss, get_law
from sweep_engine.errors import FitError


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _grid(*axes: np.ndarray) -> list[np.ndarray]:
    return [m.ravel() for m in np.meshgrid(*axes, indexing="ij")]


def synthetic(name: str, seed: int) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """(true params, inputs, noiseless target) for law `name`, constants drawn from `seed`."""
    rng = np.random.default_rng(seed)
    if name == "chinchilla":
        p = {"A": _logu(rng, 100, 1000), "B": _logu(rng, 100, 3000), "E": rng.uniform(1.5, 2.5)}
        p |= {"alpha": rng.uniform(0.25, 0.45), "beta": rng.uniform(0.25, 0.45)}
        n, d = _grid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6))
        return p, {"n": n, "d": d}, p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]
    if name == "kaplan":
        p = {"N_c": _logu(rng, 1e13, 1e14), "D_c": _logu(rng, 1e12, 1e14)}
        p |= {"alpha_N": rng.uniform(0.06, 0.1), "alpha_D": rng.uniform(0.08, 0.12)}
        n, d = _grid(np.geomspace(1e6, 1e9, 6), np.geomspace(1e7, 1e10, 6))
        y = ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / d) ** p["alpha_D"]
        return p, {"n": n, "d": d}, y
    if name == "power":
        p = {"E": rng.uniform(1, 3), "B": _logu(rng, 10, 100), "beta": rng.uniform(0.2, 0.5)}
        x = np.geomspace(1e4, 1e9, 12)
        return p, {"x": x}, p["E"] + p["B"] / x ** p["beta"]
    if name == "rectified":
        d_l = _logu(rng, 10, 1000)
        p = {"B": d_l * rng.uniform(1, 3), "D_l": d_l, "beta": rng.uniform(0.3, 0.8), "E": rng.uniform(1, 2)}
        d = np.concatenate([[0.0], 200 * 2.0 ** np.arange(14)])
        return p, {"d": d}, p["B"] / (p["D_l"] + d ** p["beta"]) + p["E"]
    if name == "overtrain":
        p = {
            "E": rng.uniform(1.5, 2.5),
            "a": _logu(rng, 50, 200),
            "b": _logu(rng, 50, 200),
            "eta": rng.uniform(0.08, 0.15),
        }
        n, m = _grid(np.geomspace(1e7, 1e9, 5), np.array([5.0, 20.0, 80.0, 320.0]))
        d = m * n
        c = 6 * n * d
        return (
            p,
            {"n": n, "d": d},
            p["E"] + (p["a"] * m ** p["eta"] + p["b"] * m ** -p["eta"]) * c ** -p["eta"],
        )
    assert name == "transfer"
    p = {"k": _logu(rng, 1e3, 1e5), "alpha": rng.uniform(0.1, 0.3), "beta": rng.uniform(0.2, 0.5)}
    d_f, n = _grid(np.geomspace(1e4, 1e8, 5), np.geomspace(1e6, 1e8, 4))
    return p, {"d_f": d_f, "n": n}, p["k"] * d_f ** p["alpha"] * n ** p["beta"]


NOISE = {"transfer": 0.05}  # log-space noise: D_T from D_E inversions is far noisier than a loss


@pytest.mark.parametrize("name", sorted(LAWS))
def test_recovers_random_constants_with_covering_intervals(name: str) -> None:
    truth, inputs, y = synthetic(name, seed=7)
    noise = NOISE.get(name, 0.003)
    y_obs = y * np.exp(np.random.default_rng(1).normal(0, noise, y.size))
    res = fit_law(name, inputs, y_obs, bootstrap=100, seed=3)
    assert res.n_points == y.size
    assert res.rmsd_log < 2 * noise
    for k, v in truth.items():
        lo, hi = res.ci[k]
        assert lo <= v <= hi, (
            f"{name}.{k}: truth {v:.4g} outside [{lo:.4g}, {hi:.4g}] (fit {res.params[k]:.4g})"
        )
        assert lo <= res.params[k] <= hi
    # Exponents are the identifiable part of every law: they land close to the truth.
    for k in ("alpha", "beta", "alpha_N", "alpha_D", "eta"):
        if k in truth:
            assert res.params[k] == pytest.approx(truth[k], abs=0.05)


def test_noiseless_data_gives_the_exact_constants() -> None:
    truth, inputs, y = synthetic("chinchilla", seed=11)
    res = fit_law("chinchilla", inputs, y, bootstrap=0)
    for k, v in truth.items():
        assert res.params[k] == pytest.approx(v, rel=2e-3)
    assert res.rmsd_log < 1e-5
    assert res.converged


def test_predict_matches_the_formula() -> None:
    law = get_law("rectified")
    theta = law.from_params({"B": 300.0, "D_l": 100.0, "beta": 0.5, "E": 1.5})
    d = np.array([0.0, 100.0, 1e4])
    expected = 300.0 / (100.0 + d**0.5) + 1.5
    np.testing.assert_allclose(law.predict(theta, {"d": d}), expected, rtol=1e-12)
    assert law.predict(theta, {"d": d})[0] == pytest.approx(4.5)  # D = 0: the zero-shot loss B / D_l + E


@pytest.mark.parametrize("name", ["chinchilla", "kaplan"])
def test_data_for_loss_inverts_the_joint_laws(name: str) -> None:
    truth, _, _ = synthetic(name, seed=5)
    law = get_law(name)
    theta = law.from_params(truth)
    n, d = 3e8, 4e10
    loss = float(law.predict(theta, {"n": n, "d": d})[0])
    assert data_for_loss(law, theta, n, loss) == pytest.approx(d, rel=1e-8)
    assert data_for_loss(law, theta, n, 0.5) == math.inf  # below what any D reaches at this N


def test_unknown_law_names_the_choices() -> None:
    with pytest.raises(FitError, match="law must be one of .*chinchilla.*got 'foo'"):
        get_law("foo")
