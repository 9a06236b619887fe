"""Robust law fits: Huber loss on log(target), L-BFGS from a full grid of starts, seeded bootstrap intervals.

The method is the Chinchilla replication's (Besiroglu et al. 2024): minimise the SUM over points of
Huber_delta(log prediction - log observation), delta = 1e-3, from every start of a grid, keep the best. All starts
run together in a batched L-BFGS (`lbfgs.py`); the best few are then polished by scipy's L-BFGS-B with exact
gradients. Intervals: resample the points with replacement (seeded), refit each resample from the full-data
optimum and the next-best distinct optima (again batched, all resamples at once), and take percentiles.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweep_engine.analysis.laws import Law, get_law
from sweep_engine.errors import FitError

CI_LEVEL = 95.0  # percentile interval


@dataclass
class FitResult:
    """A fitted law: parameters, bootstrap intervals, fit quality.

    Attributes:
        law: the law's name.
        params: published parameter names -> best-fit values.
        ci: parameter -> (low, high) percentile interval over bootstrap resamples (NaN without bootstrap).
        se: parameter -> bootstrap standard deviation.
        rmsd_log: root mean square of log(prediction) - log(observation) over the points.
        n_points: points fitted.
        converged: the polished optimum met L-BFGS-B's stopping rule (not an iteration cap).
        objective: the Huber sum at the optimum (not divided by delta).
        n_starts: starts in the grid.
        n_bootstrap: resamples.
        boot_converged: fraction of resamples whose refit converged.
        seed: bootstrap seed.
        theta: internal optimum (laws.Law.theta order).
        boot_theta: internal optimum of each resample [R, P].
    """

    law: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    se: dict[str, float]
    rmsd_log: float
    n_points: int
    converged: bool
    objective: float
    n_starts: int
    n_bootstrap: int
    boot_converged: float
    seed: int
    theta: np.ndarray = field(repr=False)
    boot_theta: np.ndarray = field(repr=False)

    @property
    def law_obj(self) -> Law:
        return get_law(self.law)

    def predict(self, **inputs: np.ndarray | float) -> np.ndarray:
        """The fitted law at `inputs` (keyword per law input, e.g. n=..., d=...)."""
        return np.asarray(self.law_obj.predict(self.theta, inputs))

    def band(self, level: float = CI_LEVEL, **inputs: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the prediction over the bootstrap resamples."""
        if self.n_bootstrap == 0:
            pred = self.predict(**inputs)
            return pred, pred
        preds = np.atleast_2d(self.law_obj.predict(self.boot_theta, inputs))
        lo, hi = (100 - level) / 2, 100 - (100 - level) / 2
        return np.nanpercentile(preds, lo, axis=0), np.nanpercentile(preds, hi, axis=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the `fit --json` schema, plus fit diagnostics)."""
        return {
            "law": self.law,
            "params": {k: _num(v) for k, v in self.params.items()},
            "ci": {k: [_num(lo), _num(hi)] for k, (lo, hi) in self.ci.items()},
            "se": {k: _num(v) for k, v in self.se.items()},
            "rmsd_log": _num(self.rmsd_log),
            "n_points": self.n_points,
            "converged": self.converged,
            "objective": _num(self.objective),
            "n_starts": self.n_starts,
            "n_bootstrap": self.n_bootstrap,
            "boot_converged": _num(self.boot_converged),
            "seed": self.seed,
        }


def _num(v: float) -> float | None:
    """JSON has no NaN/inf: they become null."""
    return float(v) if math.isfinite(v) else None


def validate(
    law: Law, inputs: Mapping[str, Any], target: Any, labels: Mapping[str, str] | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Check the data a law is fitted to and return it as float arrays.

    Raises:
        FitError: a missing input, unequal lengths, NaN or infinite values, non-positive values (zero allowed
            only where the law defines it), fewer points than parameters, or an input with one distinct value.
    """
    labels = dict(labels or {})
    name_of = {**{k: k for k in (*law.inputs, "target")}, **labels}
    tname = name_of.get("target", law.target)
    y = np.asarray(target, dtype=float).ravel()
    arrays: dict[str, np.ndarray] = {}
    for key in law.inputs:
        if key not in inputs or inputs[key] is None:
            raise FitError(f"law {law.name} needs input {name_of[key]!r} ({law.formula})")
        arr = np.asarray(inputs[key], dtype=float).ravel()
        if arr.shape != y.shape:
            raise FitError(
                f"{name_of[key]!r} has {arr.size} values but {tname!r} has {y.size}; they must match"
            )
        arrays[key] = arr
    for key, arr in [*arrays.items(), ("target", y)]:
        label = name_of[key] if key != "target" else tname
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise FitError(
                f"{label!r} must be finite, but got {arr[bad[0]]} at row {bad[0]} ({bad.size} rows)"
            )
        zero_ok = key in law.zero_ok
        bad = np.flatnonzero(arr < 0 if zero_ok else arr <= 0)
        if bad.size:
            rule = ">= 0" if zero_ok else "> 0"
            raise FitError(
                f"{label!r} must be {rule} (the law is fitted in log space), but got {arr[bad[0]]:g} at row {bad[0]}"
            )
    if y.size < law.n_params:
        raise FitError(
            f"law {law.name} has {law.n_params} parameters ({', '.join(law.names)}) and needs at least as many "
            f"points, but got {y.size}"
        )
    for key, arr in arrays.items():
        if np.unique(arr).size < 2:
            raise FitError(
                f"{name_of[key]!r} has a single distinct value ({arr[0]:g}); law {law.name} needs at least 2 to fit "
                f"its dependence on it"
            )
    return arrays, y


