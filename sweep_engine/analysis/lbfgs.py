"""A batched L-BFGS: thousands of independent small problems (starts, bootstrap resamples) stepped together.

A plain scipy loop pays Python and line-search overhead once per start; here every iteration evaluates all
problems still running in one tensor expression. Each problem keeps its own curvature history, step length
(backtracking Armijo line search) and stopping test, of the form of scipy's L-BFGS-B: relative decrease of f
below `ftol`, or largest gradient component below `gtol` (tighter defaults than scipy's). Problems that finish drop out of the batch. Bounds are
handled by projection, which is enough for the few box constraints the laws use (exponents kept positive).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# make(idx [S']) -> fun(x [S', P]) -> f [S']: the objective of problems `idx`, rows independent of each other.
# `make` is called when the working set changes, so it can gather the data of those problems once.
Objective = Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class BatchResult:
    """Final point, value and status of every problem."""

    x: torch.Tensor  # [S, P]
    f: torch.Tensor  # [S]
    converged: (
        torch.Tensor
    )  # [S] bool: met ftol, gtol or xtol (not the iteration cap, not a failed line search)
    n_iter: torch.Tensor  # [S]


def _value_and_grad(
    fun: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        f = fun(x)
        (g,) = torch.autograd.grad(f.sum(), x)
    return f.detach(), g


@dataclass
class _Working:
    """State of the problems still running, packed so that an iteration needs no gathers."""

    ids: torch.Tensor
    x: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    s: torch.Tensor  # [m, S, P] curvature pairs (rho = 0 marks an empty or rejected slot)
    y: torch.Tensor
    rho: torch.Tensor  # [m, S]
    gamma: torch.Tensor
    fresh: torch.Tensor  # no curvature pair yet: take a scaled gradient step
    f_ref: torch.Tensor  # f at the start of the current stall window

    def keep(self, mask: torch.Tensor) -> _Working:
        return _Working(
            self.ids[mask], self.x[mask], self.f[mask], self.g[mask], self.s[:, mask], self.y[:, mask],
            self.rho[:, mask], self.gamma[mask], self.fresh[mask], self.f_ref[mask],
        )  # fmt: skip


def minimize_batched(
    make: Objective,
    x0: torch.Tensor,
    *,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
    max_iter: int = 1000,
    history: int = 6,
    ftol: float = 1e-12,
    gtol: float = 1e-9,
    xtol: float = 1e-9,
    stall: tuple[int, float] = (20, 1e-9),
    groups: torch.Tensor | None = None,
    prune: tuple[int, float] = (50, 2.0),
    max_backtracks: int = 20,
) -> BatchResult:
    """Minimise S independent objectives from the rows of `x0`.

    Args:
        make: builds the objective of a subset of problems; rows are independent so that one backward pass
            of the sum gives every problem's gradient.
        x0: starting points [S, P] (float64).
        lower, upper: optional bounds [P] (use -inf / inf for free coordinates); steps are projected.
        max_iter: iteration cap per problem.
        history: number of curvature pairs kept (scipy keeps 10; the laws have at most 5 parameters).
        ftol: stop when (f_old - f_new) <= ftol * max(|f_old|, |f_new|): scipy's L-BFGS-B rule without its
            floor of 1, so that the scale of the objective does not decide when a fit stops.
        gtol: stop when the largest gradient component is below this.
        xtol: stop when no coordinate moved by more than xtol * (1 + |x|): at a kink of the Huber loss
            (nearly L1) L-BFGS zigzags with ever shorter steps and the two rules above may never hold.
        stall: (k, tol): stop when f fell by less than tol * |f| over the last k iterations. Along a flat
            valley (A against alpha in Chinchilla's law, E -> 0 in a power law) L-BFGS can crawl for hundreds of
            iterations for a change no percentile or RMSD can see.
        groups: [S] group id per problem (starts of one fit, or of one bootstrap resample); with it, `prune`
            applies.
        prune: (k, factor): from iteration k on, every 10 iterations, stop the problems whose f exceeds
            factor x the best f in their group (f >= 0). A start crawling along a valley at hundreds of times the
            best value found from another start would hold the whole batch to the iteration cap.
        max_backtracks: step reductions (quadratic interpolation, 0.1x to 0.5x each) before a problem is
            declared stuck.

    Returns:
        BatchResult with the final point of every problem.
    """
    n_prob, n_par = x0.shape
    x_out = _project(x0.clone().to(torch.float64), lower, upper)
    ids = torch.arange(n_prob)
    fun = make(ids)
    f0, g0 = _value_and_grad(fun, x_out)
    f_out = f0.clone()
    converged = torch.zeros(n_prob, dtype=torch.bool)
    n_iter = torch.zeros(n_prob, dtype=torch.long)
    ok0 = torch.isfinite(f0) & torch.isfinite(g0).all(-1)
    zeros = torch.zeros(history, n_prob, n_par, dtype=torch.float64)
    w = _Working(
        ids, x_out.clone(), f0, g0, zeros, zeros.clone(), torch.zeros(history, n_prob, dtype=torch.float64),
        torch.ones(n_prob, dtype=torch.float64), torch.ones(n_prob, dtype=torch.bool), f0.clone(),
    ).keep(ok0)  # fmt: skip
    fun = make(w.ids)

    for it in range(max_iter):
        if w.ids.numel() == 0:
            break
        d = -_two_loop(w.g, w.s, w.y, w.rho, w.gamma, it, history)
        gd = (w.g * d).sum(-1)
        bad = ~(gd < 0) | ~torch.isfinite(gd)
        d = torch.where(bad[:, None], -w.g, d)
        # First step of a problem (or after a reset): scipy's 1 / ||g|| keeps it from leaping into overflow.
        first = w.fresh | bad
        step = torch.where(
            first, (1.0 / w.g.norm(dim=-1).clamp_min(1e-300)).clamp(max=1.0), torch.ones_like(w.f)
        )
        x_new, ok = _armijo(make, fun, w, d, step, lower, upper, max_backtracks)
        n_iter[w.ids] += 1

        fm, gm = _value_and_grad(fun, x_new)  # problems whose search failed stay where they were
        s, yv = x_new - w.x, gm - w.g
        sy, yy = (s * yv).sum(-1), (yv * yv).sum(-1)
        good = ok & (sy > 1e-10 * yy.clamp_min(1e-300))
        slot = it % history
        w.s[slot] = torch.where(good[:, None], s, 0.0)
        w.y[slot] = torch.where(good[:, None], yv, 0.0)
        w.rho[slot] = torch.where(good, 1.0 / torch.where(good, sy, 1.0), 0.0)
        w.gamma = torch.where(good, sy / yy.clamp_min(1e-300), w.gamma)
        w.fresh = w.fresh & ~good
        f_old = w.f
        w.x, w.f, w.g = x_new, fm, gm

        small_df = (f_old - fm) <= ftol * torch.maximum(f_old.abs(), fm.abs()).clamp_min(1e-300)
        small_dx = (s.abs() <= xtol * (1 + x_new.abs())).all(-1)
        stalled = torch.zeros_like(ok)
        if (it + 1) % stall[0] == 0:
            stalled = (w.f_ref - fm) <= stall[1] * fm.abs()
            w.f_ref = fm.clone()
        done_ok = ok & (small_df | small_dx | stalled | (gm.abs().amax(-1) <= gtol)) & torch.isfinite(fm)
        # A failed line search along a descent direction: as far as this problem can go.
        stuck = ~ok & ((gm.abs().amax(-1) <= 1e3 * gtol) | (fm.abs() < 1e-12))
        done = done_ok | ~ok | ~torch.isfinite(fm)
        if groups is not None and it >= prune[0] and it % 10 == 0:
            best = torch.full((int(groups.max()) + 1,), torch.inf, dtype=torch.float64)
            f_all = f_out.clone()
            f_all[w.ids] = fm
            best = best.scatter_reduce(
                0, groups, torch.where(torch.isfinite(f_all), f_all, torch.inf), "amin"
            )
            done = done | (fm > prune[1] * best[groups[w.ids]] + 1e-12)
        if done.any():
            converged[w.ids[done]] = (done_ok | stuck)[done]
            x_out[w.ids[done]], f_out[w.ids[done]] = w.x[done], w.f[done]
            w = w.keep(~done)
            fun = make(w.ids)
    x_out[w.ids], f_out[w.ids] = w.x, w.f
    return BatchResult(x=x_out, f=f_out, converged=converged, n_iter=n_iter)


def _project(x: torch.Tensor, lower: torch.Tensor | None, upper: torch.Tensor | None) -> torch.Tensor:
    if lower is not None:
        x = torch.maximum(x, lower)
    if upper is not None:
        x = torch.minimum(x, upper)
    return x


def _two_loop(
    g: torch.Tensor, s: torch.Tensor, y: torch.Tensor, rho: torch.Tensor, gamma: torch.Tensor, it: int, m: int
) -> torch.Tensor:
    """H g by the L-BFGS two-loop recursion over the circular history (empty slots have rho = 0)."""
    count = min(it, m)
    order = [(it - 1 - j) % m for j in range(count)]  # newest first
    q = g.clone()
    alphas = []
    for j in order:
        a = rho[j] * (s[j] * q).sum(-1)
        q = q - a[:, None] * y[j]
        alphas.append(a)
    r = gamma[:, None] * q
    for j, a in zip(reversed(order), reversed(alphas), strict=True):
        b = rho[j] * (y[j] * r).sum(-1)
        r = r + s[j] * (a - b)[:, None]
    return r


def _armijo(
    make: Objective,
    fun: Callable[[torch.Tensor], torch.Tensor],
    w: _Working,
    d: torch.Tensor,
    step: torch.Tensor,
    lower: torch.Tensor | None,
    upper: torch.Tensor | None,
    max_backtracks: int,
    c1: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backtracking line search for every problem at once: (new points, which found a decrease).

    The first trial (usually accepted) evaluates the whole working set without gathers; backtracking then
    runs on the shrinking subset still searching.
    """
    x_new = w.x.clone()
    ok = torch.zeros(len(w.ids), dtype=torch.bool)
    t = step.clone()
    pending = torch.arange(len(w.ids))
    sub = fun
    with torch.no_grad():
        for k in range(max_backtracks):
            x0, g0, f0 = (w.x, w.g, w.f) if k == 0 else (w.x[pending], w.g[pending], w.f[pending])
            xt = _project(x0 + t[pending, None] * d[pending], lower, upper)
            ft = sub(xt)
            # Armijo on the projected step: predicted decrease g . (x_t - x), which is t g . d without bounds.
            pred = (g0 * (xt - x0)).sum(-1)
            acc = torch.isfinite(ft) & (ft <= f0 + c1 * pred) & (ft < f0)
            got = pending[acc]
            x_new[got], ok[got] = xt[acc], True
            # Next trial at the minimum of the quadratic through f0, the slope and f(t), kept within
            # [0.1 t, 0.5 t]: far fewer trials than halving when the first step overshoots by orders.
            tp, gdp = t[pending], (g0 * d[pending]).sum(-1)
            curv = ft - f0 - gdp * tp
            t_quad = torch.where(
                torch.isfinite(ft) & (curv > 0), -gdp * tp * tp / (2 * curv.clamp_min(1e-300)), 0.1 * tp
            )
            keep = ~acc
            pending = pending[keep]
            if pending.numel() == 0:
                break
            t[pending] = torch.minimum(torch.maximum(t_quad[keep], 0.1 * tp[keep]), 0.5 * tp[keep])
            sub = make(w.ids[pending])
    return x_new, ok
