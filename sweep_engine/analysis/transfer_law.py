"""The transfer law D_T = k D_F^alpha N^beta (Hernandez et al. 2021), fitted in the loss domain.

Fitting D_T values directly would need D_T > 0 (a log) and so keep only the cells where fine-tuning won:
truncation on the outcome, which biases every constant. Instead every fine-tuned cell enters through its loss:

    L_ft(N, D_F) = L_s(N, D_F + k D_F^alpha N^beta),

with L_s the monotone scratch curve of that size (curves.py). Least squares on log loss; a cell where
fine-tuning lost is a residual like any other. Cells cut by their token budget while still falling, and cells
known to lie beyond the low-data regime (where the law does not apply), are left out. Intervals: the fit is
repeated on every bootstrap replicate (documents and seed noise, resample.py), each with its own curves.

The law is "identified" only when every rule below holds; otherwise the report says "not identified" with the
reasons, and no constants are shown:
- at least MIN_CELLS cells, MIN_SIZES sizes and MIN_D_F distinct D_F;
- bootstrap replicates exist, and at least MIN_BOOT_OK of them converge away from the bounds;
- the 95% intervals of alpha and beta are each at most MAX_EXPONENT_WIDTH wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from sweep_engine.analysis.resample import CellReplicates, percentile_interval

if TYPE_CHECKING:
    from sweep_engine.analysis.curves import ScratchCurve


class LanguageTransfer(Protocol):
    """What the fit reads of a language's transfer analysis (transfer.LanguageTransfer has it): its name and
    basis, the scratch curve per size, and the fine-tuned cells' table."""

    language: str
    basis: str
    curves: dict[float, ScratchCurve]
    table: pd.DataFrame


MIN_CELLS = 6  # two points per parameter
MIN_SIZES = 2  # beta needs two sizes
MIN_D_F = 3  # alpha needs a slope, and one spare D_F to test it
MIN_BOOT = 20  # replicates below this give no interval worth the name
MIN_BOOT_OK = 0.8
MAX_EXPONENT_WIDTH = 0.8  # a 95% interval wider than this says nothing about alpha < 1 or beta > 0
ALPHA_BOUNDS, BETA_BOUNDS = (-1.0, 2.0), (-2.0, 2.0)
LOG_K_SPAN = 15.0  # log k' within +-15 e-folds of log D_ref


@dataclass
class TransferLaw:
    """A language's transfer law and whether the data identify it.

    Attributes:
        params: k (D in tokens), k_chars (D in characters), alpha, beta, at the full-data optimum.
        ci: 95% percentile intervals over the bootstrap replicates.
        identified: every identifiability rule holds (see the module docstring).
        reasons: the rules that fail (empty when identified).
        claims: "alpha < 1" and "beta > 0" (the seed study's qualitative claims) -> "holds", "contradicted"
            or "undetermined" (interval straddles), or "not identified".
        cells: the cells fitted (N, D_F, loss, residual) and `excluded` the ones left out, with why.
    """

    language: str
    basis: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    n_cells: int
    n_sizes: int
    n_d_f: int
    rmsd_log: float
    boot_ok: float
    identified: bool
    reasons: list[str]
    claims: dict[str, str]
    cells: pd.DataFrame
    excluded: list[str] = field(default_factory=list)
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 4)), repr=False)

    @property
    def status(self) -> str:
        return "identified" if self.identified else "not identified: " + "; ".join(self.reasons)

    def d_t(self, d_f: Any, n: Any) -> np.ndarray:
        """The law's D_T in tokens."""
        p = self.params
        return p["k"] * np.asarray(d_f, float) ** p["alpha"] * np.asarray(n, float) ** p["beta"]

    def to_dict(self) -> dict[str, Any]:
        shown = self.identified
        return {
            "status": self.status,
            "identified": self.identified,
            "params": {k: v for k, v in self.params.items()} if shown else None,
            "ci": {k: list(v) for k, v in self.ci.items()} if shown else None,
            "claims": self.claims,
            "n_cells": self.n_cells,
            "n_sizes": self.n_sizes,
            "n_d_f": self.n_d_f,
            "rmsd_log": self.rmsd_log,
            "boot_ok": self.boot_ok,
            "excluded": self.excluded,
        }


