"""`plan --power` output: a compact table in words, or one JSON-ready dict (`--json`)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from sweep_engine.analysis.power.grid import describe
from sweep_engine.analysis.power.run import ChangeResult, PowerReport

QUESTION_NAMES = {
    "d_t": "D_T > 0 at the smallest D_F",
    "order": "language ordering at the smallest D_F",
    "law": "transfer law identified, alpha and beta within the width",
}


def _p(p: float, se: float | None = None) -> str:
    if not math.isfinite(p):
        return "  n/a"
    return f"{p:.2f}" + (f" ± {se:.2f}" if se is not None and math.isfinite(se) else "")


def render(r: PowerReport) -> str:
    """The report as the terminal shows it."""
    pr = r.probabilities
    lines = [
        f"plan --power: {' '.join(str(p) for p in r.planned.paths)}",
        f"grid: {describe(r.planned)}",
        *[f"  assumed: {n}" for n in r.planned.notes],
        "prior: " + r.prior[0],
        *[f"  {line}" for line in r.prior[1:]],
        f"{r.worlds} worlds (seed {r.seed}; --seed {r.seed} replays), {r.bootstrap} bootstrap replicates per "
        f"analysis, {r.jobs} processes, {r.seconds:.0f} s; probabilities ± Monte Carlo SE",
        "",
        "1. D_T > 0 resolved (95% interval above 0), probability per cell:",
    ]
    lines += _d_t_table(pr.d_t, pr.d_t_by_d_f)
    if pr.noise_unknown > 0:
        lines.append(
            f"   in {pr.noise_unknown:.0%} of worlds the analysis had no run-to-run noise estimate (one seed and < 5 "
            f"converged scratch D_F per size): its intervals hold document noise only and can be too narrow"
        )
    lines.append("")
    if "order" in pr.headline:
        d0 = min(r.planned.grid.d_f)
        order = ", ".join(f"{row.size} {_p(row.p)}" for row in pr.order.itertuples())
        lines.append(
            f"2. ordering at D_F {d0:,.0f} resolved in the true order (every adjacent pair): {order}; "
            f"mean {_p(*pr.headline['order'])}"
        )
    else:
        lines.append("2. language ordering: one language, no ordering question (give several target spaces)")
    lines.append("")
    lines.append(f"3. transfer law (rule of transfer_law.py; width ±{r.width:g}):")
    for row in pr.law.itertuples():
        lines.append(
            f"   {row.language}: identified {_p(row.identified)}, alpha within {_p(row.alpha)}, beta within "
            f"{_p(row.beta)}, both {_p(row.both, row.se)}"
        )
    if r.law_note:
        lines.append(f"   never identified on this grid: {r.law_note}")
    lines.append("")
    if r.weakest is not None:
        p, se = pr.headline[r.weakest]
        lines.append(f"weakest: {QUESTION_NAMES[r.weakest]}, {_p(p, se)}")
    total = r.planned.total_flops
    if r.changes:
        best = r.best
        if best is not None:
            lines.append(f"best next change per FLOP: {_change(best, total)}")
            if best.change.how:
                lines.append(f"  how: {best.change.how}")
        else:
            lines.append(
                f"no single change raises it by more than twice its Monte Carlo SE in {r.worlds} worlds"
            )
        lines.append("every change (same worlds):")
        lines += [f"  {_change(c, total)}" for c in r.changes if c is not best]
    elif r.weakest is not None:
        lines.append("every question is resolved in >= 99% of the worlds: no change needed")
    return "\n".join(lines)


def _percent(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.1 else f"{100 * x:.2g}%"


def tokens(d: float) -> str:
    """A token count in a table header: 250, 4K, 800K, 8M, 500M."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if d >= div:
            return f"{d / div:.3g}{unit}"
    return f"{d:.0f}"


