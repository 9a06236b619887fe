"""The scaling laws the engine fits (docs/analysis.md, "Fitting"), each in the log-sum-exp form it is fitted in.

A `Law` predicts log(target) from named inputs as a torch function of a batch of internal parameter vectors
`theta` ([starts, params] -> [starts, points]), so one call evaluates thousands of starts or bootstrap
resamples. Positive constants are optimised as their logs (A = e^a, ...), which keeps them positive and turns
sums of power laws into log-sum-exp terms that stay finite at any start. `params` converts theta to the
published names (chinchilla: E, A, B, alpha, beta).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sweep_engine.errors import FitError

if TYPE_CHECKING:
    import torch

Tensors = Mapping[str, "torch.Tensor"]
Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Law:
    """One law: its inputs, its parameters, how it predicts log(target), and where its fits start.

    Attributes:
        name: the CLI name (chinchilla, kaplan, power, rectified, overtrain, transfer).
        formula: the law in plain text, for reports.
        inputs: input variables, e.g. ("n", "d"); each must be > 0 unless listed in `zero_ok`.
        target: "loss" for losses, "dt" for transferred data.
        theta: internal parameter names, in optimiser order.
        log_theta: for each theta, whether the published parameter is exp(theta) (True) or theta itself.
        names: published parameter names, same order as theta.
        bounds: (low, high) per theta for the optimiser (None = free).
        log_predict: (theta [S, P], inputs {name: [n]}) -> log(target) [S, n].
        starts: (inputs, target) -> start grid [K, P] in theta space.
        zero_ok: inputs that may be 0 (the rectified law's D = 0 is the zero-shot loss).
        delta: default Huber threshold on the log residual for this law's fits.
    """

    name: str
    formula: str
    inputs: tuple[str, ...]
    target: str
    theta: tuple[str, ...]
    log_theta: tuple[bool, ...]
    names: tuple[str, ...]
    bounds: tuple[tuple[float | None, float | None], ...]
    log_predict: Callable[[torch.Tensor, Tensors], torch.Tensor]
    starts: Callable[[Arrays, np.ndarray], np.ndarray]
    zero_ok: tuple[str, ...] = ()
    delta: float = 1e-3  # Hoffmann et al. 2022; nearly L1 on log loss, robust to a few bad runs

    @property
    def n_params(self) -> int:
        return len(self.theta)

    def to_params(self, theta: np.ndarray) -> np.ndarray:
        """Internal parameters [..., P] -> published parameters [..., P]."""
        theta = np.asarray(theta, dtype=float)
        out = theta.copy()
        # A runaway bootstrap resample (log N_c = 800) gives inf, which the callers drop as non-finite; numpy's
        # overflow warning would only be console noise in `analyze` and `demo`.
        with np.errstate(over="ignore"):
            for i, is_log in enumerate(self.log_theta):
                if is_log:
                    out[..., i] = np.exp(theta[..., i])
        return out

    def from_params(self, params: Mapping[str, float]) -> np.ndarray:
        """Published parameters by name -> internal vector [P]."""
        missing = [n for n in self.names if n not in params]
        if missing:
            raise FitError(f"law {self.name}: parameters {missing} missing, need all of {list(self.names)}")
        vals = [float(params[n]) for n in self.names]
        return np.array([math.log(v) if lg else v for v, lg in zip(vals, self.log_theta, strict=True)])

    def predict(self, theta: np.ndarray, inputs: Mapping[str, np.ndarray | float]) -> np.ndarray:
        """The law's target (not its log) at `inputs` for one theta [P] or a batch [S, P]."""
        import torch

        th = np.atleast_2d(np.asarray(theta, dtype=float))
        arrays = {k: np.atleast_1d(np.asarray(inputs[k], dtype=float)) for k in self.inputs}
        size = max(a.size for a in arrays.values())
        ts = {k: torch.as_tensor(np.broadcast_to(a, (size,)).copy()) for k, a in arrays.items()}
        with torch.no_grad():
            out = torch.exp(self.log_predict(torch.as_tensor(th), ts)).numpy()
        return out[0] if np.ndim(theta) == 1 else out


def _lse(*terms: torch.Tensor) -> torch.Tensor:
    """log(sum(exp(terms))), broadcasting. Chained logaddexp: torch's logsumexp over a stacked dimension is
    ten times slower on CPU at the [4500 starts x 240 points] size of the Chinchilla grid."""
    import torch

    out = terms[0]
    for t in terms[1:]:
        out = torch.logaddexp(out, t)
    return out


def torch_log(t: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.log(t)


def _col(theta: torch.Tensor, i: int) -> torch.Tensor:
    return theta[:, i : i + 1]  # [S, 1]: broadcasts against inputs [n]


def _grid(*axes: np.ndarray | list[float]) -> np.ndarray:
    mesh = np.meshgrid(*[np.asarray(a, dtype=float) for a in axes], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=-1)


# ------------------------------------------------------------------------------------------- chinchilla

# The published grid (Hoffmann et al. 2022, as replicated by Besiroglu et al. 2024): 6 x 6 x 5 x 5 x 5 = 4,500.
CHINCHILLA_GRID = _grid(
    np.arange(0, 30, 5),
    np.arange(0, 30, 5),
    np.arange(-1, 1.5, 0.5),
    np.arange(0, 2.5, 0.5),
    np.arange(0, 2.5, 0.5),
)


def _chinchilla(theta: torch.Tensor, x: Tensors) -> torch.Tensor:
    a, b, e, alpha, beta = (_col(theta, i) for i in range(5))
    return _lse(a - alpha * torch_log(x["n"]), b - beta * torch_log(x["d"]), e)


CHINCHILLA = Law(
    name="chinchilla",
    formula="L(N, D) = E + A / N^alpha + B / D^beta",
    inputs=("n", "d"),
    target="loss",
    theta=("a", "b", "e", "alpha", "beta"),
    log_theta=(True, True, True, False, False),
    names=("A", "B", "E", "alpha", "beta"),
    bounds=((None, None),) * 5,
    log_predict=_chinchilla,
    starts=lambda x, y: CHINCHILLA_GRID.copy(),
)

# ---------------------------------------------------------------------------------------------- kaplan


def _kaplan(theta: torch.Tensor, x: Tensors) -> torch.Tensor:
    lnc, ldc, a_n, a_d = (_col(theta, i) for i in range(4))
    return a_d * _lse((a_n / a_d) * (lnc - torch_log(x["n"])), ldc - torch_log(x["d"]))


def _kaplan_starts(x: Arrays, y: np.ndarray) -> np.ndarray:
    # N_c and D_c sit far above the data (Kaplan: 6.4e13, 1.8e13 for N, D ~ 1e6..1e10): offsets in e-folds.
    ln, ld = np.log(x["n"]).max(), np.log(x["d"]).max()
    return _grid(
        ln + np.array([2.0, 8.0, 16.0, 30.0]),
        ld + np.array([0.0, 4.0, 10.0, 20.0]),
        [0.03, 0.1, 0.3],
        [0.05, 0.15, 0.4],
    )


KAPLAN = Law(
    name="kaplan",
    formula="L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D",
    inputs=("n", "d"),
    target="loss",
    theta=("log_N_c", "log_D_c", "alpha_N", "alpha_D"),
    log_theta=(True, True, False, False),
    names=("N_c", "D_c", "alpha_N", "alpha_D"),
    bounds=((None, None), (None, None), (1e-4, 5.0), (1e-3, 5.0)),
    log_predict=_kaplan,
    starts=_kaplan_starts,
)

# ----------------------------------------------------------------------------------------------- power


def _power(theta: torch.Tensor, x: Tensors) -> torch.Tensor:
    e, b, beta = (_col(theta, i) for i in range(3))
    return _lse(e, b - beta * torch_log(x["x"]))


def _power_starts(x: Arrays, y: np.ndarray) -> np.ndarray:
    lx = np.log(x["x"])
    rows = []
    for beta in (0.05, 0.15, 0.3, 0.6, 1.0, 2.0):
        for frac in (0.1, 0.5, 0.8, 0.97):  # E as a fraction of the smallest loss
            e_val = frac * y.min()
            # B so that the law passes the first point of the data: B = (y_max - E) x_min^beta.
            gap = max(y.max() - e_val, 1e-3 * y.max())
            for shift in (-1.0, 0.0, 1.0):
                rows.append((math.log(e_val), math.log(gap) + beta * lx.min() + shift, beta))
    return np.array(rows)


POWER = Law(
    name="power",
    formula="L(x) = E + B / x^beta",
    inputs=("x",),
    target="loss",
    theta=("e", "b", "beta"),
    log_theta=(True, True, False),
    names=("E", "B", "beta"),
    bounds=((None, None), (None, None), (1e-4, 10.0)),
    log_predict=_power,
    starts=_power_starts,
)

# ------------------------------------------------------------------------------------------- rectified


def _rectified(theta: torch.Tensor, x: Tensors) -> torch.Tensor:
    import torch

    b, dl, beta, e = (_col(theta, i) for i in range(4))
    d = x["d"]
    pos = d > 0
    # D = 0 (zero-shot) makes D^beta = 0, i.e. a -inf term; the safe log keeps its gradient finite.
    log_d = torch.log(torch.where(pos, d, torch.ones_like(d)))
    d_term = torch.where(pos, beta * log_d, torch.full_like(beta * log_d, -math.inf))
    return _lse(b - _lse(dl, d_term), e)


def _rectified_starts(x: Arrays, y: np.ndarray) -> np.ndarray:
    d = x["d"][x["d"] > 0]
    ld = np.log(d) if d.size else np.array([0.0])
    rows = []
    for beta in (0.2, 0.5, 1.0):
        # D_l ~ D^beta at the knee of the curve, which may lie anywhere in (or before) the data range.
        for q in (-0.5, 0.0, 0.25, 0.5, 0.75, 1.0):
            dl = beta * (ld.min() + q * (ld.max() - ld.min()))
            for frac in (0.2, 0.6, 0.9):
                e_val = frac * y.min()
                gap = max(y.max() - e_val, 1e-3 * y.max())
                rows.append((dl + math.log(gap), dl, beta, math.log(e_val)))
    return np.array(rows)


RECTIFIED = Law(
    name="rectified",
    formula="L(D) = B / (D_l + D^beta) + E",
    inputs=("d",),
    target="loss",
    theta=("b", "log_D_l", "beta", "e"),
    log_theta=(True, True, False, True),
    names=("B", "D_l", "beta", "E"),
    bounds=((None, None), (None, None), (1e-4, 10.0), (None, None)),
    log_predict=_rectified,
    starts=_rectified_starts,
    zero_ok=("d",),
    # Lin et al. fit least squares on log loss and report its RMSD. On their 90 curves, least squares (Huber
    # with delta 1: quadratic for every residual) is at or below their published RMSD for all 90; Huber 1e-3
    # (nearly L1, the Chinchilla choice) for only 9, since L1 does not minimise a root mean square.
    delta=1.0,
)

# ------------------------------------------------------------------------------------------- overtrain


def _overtrain(theta: torch.Tensor, x: Tensors) -> torch.Tensor:
    e, la, lb, eta = (_col(theta, i) for i in range(4))
    log_m = torch_log(x["d"]) - torch_log(x["n"])  # M = D / N tokens per parameter
    log_c = math.log(6.0) + torch_log(x["n"]) + torch_log(x["d"])  # C = 6 N D
    return _lse(e, la + eta * log_m - eta * log_c, lb - eta * log_m - eta * log_c)


def _overtrain_starts(x: Arrays, y: np.ndarray) -> np.ndarray:
    log_c_min = float(np.log(6.0 * x["n"] * x["d"]).min())
    rows = []
    for eta in (0.05, 0.1, 0.2, 0.3, 0.5):
        for frac in (0.2, 0.6, 0.9):
            e_val = frac * y.min()
            base = math.log(max(y.max() - e_val, 1e-3 * y.max())) + eta * log_c_min - math.log(2.0)
            for da in (-4.0, -1.0, 2.0):
                for db in (-4.0, -1.0, 2.0):
                    rows.append((math.log(e_val), base + da, base + db, eta))
    return np.array(rows)


OVERTRAIN = Law(
    name="overtrain",
    formula="L(C, M) = E + (a M^eta + b M^-eta) C^-eta, C = 6 N D, M = D / N",
    inputs=("n", "d"),
    target="loss",
    theta=("e", "log_a", "log_b", "eta"),
    log_theta=(True, True, True, False),
    names=("E", "a", "b", "eta"),
    bounds=((None, None), (None, None), (None, None), (1e-4, 5.0)),
    log_predict=_overtrain,
    starts=_overtrain_starts,
)

# -------------------------------------------------------------------------------------------- transfer


def _transfer(theta: torch.Tensor, x: Tensors) -> torch.Tensor:
    lk, alpha, beta = (_col(theta, i) for i in range(3))
    return lk + alpha * torch_log(x["d_f"]) + beta * torch_log(x["n"])


def _transfer_starts(x: Arrays, y: np.ndarray) -> np.ndarray:
    ldf, ln, ly = np.log(x["d_f"]), np.log(x["n"]), np.log(y)
    rows = []
    for alpha in (-0.5, 0.0, 0.2, 0.5, 1.0):
        for beta in (-0.5, 0.0, 0.4, 1.0):
            # k through the centre of the data for this (alpha, beta): the law is linear in log space.
            rows.append((float(np.median(ly - alpha * ldf - beta * ln)), alpha, beta))
    return np.array(rows)


TRANSFER = Law(
    name="transfer",
    formula="D_T = k D_F^alpha N^beta",
    inputs=("d_f", "n"),
    target="dt",
    theta=("log_k", "alpha", "beta"),
    log_theta=(True, False, False),
    names=("k", "alpha", "beta"),
    bounds=((None, None),) * 3,
    log_predict=_transfer,
    starts=_transfer_starts,
)

LAWS: dict[str, Law] = {law.name: law for law in (CHINCHILLA, KAPLAN, POWER, RECTIFIED, OVERTRAIN, TRANSFER)}


def get_law(name: str) -> Law:
    """The law called `name`.

    Raises:
        FitError: no law has that name.
    """
    try:
        return LAWS[name]
    except KeyError:
        raise FitError(f"law must be one of {sorted(LAWS)}, got {name!r}") from None


def data_for_loss(law: Law, theta: np.ndarray, n: float, loss: float) -> float:
    """D at which a joint law (kaplan or chinchilla) reaches `loss` at size `n`; inf where it never does.

    Both joint laws invert in closed form in D: that is what the allocation table and the regime labels use.
    """
    p = dict(zip(law.names, law.to_params(theta), strict=True))
    if law.name == "kaplan":
        rest = loss ** (1.0 / p["alpha_D"]) - (p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"])
        return float(p["D_c"] / rest) if rest > 0 else math.inf
    if law.name == "chinchilla":
        rest = loss - p["E"] - p["A"] / n ** p["alpha"]
        return float((p["B"] / rest) ** (1.0 / p["beta"])) if rest > 0 else math.inf
    raise FitError(f"law {law.name} has no closed-form inverse in D; use kaplan or chinchilla")
