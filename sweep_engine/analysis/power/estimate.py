"""Many worlds: the answers of every world on every grid (in parallel), and the probabilities they give.

A probability is the share of worlds in which the analysis resolves a question; its Monte Carlo standard error
is the SD of the per-world shares over sqrt(worlds) (worlds are independent; the cells of one world are not).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from sweep_engine.analysis.power.prior import Prior
from sweep_engine.analysis.power.questions import Outcome
from sweep_engine.analysis.power.simulate import MAX_DOCS, Asked, world_outcomes
from sweep_engine.analysis.synthetic import Grid


def default_jobs() -> int:
    """Worker processes: the CPUs this process may use (2 on the project's machines)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_worlds(
    prior: Prior,
    seed: int,
    worlds: int,
    base: Grid,
    grids: list[Grid],
    asked: Asked,
    bootstrap: int,
    jobs: int,
    most_docs: int | None = MAX_DOCS,
    first: int = 0,
) -> list[list[Outcome]]:
    """outcomes[g][w]: the answers of world `first + w` on grid g, worlds spread over `jobs` processes."""
    work = partial(
        world_outcomes,
        prior,
        seed,
        base=base,
        grids=grids,
        asked=asked,
        bootstrap=bootstrap,
        most_docs=most_docs,
    )
    ids = range(first, first + worlds)
    if jobs <= 1 or worlds < 2:
        per_world = [work(w=w) for w in ids]
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(method)) as pool:
            per_world = list(pool.map(_call, [(work, w) for w in ids]))
    return [[per_world[w][g] for w in range(worlds)] for g in range(len(grids))]


def _call(job: tuple[partial[list[Outcome]], int]) -> list[Outcome]:
    work, w = job
    return work(w=w)


def per_world(outcomes: list[Outcome], question: str, asked: Asked) -> np.ndarray:
    """Each world's headline share for a question: D_T > 0 resolved over the cells at the smallest D_F; the
    ordering resolved over sizes; the law identified with alpha and beta within the width, over languages."""
    smallest = min(asked.d_f)
    vals = []
    for o in outcomes:
        if question == "d_t":
            xs = [v == 1 for (_, _, d), v in o.d_t.items() if d == smallest]
        elif question == "order":
            xs = list(o.order.values())
        else:
            xs = [all(v) for v in o.law.values()]
        vals.append(float(np.mean(xs)) if xs else np.nan)
    return np.array(vals)


@dataclass
class Probabilities:
    """Per question, the probability of resolving it (p) with its Monte Carlo SE, over `worlds` worlds."""

    worlds: int
    d_t: pd.DataFrame  # language, size, n_params, d_f, p, wrong, se
    d_t_by_d_f: pd.DataFrame  # d_f, p, se
    order: pd.DataFrame  # size, n_params, p, se (empty: one language)
    law: pd.DataFrame  # language, identified, alpha, beta, both, se
    headline: dict[str, tuple[float, float]]  # question -> (p, se)
    noise_unknown: float = 0.0  # share of worlds whose analysis had no run-to-run noise estimate


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def summarise(outcomes: list[Outcome], asked: Asked) -> Probabilities:
    """The probabilities of one grid's answers over its worlds."""
    w = len(outcomes)
    rows = []
    for key in sorted(asked.cells, key=lambda k: (k[0], asked.sizes[k[1]], k[2])):
        v = np.array([o.d_t.get(key, 0) for o in outcomes]) if "d_t" in asked.questions else np.zeros(0)
        if v.size:
            p, se = _mean_se(v == 1)
            lang, size, d_f = key
            rows.append(
                {
                    "language": lang,
                    "size": size,
                    "n_params": asked.sizes[size],
                    "d_f": d_f,
                    "p": p,
                    "wrong": float(np.mean(v == -1)),
                    "se": se,
                }  # fmt: skip
            )
    d_t = pd.DataFrame(rows)
    by_d_f = []
    for d_f in asked.d_f if not d_t.empty else ():
        share = [np.mean([o.d_t.get(k, 0) == 1 for k in asked.cells if k[2] == d_f]) for o in outcomes]
        p, se = _mean_se(np.array(share))
        by_d_f.append({"d_f": d_f, "p": p, "se": se})
    order = []
    if outcomes and outcomes[0].order:
        for size, n in asked.sizes.items():
            p, se = _mean_se(np.array([o.order.get(size, False) for o in outcomes], dtype=float))
            order.append({"size": size, "n_params": n, "p": p, "se": se})
    law = []
    if "law" in asked.questions:
        for lang in asked.languages:
            v = np.array([o.law.get(lang, (False, False, False)) for o in outcomes], dtype=float)
            p, se = _mean_se(np.asarray(v.all(axis=1), dtype=float))
            law.append(
                {
                    "language": lang,
                    "identified": float(v[:, 0].mean()),
                    "alpha": float(v[:, 1].mean()),
                    "beta": float(v[:, 2].mean()),
                    "both": p,
                    "se": se,
                }  # fmt: skip
            )
    headline = {}
    for q in asked.questions:
        if q == "order" and not order:
            continue
        headline[q] = _mean_se(per_world(outcomes, q, asked))
    unknown = float(np.mean([o.noise_unknown for o in outcomes])) if outcomes else 0.0
    return Probabilities(
        w, d_t, pd.DataFrame(by_d_f), pd.DataFrame(order), pd.DataFrame(law), headline, unknown
    )