def _change(c: ChangeResult, total: float) -> str:
    if c.change.grid is None:
        return f"{c.change.what}: not possible here ({c.change.why_not})"
    cost = f"+{c.change.extra_flops:.2g} FLOPs (+{_percent(c.change.extra_flops / total)} of the study)"
    if c.skipped:
        return (
            f"{c.change.what}: not run, {c.before:.2f} -> 1.00 would buy less per FLOP than the best; {cost}"
        )
    return f"{c.change.what}: {c.before:.2f} -> {c.after:.2f} ({c.gain:+.2f} ± {c.gain_se:.2f}), {cost}"


def _d_t_table(cells: pd.DataFrame, by_d_f: pd.DataFrame) -> list[str]:
    if cells.empty:
        return ["   (no cells)"]
    d_fs = sorted(cells["d_f"].unique())
    head = "   lang size       " + "".join(f"{tokens(d):>7}" for d in d_fs)
    out = [head]
    for (lang, size), g in cells.groupby(["language", "size"], sort=False):
        p = dict(zip(g["d_f"], g["p"], strict=True))
        out.append(f"   {lang:<4} {size:<10}" + "".join(f"{p.get(d, math.nan):>7.2f}" for d in d_fs))
    all_ = dict(zip(by_d_f["d_f"], by_d_f["p"], strict=True))
    out.append("   all cells      " + "".join(f"{all_.get(d, math.nan):>7.2f}" for d in d_fs))
    wrong = float(cells["wrong"].max())
    if wrong > 0:
        out.append(
            f"   resolved the wrong way round (interval below 0; the truth is > 0): up to {wrong:.0%} of worlds in a cell"
        )
    return out


def to_dict(r: PowerReport) -> dict[str, Any]:
    """The report as plain JSON types."""
    pr = r.probabilities
    g = r.planned.grid

    def records(df: pd.DataFrame) -> list[dict[str, Any]]:
        return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]

    best = r.best
    return {
        "spaces": [str(p) for p in r.planned.paths],
        "overrides": list(r.planned.overrides),
        "grid": {
            "languages": list(g.languages or ()),
            "sizes": dict(g.sizes),
            "d_f": list(g.d_f),
            "lr_arms": list(g.lrs),
            "schedule_arms": list(g.schedules),
            "seeds": g.seeds,
            "test_docs": g.test_docs,
            "budget_d_f": g.budget_d_f,
            "flops": r.planned.flops,
            "transfer_trials": r.planned.transfer_trials,
            "assumed": r.planned.notes,
        },
        "prior": r.prior,
        "worlds": r.worlds,
        "seed": r.seed,
        "bootstrap": r.bootstrap,
        "jobs": r.jobs,
        "seconds": r.seconds,
        "width": r.width,
        "noise_unknown": pr.noise_unknown,
        "questions": {
            "d_t": {
                "cells": records(pr.d_t),
                "by_d_f": records(pr.d_t_by_d_f),
                "headline": pr.headline.get("d_t"),
            },
            "order": (
                {"applies": True, "sizes": records(pr.order), "headline": pr.headline["order"]}
                if "order" in pr.headline
                else {"applies": False, "why": "one language"}
            ),
            "law": {
                "languages": records(pr.law),
                "headline": pr.headline.get("law"),
                "never": r.law_note or None,
            },
        },
        "weakest": r.weakest,
        "changes": [_change_dict(c) for c in r.changes],
        "best_change": _change_dict(best) if best is not None else None,
    }


def _change_dict(c: ChangeResult) -> dict[str, Any]:
    return {
        "name": c.change.name,
        "what": c.change.what,
        "how": c.change.how,
        "possible": c.change.grid is not None,
        "why_not": c.change.why_not or None,
        "before": _plain(c.before),
        "after": _plain(c.after),
        "gain_se": _plain(c.gain_se),
        "extra_flops": c.change.extra_flops,
        "measurable": c.measurable,
        "skipped": c.skipped,
    }


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return _plain(v.item())
    return v