def fit_law(
    law: Law | str,
    inputs: Mapping[str, Any],
    target: Any,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    delta: float | None = None,
    starts: np.ndarray | None = None,
    labels: Mapping[str, str] | None = None,
    polish: int = 3,
    boot_starts: int = 4,
) -> FitResult:
    """Fit `law` to the points (inputs, target) and bootstrap its parameters.

    Args:
        law: a Law or its name.
        inputs: input name -> values (e.g. {"n": ..., "d": ...}), as in `law.inputs`.
        target: observed loss (or D_T for the transfer law), > 0.
        bootstrap: resamples for the intervals (0 = none).
        seed: seeds the resampling; the same seed gives the same intervals.
        delta: Huber threshold on the log residual (default: the law's, 1e-3 for all but rectified).
        starts: start grid [K, P] in theta space (default: the law's grid).
        labels: input name (or "target") -> column name, for error messages.
        polish: best distinct batched optima refined by scipy L-BFGS-B.
        boot_starts: starts per bootstrap resample (the optimum plus the next-best distinct optima).

    Returns:
        FitResult.

    Raises:
        FitError: bad data (see `validate`), or no start reached a finite objective.
    """
    return fit_groups(
        law,
        [(inputs, target)],
        bootstrap=bootstrap,
        seed=seed,
        delta=delta,
        starts=starts,
        labels=labels,
        polish=polish,
        boot_starts=boot_starts,
    )[0]


