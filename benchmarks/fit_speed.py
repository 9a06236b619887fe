"""Batched Chinchilla fit (4,500-start grid + 1,000 bootstrap resamples) against a plain per-start scipy loop.

    .venv/bin/python benchmarks/fit_speed.py [--plain-starts 300] [--plain-resamples 40] [--full]

Both sides fit the same 240 points (tests/analysis/reference, the 5 highest-loss points dropped, D = C / (6 N)) with the
same objective (sum of Huber(1e-3) on log loss, log-sum-exp form) and the same L-BFGS-B method. The plain loop is
what the Chinchilla replication ran: scipy's L-BFGS-B from every start, one at a time, numerical gradients.
Running it over all 4,500 starts and 1,000 x 4 bootstrap refits takes a long time on 2 cores, so by default it
runs a seeded random subset and extrapolates per start (said in the output); --full runs everything.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from sweep_engine.analysis.fit import fit_law
from sweep_engine.analysis.laws import CHINCHILLA_GRID, get_law

DATA = Path(__file__).parent.parent / "tests/analysis/reference/chinchilla_svg_extracted_data.csv"


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = pd.read_csv(path).sort_values("loss").iloc[:-5]
    n = df["Model Size"].to_numpy(float)
    return n, df["Training FLOP"].to_numpy(float) / (6 * n), df["loss"].to_numpy(float)


def plain_objective(
    p: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, w: np.ndarray
) -> float:
    a, b, e, alpha, beta = p
    pred = logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
    return float(np.sum(w * huber(1e-3, pred - log_l)))


def plain_fit(
    starts: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, w: np.ndarray
) -> list[tuple[float, np.ndarray]]:
    """The replication's loop: L-BFGS-B from each start in turn (finite-difference gradients); sorted results."""
    out = []
    for x0 in starts:
        res = minimize(plain_objective, x0, args=(log_n, log_d, log_l, w), method="L-BFGS-B")
        out.append((float(res.fun) if np.isfinite(res.fun) else math.inf, res.x))
    return sorted(out, key=lambda r: r[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--plain-starts", type=int, default=300, help="random grid starts the plain loop runs")
    ap.add_argument(
        "--plain-resamples", type=int, default=40, help="bootstrap resamples the plain loop refits"
    )
    ap.add_argument("--full", action="store_true", help="run the plain loop over everything (slow)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    n, d, loss = load(args.data)
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    ones = np.ones_like(loss)
    law = get_law("chinchilla")

    try:  # one BLAS thread for the plain loop too, so both sides get the same share of the machine
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass

    fit_law("power", {"x": n[:20]}, loss[:20], bootstrap=0)  # warm-up: imports, first torch calls
    t0, c0 = time.perf_counter(), time.process_time()
    res = fit_law("chinchilla", {"n": n, "d": d}, loss, bootstrap=args.bootstrap, seed=args.seed)
    batched_s, batched_cpu = time.perf_counter() - t0, time.process_time() - c0
    batched_f = plain_objective(res.theta, log_n, log_d, log_l, ones)

    rng = np.random.default_rng(args.seed)
    grid = CHINCHILLA_GRID
    pick = (
        np.arange(len(grid))
        if args.full
        else rng.choice(len(grid), size=min(args.plain_starts, len(grid)), replace=False)
    )
    t0 = time.perf_counter()
    ends = plain_fit(grid[pick], log_n, log_d, log_l, ones)
    plain_f, plain_x = ends[0]
    grid_s = (time.perf_counter() - t0) / len(pick) * len(grid)

    # Bootstrap as the batched fit does it: each resample refitted from the optimum and the 3 next-best distinct
    # optima of the grid.
    distinct = [plain_x]
    for _, x in ends[1:]:
        if len(distinct) < 4 and all(np.abs(x - y).max() > 1e-3 for y in distinct):
            distinct.append(x)
    starts = np.vstack(distinct)
    n_res = args.bootstrap if args.full else min(args.plain_resamples, args.bootstrap)
    t0 = time.perf_counter()
    for _ in range(n_res):
        w = rng.multinomial(len(loss), np.full(len(loss), 1 / len(loss))).astype(float)
        plain_fit(starts, log_n, log_d, log_l, w)
    boot_s = (time.perf_counter() - t0) / n_res * args.bootstrap
    plain_s = grid_s + boot_s

    p_batched = dict(zip(law.names, law.to_params(res.theta), strict=True))
    p_plain = dict(zip(law.names, law.to_params(plain_x), strict=True))
    print(
        f"data: {len(loss)} points; grid: {len(grid)} starts; bootstrap: {args.bootstrap} resamples x 4 starts"
    )
    print(
        f"batched (this engine): {batched_s:.1f} s wall, {batched_cpu:.1f} s CPU, objective {batched_f:.10g}"
    )
    print("  " + ", ".join(f"{k}={v:.4g}" for k, v in p_batched.items()))
    print("  bootstrap se: " + ", ".join(f"{k}={res.se[k]:.3g}" for k in law.names))
    scope = (
        "all starts"
        if args.full
        else f"{len(pick)} random starts and {n_res} resamples, extrapolated per start"
    )
    print(f"plain scipy loop ({scope}):")
    print(
        f"  grid {grid_s:.0f} s + bootstrap {boot_s:.0f} s = {plain_s:.0f} s, best objective {plain_f:.10g}"
    )
    print("  " + ", ".join(f"{k}={v:.4g}" for k, v in p_plain.items()))
    gap = (plain_f - batched_f) / batched_f
    same = (
        "same optimum"
        if abs(gap) < 1e-6
        else f"batched objective lower by {gap:.2e} (relative)"
        if gap > 0
        else f"plain lower by {-gap:.2e}"
    )
    print(f"optimum: {same}")
    print(f"speed ratio (plain / batched): {plain_s / batched_s:.0f}x")


if __name__ == "__main__":
    main()
