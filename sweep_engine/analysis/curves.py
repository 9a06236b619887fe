"""The from-scratch curve L_s(D) of one (language, N), through its measurements, and its inverse D_E(L).

Inside the scratch runs' D range the curve goes through the data: the losses are made non-increasing in D by
isotonic regression (pool-adjacent-violators; it changes only points that break monotonicity, which noise
does), then joined by a monotone cubic (PCHIP) in log D vs log loss. So wherever a scratch run was measured at
the fine-tuned run's D_F, D_E > D_F exactly when the fine-tuned loss is below that scratch loss: D_T's sign is
the gap's sign. Outside the range the curve continues along its end segments (a power law with the end's
slope); an inverted loss there is `above` (D_E beyond the largest scratch D: the straight log-log line reaches
a loss sooner than a flattening curve does, so the estimate is a lower bound) or `below` (D_E under the smallest
scratch D), and is reported as a bound, never as a headline number.

Every method works on all bootstrap replicates at once: column r of the losses is replicate r (column 0 the
measurement), and the curve is rebuilt for each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator

GRID = 512  # points of the dense log D grid the interpolant is tabulated on
INSIDE, ABOVE, BELOW = 0, 1, -1  # where an inverted loss falls relative to the scratch range


def isotonic_decreasing(y: np.ndarray) -> np.ndarray:
    """Least-squares non-increasing fit to y (pool adjacent violators), equal weights; y is [P] or [P, R]."""
    y = np.asarray(y, dtype=float)
    if y.ndim == 2:
        return np.stack([isotonic_decreasing(y[:, r]) for r in range(y.shape[1])], axis=1)
    blocks: list[list[float]] = []  # [sum, count]
    for v in y:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return np.concatenate([np.full(int(c), s / c) for s, c in blocks])


@dataclass
class ScratchCurve:
    """One (language, N) scratch curve in one unit basis, for every bootstrap replicate.

    Attributes:
        language, n_params: the curve's language and size.
        basis: "tokens" (loss in nats per token, D in tokens) or "chars" (bits per character, characters).
        d: [P] the scratch runs' D, ascending (distinct).
        loss: [P, R + 1] their losses per replicate (column 0 measured), as measured (before isotonic).
        excluded: scratch cells kept out of the curve, as (D, reason).
    """

    language: str
    n_params: float
    basis: str
    d: np.ndarray
    loss: np.ndarray
    excluded: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        order = np.argsort(self.d)
        self.d = np.asarray(self.d, dtype=float)[order]
        self.loss = np.atleast_2d(np.asarray(self.loss, dtype=float)[order].reshape(len(order), -1))
        self.log_d = np.log(self.d)
        self.mono = np.log(isotonic_decreasing(self.loss))  # [P, R + 1] log loss, non-increasing in D
        if len(self.d) >= 2:
            # The measured D are grid points, so the tabulated curve passes exactly through the data.
            self.grid_x = np.union1d(np.linspace(self.log_d[0], self.log_d[-1], GRID), self.log_d)
            self.grid_y = PchipInterpolator(self.log_d, self.mono, axis=0)(self.grid_x)  # [G, R + 1]
            self.grid_slope = np.diff(self.grid_y, axis=0) / np.diff(self.grid_x)[:, None]  # [G - 1, R + 1]
            # End-segment slopes (log loss per log D) carry the curve beyond the data; never rising.
            self.slope_lo = np.minimum((self.mono[1] - self.mono[0]) / (self.log_d[1] - self.log_d[0]), 0.0)
            self.slope_hi = np.minimum(
                (self.mono[-1] - self.mono[-2]) / (self.log_d[-1] - self.log_d[-2]), 0.0
            )

    @property
    def usable(self) -> bool:
        """Two or more scratch points: a curve to invert."""
        return len(self.d) >= 2

    @property
    def replicates(self) -> int:
        return int(self.loss.shape[1])

    def log_loss_at(self, log_d: np.ndarray, r: int = 0) -> np.ndarray:
        """Replicate r's log loss at log D (end-segment power laws outside the range)."""
        x = np.asarray(log_d, dtype=float)
        out = np.interp(x, self.grid_x, self.grid_y[:, r])
        # The law's fit calls this thousands of times, mostly inside the range: extend only where needed.
        below, above = x < self.log_d[0], x > self.log_d[-1]
        if below.any():
            out = np.where(below, self.mono[0, r] + (x - self.log_d[0]) * self.slope_lo[r], out)
        if above.any():
            out = np.where(above, self.mono[-1, r] + (x - self.log_d[-1]) * self.slope_hi[r], out)
        return out

    def slope_at(self, log_d: np.ndarray, r: int = 0) -> np.ndarray:
        """d log loss / d log D of replicate r's curve at log D (the derivative of `log_loss_at`: the slope of
        the tabulated segment inside the range, the end segments' slopes outside)."""
        x = np.asarray(log_d, dtype=float)
        i = np.clip(np.searchsorted(self.grid_x, x, side="right") - 1, 0, len(self.grid_x) - 2)
        out = self.grid_slope[i, r]
        below, above = x < self.log_d[0], x > self.log_d[-1]
        if below.any():
            out = np.where(below, self.slope_lo[r], out)
        if above.any():
            out = np.where(above, self.slope_hi[r], out)
        return out

    def invert(self, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """D_E for a loss per replicate.

        Args:
            loss: [R + 1] the loss to reach, replicate by replicate (same basis as the curve).

        Returns:
            (d_e [R + 1], position [R + 1]): position INSIDE, ABOVE (beyond the largest D; +inf when the curve
            is flat there) or BELOW (under the smallest D; 0 when flat there). NaN without a usable curve.
        """
        v = np.log(np.asarray(loss, dtype=float))
        if not self.usable:
            pos = np.where(v < np.log(self.loss[0]) if len(self.d) else np.zeros_like(v, bool), ABOVE, BELOW)
            return np.full(v.shape, math.nan), pos
        y = self.grid_y
        first, last = y[0], y[-1]
        # Columns are non-increasing: the grid points above v form a prefix; v is crossed after it.
        i = np.clip((y > v[None, :]).sum(axis=0), 1, len(self.grid_x) - 1)
        cols = np.arange(y.shape[1])
        y0, y1 = y[i - 1, cols], y[i, cols]
        x0, x1 = self.grid_x[i - 1], self.grid_x[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(y0 != y1, (y0 - v) / (y0 - y1), 0.0)
            x = x0 + np.clip(frac, 0.0, 1.0) * (x1 - x0)
            x_hi = np.where(self.slope_hi < 0, self.log_d[-1] + (v - last) / self.slope_hi, np.inf)
            x_lo = np.where(self.slope_lo < 0, self.log_d[0] + (v - first) / self.slope_lo, -np.inf)
        pos = np.where(v < last, ABOVE, np.where(v > first, BELOW, INSIDE))
        x = np.where(pos == ABOVE, x_hi, np.where(pos == BELOW, x_lo, x))
        with np.errstate(over="ignore"):
            return np.exp(x), pos