def fit_transfer_law(
    lt: LanguageTransfer, reps: CellReplicates, lc: pd.DataFrame, *, seed: int = 0
) -> TransferLaw:
    """Fit the law to one language's fine-tuned cells on every replicate (see the module docstring).

    Args:
        lt: the language's transfer analysis (curves and cell table).
        reps: cell replicates, aligned with the cell table `lc` came from.
        lc: the language's cells (cells.best_cells rows; its index addresses `reps`).
        seed: unused by the deterministic fit; kept so callers pass one seed everywhere.
    """
    del seed
    basis = lt.basis
    dcol = "d_f" if basis == "tokens" else "d_f_chars"
    values = reps.loss if basis == "tokens" else reps.bpc
    ft = lc[lc["init"] == "finetune"]
    regime = {(float(r["n_params"]), float(r["d_f"])): r["low_data"] for _, r in lt.table.iterrows()}
    use, excluded = [], []
    for i, c in ft.iterrows():
        n, d_f = float(c["n_params"]), float(c["d_f"])
        curve = lt.curves.get(n)
        what = f"{c.get('size', n)} at D_F {d_f:,.0f}"
        if curve is None or not curve.usable:
            excluded.append(f"{what}: no scratch curve at this size")
        elif bool(c["still_falling"]):
            excluded.append(f"{what}: cut by its token budget while still falling")
        elif regime.get((n, d_f)) == "beyond low-data":
            excluded.append(f"{what}: beyond the low-data regime")
        else:
            use.append((i, n, float(c[dcol])))
    cpt = float(np.median(ft["d_f_chars"] / ft["d_f"])) if len(ft) else math.nan
    n_sizes = len({n for _, n, _ in use})
    n_d_f = len({d for _, _, d in use})
    reasons = []
    if len(use) < MIN_CELLS or n_sizes < MIN_SIZES or n_d_f < MIN_D_F:
        reasons.append(
            f"{len(use)} cells over {n_sizes} sizes and {n_d_f} D_F; the rule needs {MIN_CELLS} cells, "
            f"{MIN_SIZES} sizes and {MIN_D_F} D_F"
        )
    empty = pd.DataFrame(columns=["n_params", "d_f", "loss", "residual"])
    if len(use) < 3 or n_sizes < 1:
        return TransferLaw(lt.language, basis, {}, {}, len(use), n_sizes, n_d_f, math.nan, 0.0, False,
                           reasons, _claims({}, False), empty, excluded)  # fmt: skip
    idx = np.array([i for i, _, _ in use])
    sizes = np.array([v for _, v, _ in use])
    data = np.array([v for _, _, v in use])
    problem = _Problem(data, sizes, [lt.curves[v] for v in sizes], values[idx])
    theta, ok, resid = problem.fit(0, problem.starts())
    boot = np.array([problem.fit(r, [theta])[:2] for r in range(1, values.shape[1])], dtype=object)
    thetas = np.array([b[0] for b in boot]) if len(boot) else np.empty((0, 3))
    boot_ok = float(np.mean([bool(b[1]) for b in boot])) if len(boot) else 0.0
    params, boot_params = problem.params(theta, cpt, basis), problem.params(thetas, cpt, basis)
    ci = {}
    for j, name in enumerate(("k", "k_chars", "alpha", "beta")):
        col = boot_params[:, j] if len(boot_params) else np.empty(0)
        low, high = percentile_interval(np.concatenate([[math.nan], col]))
        ci[name] = (float(low), float(high))
    if len(boot) < MIN_BOOT:
        reasons.append(f"{len(boot)} bootstrap replicates (need {MIN_BOOT}): no interval to judge the law by")
    elif boot_ok < MIN_BOOT_OK:
        reasons.append(
            f"only {boot_ok:.0%} of the replicates converged inside the bounds (need {MIN_BOOT_OK:.0%})"
        )
    if not ok:
        reasons.append("the fit to the measurements stopped at a bound")
    for name in ("alpha", "beta") if len(boot) >= MIN_BOOT else ():
        lo, hi = ci[name]
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo > MAX_EXPONENT_WIDTH:
            reasons.append(f"{name}'s 95% interval [{lo:.2g}, {hi:.2g}] is wider than {MAX_EXPONENT_WIDTH}")
    identified = not reasons
    cells = pd.DataFrame({"n_params": sizes, "d_f": data, "loss": values[idx, 0], "residual": resid})
    return TransferLaw(
        language=lt.language,
        basis=basis,
        params={k: float(v) for k, v in zip(("k", "k_chars", "alpha", "beta"), params, strict=True)},
        ci=ci,
        n_cells=len(use),
        n_sizes=n_sizes,
        n_d_f=n_d_f,
        rmsd_log=float(np.sqrt(np.mean(resid**2))),
        boot_ok=boot_ok,
        identified=identified,
        reasons=reasons,
        claims=_claims(ci, identified),
        cells=cells,
        excluded=excluded,
        boot=boot_params,
    )


def _claims(ci: dict[str, tuple[float, float]], identified: bool) -> dict[str, str]:
    """The seed study's qualitative claims against the intervals."""
    if not identified:
        return {"alpha < 1": "not identified", "beta > 0": "not identified"}
    a_lo, a_hi = ci["alpha"]
    b_lo, b_hi = ci["beta"]
    return {
        "alpha < 1": "holds" if a_hi < 1 else "contradicted" if a_lo >= 1 else "undetermined",
        "beta > 0": "holds" if b_lo > 0 else "contradicted" if b_hi <= 0 else "undetermined",
    }


