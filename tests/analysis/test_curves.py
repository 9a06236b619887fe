"""The monotone scratch curve: through the data, never rising, inverted inside and bounded outside."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep_engine.analysis.curves import ABOVE, BELOW, INSIDE, ScratchCurve, isotonic_decreasing


def test_isotonic_changes_only_the_violators() -> None:
    np.testing.assert_allclose(isotonic_decreasing(np.array([5.0, 4.0, 3.0])), [5.0, 4.0, 3.0])
    np.testing.assert_allclose(isotonic_decreasing(np.array([5.0, 3.0, 3.4, 2.0])), [5.0, 3.2, 3.2, 2.0])
    two = isotonic_decreasing(np.array([[5.0, 5.0], [6.0, 4.0]]))
    np.testing.assert_allclose(two, [[5.5, 5.0], [5.5, 4.0]])


def test_the_curve_goes_through_monotone_measurements() -> None:
    d = np.array([250.0, 1000.0, 4000.0, 16000.0])
    loss = np.array([6.0, 5.0, 4.4, 4.1])
    c = ScratchCurve("de", 1e5, "tokens", d, loss[:, None])
    np.testing.assert_allclose(np.exp(c.log_loss_at(np.log(d))), loss, rtol=1e-12)
    d_e, pos = c.invert(loss[:, None][:, 0][[1]])
    assert d_e[0] == pytest.approx(1000.0, rel=1e-6) and pos[0] == INSIDE


def test_inversion_outside_the_range_is_flagged_and_bounded() -> None:
    d = np.array([250.0, 1000.0, 4000.0])
    c = ScratchCurve("de", 1e5, "tokens", d, np.array([[6.0], [5.0], [4.5]]))
    d_e, pos = c.invert(np.array([4.0]))
    assert pos[0] == ABOVE and d_e[0] > 4000.0
    d_e, pos = c.invert(np.array([7.0]))
    assert pos[0] == BELOW and d_e[0] < 250.0
    flat = ScratchCurve("de", 1e5, "tokens", d, np.array([[6.0], [5.0], [5.0]]))
    d_e, pos = flat.invert(np.array([4.0]))
    assert pos[0] == ABOVE and math.isinf(d_e[0])  # a flat end never reaches a lower loss


def test_replicates_are_inverted_column_by_column() -> None:
    d = np.array([100.0, 1000.0, 10000.0])
    loss = np.array([[6.0, 6.2], [5.0, 5.2], [4.0, 4.2]])
    c = ScratchCurve("de", 1e5, "tokens", d, loss)
    d_e, pos = c.invert(np.array([5.0, 5.2]))
    np.testing.assert_allclose(d_e, [1000.0, 1000.0], rtol=1e-6)
    assert (pos == INSIDE).all()


def test_one_point_is_no_curve() -> None:
    c = ScratchCurve("de", 1e5, "tokens", np.array([1000.0]), np.array([[5.0]]))
    assert not c.usable
    d_e, _ = c.invert(np.array([4.0]))
    assert math.isnan(d_e[0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(2.0, 9.0), min_size=3, max_size=8),
    st.integers(0, 7),
    st.floats(-0.5, 0.5),
)
def test_d_t_has_the_sign_of_the_gap_at_a_measured_d_f(losses: list[float], at: int, gap: float) -> None:
    """Wherever a scratch run was measured at D_F and the scratch losses are monotone, D_E > D_F exactly
    when the fine-tuned loss is below that scratch loss."""
    y = np.sort(np.array(losses))[::-1] + np.linspace(0.3, 0.0, len(losses))  # strictly decreasing
    d = np.geomspace(100, 100 * 4 ** (len(y) - 1), len(y))
    i = at % len(y)
    c = ScratchCurve("de", 1e5, "tokens", d, y[:, None])
    ft = y[i] + gap
    d_e, _ = c.invert(np.array([ft]))
    if gap < -1e-9:
        assert d_e[0] > d[i]
    elif gap > 1e-9:
        assert d_e[0] < d[i]


def test_slope_is_the_derivative_of_the_curve() -> None:
    """slope_at is what the law's exact Jacobian uses: it must be d log L / d log D of log_loss_at."""
    rng = np.random.default_rng(0)
    d = np.array([250.0, 1000.0, 4000.0, 16000.0])
    loss = np.array([6.0, 5.2, 4.7, 4.5])[:, None] * np.exp(rng.normal(0, 0.01, (4, 3)))
    curve = ScratchCurve("de", 1e5, "tokens", d, loss)
    x = np.log(np.geomspace(60.0, 60_000.0, 200))
    h = 1e-6
    for r in range(3):
        numeric = (curve.log_loss_at(x + h, r) - curve.log_loss_at(x - h, r)) / (2 * h)
        # Away from the tabulated kinks the two agree to rounding.
        smooth = np.abs(np.diff(curve.slope_at(np.stack([x - h, x + h]), r), axis=0))[0] < 1e-12
        assert smooth.mean() > 0.9
        np.testing.assert_allclose(curve.slope_at(x, r)[smooth], numeric[smooth], rtol=1e-5, atol=1e-8)