def fit_groups(
    law: Law | str,
    groups: Sequence[tuple[Mapping[str, Any], Any]],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    delta: float | None = None,
    starts: np.ndarray | None = None,
    labels: Mapping[str, str] | None = None,
    polish: int = 3,
    boot_starts: int = 4,
    max_iter: int = 400,
    names: Sequence[str] | None = None,
) -> list[FitResult]:
    """Fit one law to several independent groups of points in one batch (e.g. one scratch curve per size).

    Every group's starts and bootstrap resamples run together in the batched L-BFGS, so twenty small fits
    cost about what one does. Each group's result is the one `fit_law` gives it alone (same seed, same
    resamples).

    Args:
        law: a Law or its name.
        groups: (inputs, target) per group.
        bootstrap, seed, delta, starts, labels, polish, boot_starts: as in `fit_law`.
        names: group names for error messages (default: "group <index>" when there are several groups).
        max_iter: iteration cap of the batched L-BFGS for bootstrap refits; the grid gets half of it, as it only
            has to find the basins (the polish finishes the best). Near-L1 losses make L-BFGS crawl at the
            bottom: a few problems would otherwise hold the whole batch for hundreds of iterations.

    Returns:
        One FitResult per group, in order.

    Raises:
        FitError: any group's data is bad (the message names the group's index when there are several).
    """
    law = get_law(law) if isinstance(law, str) else law
    delta = law.delta if delta is None else delta
    data = []
    for i, (inputs, target) in enumerate(groups):
        try:
            data.append(validate(law, inputs, target, labels))
        except FitError as exc:
            name = names[i] if names is not None else f"group {i}" if len(groups) > 1 else None
            raise FitError(f"{name}: {exc}" if name else str(exc)) from None
    with _threads():
        problem = _Problem(law, data, delta)
        grids = [law.starts(x, y) if starts is None else np.asarray(starts, dtype=float) for x, y in data]
        gid = np.concatenate([np.full(len(g), i) for i, g in enumerate(grids)])
        # The grid only has to find the right basin (scipy's default tolerances); the polish goes to the bottom.
        res = problem.solve(np.vstack(grids), gid, None, gid, max_iter=max_iter // 2, ftol=2.2e-9, gtol=1e-5)
        xs, fs = res.x.numpy(), res.f.numpy()
        best: list[tuple[np.ndarray, float, bool]] = []
        others: list[np.ndarray] = []
        for g in range(len(data)):
            rows = np.flatnonzero(gid == g)
            if not np.isfinite(fs[rows]).any():
                raise FitError(f"law {law.name}: no start reached a finite objective; check the data's scale")
            cand = rows[_distinct(xs[rows], fs[rows], max(polish, boot_starts))]
            polished = [problem.polish(g, xs[i]) for i in cand[:polish]]
            best.append(min(polished, key=lambda r: r[1]))
            others.append(xs[cand[1:boot_starts]])
        boot: list[tuple[np.ndarray, float]] = [(np.empty((0, law.n_params)), math.nan)] * len(data)
        if bootstrap > 0:
            boot = _bootstrap(problem, [b[0] for b in best], others, bootstrap, seed, max_iter)
        out = []
        for g, ((_, y), (theta, obj, ok), (boot_theta, boot_ok)) in enumerate(
            zip(data, best, boot, strict=True)
        ):
            resid = problem.log_pred(g, theta) - np.log(y)
            out.append(
                _result(
                    law, theta, obj * delta, ok, boot_theta, boot_ok, resid, len(grids[g]), bootstrap, seed
                )
            )
    return out


def _result(
    law: Law,
    theta: np.ndarray,
    objective: float,
    converged: bool,
    boot_theta: np.ndarray,
    boot_ok: float,
    resid: np.ndarray,
    n_starts: int,
    bootstrap: int,
    seed: int,
) -> FitResult:
    params = law.to_params(theta)
    boot_params = law.to_params(boot_theta) if len(boot_theta) else boot_theta
    ci: dict[str, tuple[float, float]] = {}
    se: dict[str, float] = {}
    for i, name in enumerate(law.names):
        col = boot_params[:, i] if len(boot_params) else np.array([])
        col = col[np.isfinite(col)]
        if col.size:
            lo, hi = np.percentile(col, [(100 - CI_LEVEL) / 2, 100 - (100 - CI_LEVEL) / 2])
            ci[name] = (float(lo), float(hi))
            # A resample far from the optimum (e.g. N_c = e^300 in a flat Kaplan fit) squares to inf: the
            # standard error is then inf, which is the truth; numpy's overflow warning only adds console noise.
            with np.errstate(over="ignore"):
                se[name] = float(np.std(col, ddof=1)) if col.size > 1 else math.nan
        else:
            ci[name], se[name] = (math.nan, math.nan), math.nan
    return FitResult(
        law=law.name,
        params={n: float(v) for n, v in zip(law.names, params, strict=True)},
        ci=ci,
        se=se,
        rmsd_log=float(np.sqrt(np.mean(resid**2))),
        n_points=int(resid.size),
        converged=bool(converged),
        objective=float(objective),
        n_starts=n_starts,
        n_bootstrap=int(bootstrap),
        boot_converged=float(boot_ok),
        seed=seed,
        theta=np.asarray(theta, dtype=float),
        boot_theta=boot_theta,
    )


@contextmanager
def _threads() -> Iterator[None]:
    """Run fits on SWEEP_ENGINE_FIT_THREADS torch threads (default 1).

    The batched tensors are small enough that one thread is nearly as fast as two, and on a shared machine a
    second thread that has to wait for a busy core made the Chinchilla grid ten times slower (83 s, not 8 s).
    """
    import scipy.optimize  # noqa: F401  (threadpoolctl limits only the BLAS libraries loaded so far)
    import torch

    n = int(os.environ.get("SWEEP_ENGINE_FIT_THREADS", "1"))
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    limits = _blas_limits(n)
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(before)


_CONTROLLER: list[Any] = []  # threadpoolctl's controller, built once: scanning loaded libraries is slow


def _blas_limits(n: int) -> AbstractContextManager[object]:
    """Limit OpenBLAS (scipy's L-BFGS-B) to n threads as well: on a busy machine its default threads made a
    4-parameter polish cost 1.5 ms per iteration instead of 0.1 ms."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it, only torch is limited
        return nullcontext()
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=n)


class _Problem:
    """One law on G groups of points, padded to a common length, as torch tensors.

    Problem i of a batch belongs to group gid[i] and weights the points by w[i] (1 for a plain fit, the
    resample counts for a bootstrap refit, 0 for padding).
    """

    def __init__(
        self, law: Law, data: Sequence[tuple[Mapping[str, np.ndarray], np.ndarray]], delta: float
    ) -> None:
        import torch

        self.law, self.delta = law, delta
        self.sizes = [y.size for _, y in data]
        n = max(self.sizes)

        def pad(a: np.ndarray) -> np.ndarray:
            # Padding repeats the first point (a valid input for the law) and gets weight 0.
            return np.concatenate([a, np.full(n - a.size, a[0])])

        self.x = {k: torch.tensor(np.stack([pad(x[k]) for x, _ in data])) for k in law.inputs}
        self.logy = torch.tensor(np.stack([pad(np.log(y)) for _, y in data]))
        self.mask = torch.tensor(np.stack([pad(np.ones(y.size)) * (np.arange(n) < y.size) for _, y in data]))
        lo = [-math.inf if b[0] is None else b[0] for b in law.bounds]
        hi = [math.inf if b[1] is None else b[1] for b in law.bounds]
        self.lower = torch.tensor(lo, dtype=torch.float64)
        self.upper = torch.tensor(hi, dtype=torch.float64)

    def objective(self, theta: Any, x: Any, logy: Any, weights: Any) -> Any:
        """Sum over points of weights * Huber(log prediction - log y) / delta: [S, P] -> [S].

        Divided by delta so that the objective is of order sum |r| rather than 1e-3 of it, which keeps the
        L-BFGS tolerances meaningful whatever delta is.
        """
        import torch

        r = self.law.log_predict(theta, x) - logy
        a = r.abs()
        h = torch.where(a <= self.delta, 0.5 * r * r / self.delta, a - 0.5 * self.delta)
        return (h * weights).sum(-1)

    def solve(
        self, x0: np.ndarray, gid: np.ndarray, weights: np.ndarray | None, fit_id: np.ndarray, **kw: Any
    ) -> Any:
        """Batched L-BFGS from the rows of x0; row i fits group gid[i] with point weights weights[i].

        fit_id[i] names the fit row i is a start of (a group, or one bootstrap resample of a group): starts
        far worse than the best of their fit are pruned.
        """
        import torch

        from sweep_engine.analysis.lbfgs import minimize_batched

        g = torch.as_tensor(gid, dtype=torch.long)
        w = None if weights is None else torch.as_tensor(weights) * self.mask[g]
        single = len(self.sizes) == 1

        def make(idx: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            # Gather each problem's data once per working set; one group broadcasts without copies.
            if single:
                x = {k: v[0] for k, v in self.x.items()}
                logy = self.logy[0]
            else:
                x = {k: v[g[idx]] for k, v in self.x.items()}
                logy = self.logy[g[idx]]
            wt = (self.mask[0] if single else self.mask[g[idx]]) if w is None else w[idx]
            return lambda theta: self.objective(theta, x, logy, wt)

        return minimize_batched(
            make,
            torch.as_tensor(x0, dtype=torch.float64),
            lower=self.lower,
            upper=self.upper,
            groups=torch.as_tensor(fit_id, dtype=torch.long),
            **kw,
        )

    def log_pred(self, group: int, theta: np.ndarray) -> np.ndarray:
        import torch

        x = {k: v[group, : self.sizes[group]] for k, v in self.x.items()}
        with torch.no_grad():
            return self.law.log_predict(torch.as_tensor(theta[None]), x)[0].numpy()

    def polish(self, group: int, theta0: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """scipy L-BFGS-B with exact (autograd) gradients from one start: (theta, objective, converged)."""
        import torch
        from scipy.optimize import minimize

        n = self.sizes[group]
        x = {k: v[group, :n] for k, v in self.x.items()}
        logy, w = self.logy[group, :n], self.mask[group, :n]

        def fg(th: np.ndarray) -> tuple[float, np.ndarray]:
            t = torch.tensor(th[None], dtype=torch.float64, requires_grad=True)
            f = self.objective(t, x, logy, w)[0]
            if not torch.isfinite(f):
                return math.inf, np.zeros_like(th)
            (g,) = torch.autograd.grad(f, t)
            return float(f.detach()), g[0].numpy()

        theta0 = np.clip(theta0, self.lower.numpy(), self.upper.numpy())
        f0, _ = fg(theta0)
        opts = {"maxiter": 5000, "ftol": 1e-13, "gtol": 1e-9}
        res = minimize(fg, theta0, jac=True, method="L-BFGS-B", bounds=self.law.bounds, options=opts)
        if not np.isfinite(res.fun) or res.fun > f0:
            return theta0, f0, False
        # A line-search stop at a kink of the Huber loss is an optimum too, as long as the gradient is small.
        ok = bool(res.success) or float(np.abs(res.jac).max()) < 1e-5
        return np.asarray(res.x), float(res.fun), ok


def _distinct(x: np.ndarray, f: np.ndarray, k: int, tol: float = 1e-3) -> list[int]:
    """Indices of the k best rows by f whose x differ (max abs) by more than tol from each better one."""
    order = [i for i in np.argsort(f) if np.isfinite(f[i])]
    kept: list[int] = []
    for i in order:
        if all(np.abs(x[i] - x[j]).max() > tol for j in kept):
            kept.append(int(i))
        if len(kept) == k:
            break
    return kept


def _bootstrap(
    problem: _Problem,
    thetas: Sequence[np.ndarray],
    others: Sequence[np.ndarray],
    n_boot: int,
    seed: int,
    max_iter: int,
) -> list[tuple[np.ndarray, float]]:
    """Refit n_boot resamples of every group, all in one batch: per group ([R, P] optima, converged share).

    Each group draws its resamples from its own generator seeded by `seed`, so a group's intervals do not
    depend on which other groups share the batch.
    """
    n_max = problem.mask.shape[1]
    x0, gid, weights, k_per = [], [], [], []
    for g, (theta, oth) in enumerate(zip(thetas, others, strict=True)):
        n = problem.sizes[g]
        counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
        counts = np.pad(counts, ((0, 0), (0, n_max - n)))
        starts = np.vstack([theta[None], oth]) if len(oth) else theta[None]
        k = len(starts)
        x0.append(np.tile(starts, (n_boot, 1)))
        gid.append(np.full(n_boot * k, g))
        weights.append(np.repeat(counts, k, axis=0))
        k_per.append(k)
    # Tight tolerances: resample refits are not polished, and the Huber valley is long and flat (A vs alpha).
    fit_id = np.concatenate(gid) * n_boot + np.concatenate([np.repeat(np.arange(n_boot), k) for k in k_per])
    res = problem.solve(
        np.vstack(x0),
        np.concatenate(gid),
        np.vstack(weights),
        fit_id,
        max_iter=max_iter,
        ftol=1e-12,
        gtol=1e-9,
    )
    xs, fs, conv = res.x.numpy(), res.f.numpy(), res.converged.numpy()
    out, pos = [], 0
    for k in k_per:
        m = n_boot * k
        f = fs[pos : pos + m].reshape(n_boot, k)
        f = np.where(np.isfinite(f), f, np.inf)
        pick = f.argmin(axis=1)
        rows = np.arange(n_boot)
        out.append(
            (
                xs[pos : pos + m].reshape(n_boot, k, -1)[rows, pick],
                float(conv[pos : pos + m].reshape(n_boot, k)[rows, pick].mean()),
            )
        )
        pos += m
    return out