class _Problem:
    """Least squares in log loss for one language, one replicate at a time.

    theta = (log k', alpha, beta) with D_T = e^log_k' (D_F / D_ref)^alpha (N / N_ref)^beta: centring D and N
    at their geometric means keeps k' from trading off against the exponents during the fit.
    """

    def __init__(self, d: np.ndarray, n: np.ndarray, curves: list[ScratchCurve], loss: np.ndarray) -> None:
        self.d, self.n, self.log_loss = d, n, np.log(loss)
        # Cells grouped by their size's curve: one vectorised curve evaluation per size and residual call.
        self.groups = [(c, np.array([x is c for x in curves])) for c in {id(c): c for c in curves}.values()]
        self.d_ref, self.n_ref = float(np.exp(np.log(d).mean())), float(np.exp(np.log(n).mean()))
        self.ld, self.ln = np.log(d / self.d_ref), np.log(n / self.n_ref)
        lk = math.log(self.d_ref)
        self.lower = np.array([lk - LOG_K_SPAN, ALPHA_BOUNDS[0], BETA_BOUNDS[0]])
        self.upper = np.array([lk + LOG_K_SPAN, ALPHA_BOUNDS[1], BETA_BOUNDS[1]])

    def starts(self) -> list[np.ndarray]:
        lk = math.log(self.d_ref)
        return [
            np.array([lk + s, a, b])
            for s in (-3.0, 0.0, 2.0)
            for a in (0.1, 0.4, 0.8)
            for b in (-0.3, 0.2, 0.7)
        ]

    def residuals(self, theta: np.ndarray, r: int) -> np.ndarray:
        log_dt = theta[0] + theta[1] * self.ld + theta[2] * self.ln
        d_e = np.log(self.d + np.exp(np.minimum(log_dt, 700.0)))
        pred = np.empty_like(d_e)
        for curve, mask in self.groups:
            pred[mask] = curve.log_loss_at(d_e[mask], r)
        return self.log_loss[:, r] - pred

    def jacobian(self, theta: np.ndarray, r: int) -> np.ndarray:
        """d residuals / d theta, exact for the tabulated curve (the fit's cost was mostly finite differences)."""
        log_dt = theta[0] + theta[1] * self.ld + theta[2] * self.ln
        dt = np.exp(np.minimum(log_dt, 700.0))
        d_e = np.log(self.d + dt)
        slope = np.empty_like(d_e)
        for curve, mask in self.groups:
            slope[mask] = curve.slope_at(d_e[mask], r)
        # d log D_E / d log D_T = D_T / (D_F + D_T); zero where log D_T is clipped.
        g = -slope * np.where(log_dt < 700.0, dt / (self.d + dt), 0.0)
        return np.stack([g, g * self.ld, g * self.ln], axis=1)

    def fit(self, r: int, starts: list[np.ndarray]) -> tuple[np.ndarray, bool, np.ndarray]:
        """Best of the starts for replicate r: (theta, converged inside the bounds, residuals)."""
        best = None
        for x0 in starts:
            x0 = np.clip(x0, self.lower + 1e-6, self.upper - 1e-6)
            res = least_squares(
                self.residuals,
                x0,
                jac=self.jacobian,
                bounds=(self.lower, self.upper),
                args=(r,),
                x_scale=[2, 0.3, 0.3],
            )
            if best is None or res.cost < best.cost:
                best = res
        assert best is not None
        margin = np.minimum(best.x - self.lower, self.upper - best.x)
        inside = bool(best.success) and bool((margin > 1e-3).all())
        return best.x, inside, best.fun

    def params(self, theta: np.ndarray, cpt: float, basis: str) -> np.ndarray:
        """theta [..., 3] -> (k tokens, k chars, alpha, beta) [..., 4]."""
        th = np.atleast_2d(theta)
        if th.size == 0:
            return np.empty((0, 4))
        alpha, beta = th[:, 1], th[:, 2]
        with np.errstate(over="ignore"):
            k = np.exp(th[:, 0]) * self.d_ref**-alpha * self.n_ref**-beta  # in the basis' D unit
        # D_T in characters = cpt D_T in tokens, D_F likewise: k_chars = k_tokens cpt^(1 - alpha).
        k_tok, k_chr = (k, k * cpt ** (1 - alpha)) if basis == "tokens" else (k * cpt ** (alpha - 1), k)
        out = np.stack([k_tok, k_chr, alpha, beta], axis=1)
        return out[0] if np.ndim(theta) == 1 else out
