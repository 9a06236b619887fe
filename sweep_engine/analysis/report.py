"""`analyze`: ledger(s) in; cell table, transfer, regimes, laws, figures, report.md and report.html out.

One results directory gives `<dir>/report/`; several (a cross-language analysis) give one report in `out_dir`,
by default `<first dir's parent>/report-<dir names joined by '-'>`. The returned summary is JSON-able and is
what `sweep-engine analyze --json` prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sweep_engine.analysis import plots, render
from sweep_engine.analysis.allocation import allocation_table, holdout_largest
from sweep_engine.analysis.cells import best_cells, pretrain_runs
from sweep_engine.analysis.fit import FitResult
from sweep_engine.analysis.ledger_io import ledger_file, read_ledgers
from sweep_engine.analysis.regimes import Regimes, classify
from sweep_engine.analysis.summary import headline, plain_summary, transfer_ordering
from sweep_engine.analysis.transfer import TransferAnalysis, analyze_transfer
from sweep_engine.errors import UserError


@dataclass
class Analysis:
    """Everything computed from the ledgers; the figures and tables read only this."""

    sources: list[Path]
    cells: pd.DataFrame
    pretrain: pd.DataFrame
    transfer: TransferAnalysis
    regimes: Regimes
    holdout: pd.DataFrame
    allocation: pd.DataFrame
    figures: list[plots.Figure] = field(default_factory=list)


def default_report_dir(results: Sequence[Path]) -> Path:
    """Where `analyze` writes without --out: `<dir>/report` for one sweep, a joint directory for several."""
    results = [Path(r) for r in results]
    if not results:
        raise UserError("give at least one results directory or ledger file")
    first = ledger_file(results[0]).parent
    if len(results) == 1:
        return first / "report"
    names = [ledger_file(r).parent.name for r in results]
    return first.parent / ("report-" + "-".join(names))


def run_analysis(results: Sequence[Path], *, bootstrap: int = 200, seed: int = 0) -> Analysis:
    """Read the ledgers and compute every table (no files written).

    Raises:
        UserError: unreadable ledgers, or no finished transfer runs in them.
    """
    ledger = read_ledgers([Path(r) for r in results])
    cells = best_cells(ledger)
    if cells.empty:
        raise UserError(f"{', '.join(map(str, results))}: no FINISHED transfer runs in the ledger(s)")
    transfer = analyze_transfer(cells, bootstrap=bootstrap, seed=seed)
    regimes = classify(cells, transfer, bootstrap=bootstrap, seed=seed)
    return Analysis(
        sources=[Path(r) for r in results],
        cells=cells,
        pretrain=pretrain_runs(ledger),
        transfer=transfer,
        regimes=regimes,
        holdout=holdout_largest(cells, bootstrap=0, seed=seed),
        allocation=allocation_table(cells, regimes.joint),
    )


def analyze(
    results: list[Path], out_dir: Path | None = None, *, bootstrap: int = 200, seed: int = 0
) -> dict[str, Any]:
    """Analyse one or several sweeps and write the report.

    Args:
        results: results directories (holding trials.parquet or trials.csv) or ledger files.
        out_dir: report directory (default: `default_report_dir(results)`).
        bootstrap: resamples behind every interval and band.
        seed: bootstrap seed.

    Returns:
        The JSON-able summary, including "report_dir".

    Raises:
        UserError: bad or empty ledgers.
    """
    out = Path(out_dir) if out_dir is not None else default_report_dir(results)
    a = run_analysis(results, bootstrap=bootstrap, seed=seed)
    a.figures = plots.draw_all(a, out / "figures")
    summary = summarize(a, out)
    sections = _sections(a)
    words = summary["plain_summary"]
    render.write_atomic(out / "report.md", _markdown(a, sections, words))
    render.write_atomic(out / "report.html", _html(a, sections, words))
    return summary


def report_dir_for_tracking(results_dir: Path, *, bootstrap: int = 200, seed: int = 0) -> Path:
    """Analyse one sweep and return its report directory, for the sweep layer to log as MLflow artifacts."""
    return Path(analyze([Path(results_dir)], bootstrap=bootstrap, seed=seed)["report_dir"])


# ---------------------------------------------------------------------------------------------- summary


def summarize(a: Analysis, out: Path) -> dict[str, Any]:
    """The JSON summary: per language the cell table (with D_E / D_T intervals), the transfer-law fits and the
    regimes; the headline (D_T ordering per size at the smallest D_F, against the seed study's) and the
    plain-words summary the report opens with."""
    orderings = transfer_ordering(a.transfer.languages)
    langs: dict[str, Any] = {}
    for lang, lt in a.transfer.languages.items():
        reg = a.regimes.table[a.regimes.table["language"] == lang].drop(columns=["language"])
        langs[lang] = {
            "basis": lt.basis,
            "units": {
                "loss": "nats per token",
                "bpc": "bits per character",
                "d": "tokens",
                "d_chars": "characters",
            },
            "cells": lt.table,
            "transfer_law": {
                unit: {**(fit.to_dict() if fit else {"params": None}), "note": lt.law_notes.get(unit, "")}
                for unit, fit in lt.laws.items()
            },
            "scratch_curves": [
                {
                    "n_params": n,
                    "kind": c.kind,
                    "params": c.fit.params if c.fit else None,
                    "ci": c.fit.ci if c.fit else None,
                    "rmsd_log": c.fit.rmsd_log if c.fit else None,
                    "d_99": c.d_99,
                    "note": c.note,
                }
                for n, c in sorted(lt.curves.items())
            ],
            "joint_fits": {
                init: a.regimes.joint[(lang, init)].to_dict() if (lang, init) in a.regimes.joint else None
                for init in ("scratch", "finetune")
            },
            "regimes": reg,
        }
    return render.jsonable(
        {
            "report_dir": out,
            "report_md": out / "report.md",
            "report_html": out / "report.html",
            "sources": a.sources,
            "headline": headline(orderings),
            "plain_summary": plain_summary(a, orderings),
            "languages": langs,
            "comparison": a.transfer.comparison,
            "holdout_largest": a.holdout,
            "allocation": a.allocation,
            "figures": [
                {"name": f.name, "file": f.path, "title": f.title, "units": f.units} for f in a.figures
            ],
        }
    )


# ----------------------------------------------------------------------------------------------- report


@dataclass
class Section:
    title: str
    text: str
    units: str
    headers: list[str]
    rows: list[list[str]]


def _sections(a: Analysis) -> list[Section]:
    s: list[Section] = []
    cmp_cols = {
        "transfer_rank": "rank",
        "language": "language",
        "basis": "D_E basis",
        "finetune_cells": "ft cells",
        "median_fraction": "median D_F/D_E",
        "median_d_t_chars": "median D_T (chars)",
        "k": "k",
        "k_ci": "k 95% CI",
        "alpha": "alpha",
        "alpha_ci": "alpha CI",
        "beta": "beta",
        "beta_ci": "beta CI",
        "law_points": "points",
        "law_rmsd_log": "RMSD log",
        "extrapolated": "extrapolated D_E",
        "below_asymptote": "below asymptote",
    }
    h, r = render.table_rows(a.transfer.comparison, cmp_cols)
    s.append(
        Section(
            "Languages compared",
            "Rank 1 = most transfer (smallest median D_F / D_E). Transfer law D_T = k D_F^alpha N^beta fitted on "
            "low-data cells with D_T > 0; intervals are 95% bootstrap percentiles.",
            "D_T and D_F in characters for k, alpha, beta (SCIENCE.md's units); D_F / D_E unitless",
            h,
            r,
        )
    )
    cell_cols = {
        "n_params": "N",
        "d_f": "D_F (tok)",
        "d_f_chars": "D_F (chars)",
        "loss": "loss (nats/tok)",
        "bpc": "bpc",
        "d_e": "D_E (tok)",
        "d_e_ci": "D_E 95% CI (tok)",
        "d_t": "D_T (tok)",
        "d_t_ci": "D_T 95% CI (tok)",
        "d_t_chars": "D_T (chars)",
        "d_t_chars_ci": "D_T 95% CI (chars)",
        "fraction": "D_F/D_E",
        "fraction_ci": "D_F/D_E 95% CI",
        "extrapolated": "extrap.",
        "below_asymptote": "below E",
        "scratch_curve": "scratch curve",
        "low_data": "low-data",
        "lr": "lr",
    }
    for lang, lt in a.transfer.languages.items():
        h, r = render.table_rows(_with_intervals(lt.table), cell_cols)
        s.append(
            Section(
                f"{lang}: fine-tuned cells",
                f"Best run per cell over its LR/schedule sweep. D_E inverted in the {lt.basis} basis; 95% CI = "
                "percentiles of D_E over the scratch fit's bootstrap resamples, each inverted at the fine-tuned "
                "loss (∞: some resamples never reach it; – : interpolated scratch curve, no interval). "
                "`extrap.` = D_E outside the scratch runs' D range, `below E` = fine-tuned loss at or below the "
                "scratch asymptote (D_E undefined).",
                "loss in nats per token and bits per character; D in tokens (tok) and characters (chars)",
                h,
                r,
            )
        )
        law_rows = []
        for unit, fit in lt.laws.items():
            row: dict[str, Any] = {"unit": unit, "note": lt.law_notes.get(unit, "")}
            if fit is not None:
                row.update({k: fit.params[k] for k in fit.params})
                row.update({f"{k}_ci": fit.ci[k] for k in fit.ci})
                row.update({"n_points": fit.n_points, "rmsd_log": fit.rmsd_log})
            law_rows.append(row)
        cols = {
            c: c
            for c in [
                "unit",
                "k",
                "k_ci",
                "alpha",
                "alpha_ci",
                "beta",
                "beta_ci",
                "n_points",
                "rmsd_log",
                "note",
            ]
        }
        h, r = render.table_rows(pd.DataFrame(law_rows), cols)
        s.append(
            Section(f"{lang}: transfer law", "", "D_F and D_T in the row's unit (tokens or characters)", h, r)
        )
        curve_rows = [
            {
                "n_params": n,
                "kind": c.kind,
                **(c.fit.params if c.fit else {}),
                "d_99": c.d_99,
                "rmsd_log": c.fit.rmsd_log if c.fit else math.nan,
                "note": c.note,
            }
            for n, c in sorted(lt.curves.items())
        ]
        cols = {c: c for c in ["n_params", "kind", "E", "B", "beta", "d_99", "rmsd_log", "note"]}
        h, r = render.table_rows(pd.DataFrame(curve_rows), cols)
        s.append(
            Section(
                f"{lang}: scratch curves L = E + B / D^beta",
                "D(N) = d_99: the D at which the fitted scratch loss is within 1% of E.",
                f"{'nats per token, D in tokens' if lt.basis == 'tokens' else 'bits per character, D in characters'}",
                h,
                r,
            )
        )
    reg_cols = {
        "language": "lang",
        "init": "init",
        "n_params": "N",
        "d_f": "D_F (tok)",
        "limited_by": "joint fit says",
        "param_term_share": "param-term share",
        "slope_label": "slope says",
        "slope_log_n": "dlogL/dlogN",
        "convergence": "convergence",
        "final_fall": "last-quarter fall",
        "low_data": "low-data",
        "d_f_over_d_99": "D_F / D(N)",
        "kaplan_bound": "Kaplan bound",
        "d_over_kaplan_bound": "D / 5e3 N^0.74",
        "on_frontier": "frontier",
    }
    h, r = render.table_rows(a.regimes.table, reg_cols)
    s.append(
        Section(
            "Regimes",
            "Each label with the number behind it. `param-term share` = the N term's share of the two reducible "
            "terms of the (language, init) joint fit (Kaplan: (N_c/N)^(aN/aD) vs D_c/D; Chinchilla: A/N^alpha vs "
            "B/D^beta); `dlogL/dlogN` measured at fixed D_F (flat, > -0.01, = "
            "data-limited); `last-quarter fall` = relative fall of validation loss over the last quarter of the "
            "run; `frontier` = on the lower envelope of loss against compute for its language and init.",
            "D_F in tokens; loss in nats per token; compute in FLOPs (pre-training excluded)",
            h,
            r,
        )
    )
    joint_rows = [
        {"language": k[0], "init": k[1], "law": f.law, "params": _params_text(f), "rmsd_log": f.rmsd_log,
         "n_points": f.n_points, "note": a.regimes.joint_notes.get(k, "")}
        for k, f in sorted(a.regimes.joint.items())
    ]  # fmt: skip
    cols = {c: c for c in ["language", "init", "law", "params", "rmsd_log", "n_points", "note"]}
    h, r = render.table_rows(pd.DataFrame(joint_rows), cols)
    s.append(
        Section(
            "Joint fits L(N, D)",
            "Per (language, init), Kaplan's [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D or Chinchilla's "
            "E + A/N^alpha + B/D^beta, whichever has the smaller RMSD of log loss (both listed in the note).",
            "loss in nats per token, N in parameters, D in tokens",
            h,
            r,
        )
    )
    cols = {c: c for c in ["language", "init", "held_out_n", "n_points", "rmsd_log", "max_rel_error", "note"]}
    h, r = render.table_rows(a.holdout, cols)
    s.append(
        Section(
            "Hold-out: the largest N predicted from the smaller ones",
            "The joint law fitted without the largest size, scored on that size's cells.",
            "RMSD of log loss (nats per token); relative error",
            h,
            r,
        )
    )
    cols = {
        "language": "lang",
        "target_loss": "target loss",
        "n_params": "N",
        "d_scratch": "D without pre-training (tok)",
        "d_finetune": "D with pre-training (tok)",
        "pretraining_worth": "pre-training worth (tok)",
        "pretraining_worth_chars": "worth (chars)",
        "compute_finetune": "fine-tune FLOPs",
        "cheapest": "cheapest",
        "extrapolated": "beyond data",
    }
    h, r = render.table_rows(a.allocation, cols)
    s.append(
        Section(
            "Allocation",
            "From the joint fits: target-language tokens each size needs to reach the target loss, with and "
            "without English pre-training (∞ = unreachable at that size); `cheapest` = least fine-tuning compute.",
            "loss in nats per token; D in tokens and characters; compute in FLOPs",
            h,
            r,
        )
    )
    return s


def _with_intervals(t: pd.DataFrame) -> pd.DataFrame:
    """The cell table with (low, high) pairs in one column each, as the report prints intervals."""
    t = t.copy()
    for col in ("d_e", "d_t", "d_t_chars", "fraction"):
        if f"{col}_lo" in t.columns:
            t[f"{col}_ci"] = list(zip(t[f"{col}_lo"], t[f"{col}_hi"], strict=True))
    return t


SUMMARY_UNITS = "D_T and D_F in tokens; loss in nats per token; D_F / D_E unitless"


def _header(a: Analysis) -> tuple[str, str]:
    langs = ", ".join(a.transfer.languages)
    src = ", ".join(str(p) for p in a.sources)
    return f"Language transfer report: {langs}", f"Sources: {src}. {len(a.cells)} cells."


def _markdown(a: Analysis, sections: list[Section], words: list[str]) -> str:
    title, sub = _header(a)
    out = [f"# {title}\n", f"{sub}\n"]
    out.append("## Summary\n")
    out += [f"- {w}" for w in words]
    out.append(f"\nUnits: {SUMMARY_UNITS}.\n")
    out.append("## Figures\n")
    for f in a.figures:
        out.append(f"### {f.title}\n\n![{f.name}](figures/{f.path.name})\n\nUnits: {f.units}.\n")
    for sec in sections:
        out.append(f"## {sec.title}\n")
        if sec.text:
            out.append(sec.text + "\n")
        out.append(f"Units: {sec.units}.\n")
        out.append(render.markdown_table(sec.headers, sec.rows))
    return "\n".join(out)


_CSS = (
    "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
    "table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}"
    "img{max-width:100%}.units{color:#555;font-size:12px}"
)


def _html(a: Analysis, sections: list[Section], words: list[str]) -> str:
    import html

    title, sub = _header(a)
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    out.append(f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(sub)}</p>")
    out.append("<h2>Summary</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in words) + "</ul>")
    out.append(f"<p class='units'>Units: {html.escape(SUMMARY_UNITS)}.</p>")
    out.append("<h2>Figures</h2>")
    for f in a.figures:
        out.append(f"<h3>{html.escape(f.title)}</h3><img alt='{f.name}' src='{render.png_data_uri(f.path)}'>")
        out.append(f"<p class='units'>Units: {html.escape(f.units)}.</p>")
    for sec in sections:
        out.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.text:
            out.append(f"<p>{html.escape(sec.text)}</p>")
        out.append(f"<p class='units'>Units: {html.escape(sec.units)}.</p>")
        out.append(render.html_table(sec.headers, sec.rows))
    out.append("</body></html>")
    return "\n".join(out)


def _params_text(fit: FitResult) -> str:
    return ", ".join(f"{k}={render.fmt(v)}" for k, v in fit.params.items())
