"""Is `plan --power` calibrated? Its predicted probabilities against observed frequencies on fresh worlds.

Method: the prediction is what `plan --power` computes, N worlds through the power path (at most MAX_DOCS
simulated documents per split, BOOTSTRAP replicates, no joint fits). The observation is M fresh worlds from the
same prior, under another seed, each analysed as `sweep-engine analyze` analyses a ledger (every document
simulated, the report's 200 replicates; the joint fits' effect is measured apart, benchmarks/power_shortcuts.py):
its frequency of resolving each question is what a user running M such sweeps would see. Both are compared per
question group, each a share pooled over the group's instances, with its Monte Carlo SE (the SD of the
per-world shares over sqrt(worlds): worlds are independent, the cells of one world are not):

- D_T > 0 at each D_F (pooled over languages and sizes), and over every cell;
- the ordering at the smallest D_F (pooled over sizes);
- the law identified at all, and identified with alpha and beta within the width (pooled over languages).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sweep_engine.analysis.power.estimate import run_worlds
from sweep_engine.analysis.power.prior import Prior
from sweep_engine.analysis.power.questions import Outcome
from sweep_engine.analysis.power.simulate import BOOTSTRAP, MAX_DOCS, Asked
from sweep_engine.analysis.synthetic import Grid

REPORT_BOOTSTRAP = 200  # the laptop spaces' `analysis.bootstrap`, what `analyze` uses
TOLERANCE = 0.10  # predicted within 10 points of observed


def group_shares(outcomes: list[Outcome], asked: Asked) -> dict[str, np.ndarray]:
    """Per question group, each world's share of resolved instances (see the module docstring)."""
    groups: dict[str, list[float]] = {}

    def add(name: str, values: list[bool]) -> None:
        if values:
            groups.setdefault(name, []).append(float(np.mean(values)))

    for o in outcomes:
        if o.d_t:
            for d_f in asked.d_f:
                add(f"D_T > 0 at D_F {d_f:,.0f}", [v == 1 for k, v in o.d_t.items() if k[2] == d_f])
            add("D_T > 0, every cell", [v == 1 for v in o.d_t.values()])
        if o.order:
            add("ordering at the smallest D_F", list(o.order.values()))
        if o.law:
            add("law identified", [v[0] for v in o.law.values()])
            add("law identified, alpha and beta within width", [all(v) for v in o.law.values()])
    return {k: np.array(v) for k, v in groups.items()}


def predicted(
    prior: Prior, grid: Grid, asked: Asked, seed: int, worlds: range, jobs: int
) -> dict[str, np.ndarray]:
    """Per-world shares of worlds `worlds` through the power path."""
    (out,) = run_worlds(
        prior, seed, len(worlds), grid, [grid], asked, BOOTSTRAP, jobs, MAX_DOCS, worlds.start
    )
    return group_shares(out, asked)


def observed(
    prior: Prior, grid: Grid, asked: Asked, seed: int, worlds: range, jobs: int
) -> dict[str, np.ndarray]:
    """Per-world shares of worlds `worlds` analysed as `analyze` would (every document, 200 replicates)."""
    (out,) = run_worlds(
        prior, seed, len(worlds), grid, [grid], asked, REPORT_BOOTSTRAP, jobs, None, worlds.start
    )
    return group_shares(out, asked)


def merge(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The shares of two batches of worlds together."""
    return {k: np.concatenate([a.get(k, np.zeros(0)), b.get(k, np.zeros(0))]) for k in {*a, *b}}


def compare(pred: dict[str, np.ndarray], obs: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per question group: predicted and observed shares, their SEs, the difference and its SE."""
    rows = []
    for name in sorted(pred, key=_order):
        pm, ps = _mean_se(pred[name])
        om, os_ = _mean_se(obs.get(name, np.zeros(0)))
        rows.append(
            {
                "group": name,
                "predicted": pm,
                "predicted_se": ps,
                "predicted_worlds": pred[name].size,
                "observed": om,
                "observed_se": os_,
                "observed_worlds": obs.get(name, np.zeros(0)).size,
                "difference": pm - om,
                "difference_se": math.hypot(ps, os_),
            }  # fmt: skip
        )
    return pd.DataFrame(rows)


def _order(name: str) -> tuple[int, float, str]:
    if name.startswith("D_T > 0 at D_F"):
        return 0, float(name.rsplit(" ", 1)[1].replace(",", "")), name
    return (1 if name.startswith("D_T") else 2 if name.startswith("ordering") else 3), 0.0, name


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    if x.size < 2:
        return (float(x.mean()) if x.size else math.nan), math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def render(table: pd.DataFrame, seed_predicted: int, seed_observed: int) -> str:
    """The comparison as the test and the benchmark print it."""
    n_p, n_o = int(table["predicted_worlds"].max()), int(table["observed_worlds"].max())
    lines = [
        f"predicted: {n_p} worlds, seed {seed_predicted} (the power path); observed: {n_o} fresh worlds, seed "
        f"{seed_observed} (every document, {REPORT_BOOTSTRAP} replicates); shares ± Monte Carlo SE",
        f"{'question group':<46} {'predicted':>15} {'observed':>15} {'difference':>16}",
    ]
    for r in table.itertuples():
        lines.append(
            f"{r.group:<46} {r.predicted:>7.3f} ± {r.predicted_se:.3f} {r.observed:>7.3f} ± {r.observed_se:.3f} "
            f"{r.difference:>+8.3f} ± {r.difference_se:.3f}"
        )
    return "\n".join(lines)
