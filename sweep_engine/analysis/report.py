"""`analyze`: ledger(s) in; report.md, report.html and figures out, and a JSON-able summary.

One results directory gives `<dir>/report/`; several (a cross-language analysis) give one report in `out_dir`,
by default `<first dir's parent>/report-<dir names joined by '-'>`. The returned summary is what
`sweep-engine analyze --json` prints. The tables come from pipeline.run_analysis; this module only lays them
out, evidence first: method, per-language gaps and transfer, the languages compared, the transfer laws,
then the curves, regimes and fits behind them.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep_engine.analysis import plots, render
from sweep_engine.analysis.fit import FitResult
from sweep_engine.analysis.ledger_io import ledger_file
from sweep_engine.analysis.pipeline import DEFAULT_OPTIONS, Analysis, AnalysisOptions, run_analysis
from sweep_engine.analysis.summary import headline, plain_summary, transfer_ordering
from sweep_engine.analysis.transfer_law import MAX_EXPONENT_WIDTH, MIN_BOOT_OK, MIN_CELLS, MIN_D_F, MIN_SIZES
from sweep_engine.errors import UserError


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


def analyze(
    results: list[Path], out_dir: Path | None = None, options: AnalysisOptions = DEFAULT_OPTIONS
) -> dict[str, Any]:
    """Analyse one or several sweeps and write the report.

    Args:
        results: results directories (holding trials.parquet or trials.csv) or ledger files.
        out_dir: report directory (default: `default_report_dir(results)`).
        options: what to fit, and the bootstrap (replicates and seed).

    Returns:
        The JSON-able summary, including "report_dir".

    Raises:
        UserError: bad or empty ledgers.
    """
    out = Path(out_dir) if out_dir is not None else default_report_dir(results)
    a = run_analysis(results, options)
    a.figures = plots.draw_all(a, out / "figures")
    summary = summarize(a, out)
    sections = _sections(a)
    words = summary["plain_summary"]
    render.write_atomic(out / "report.md", _markdown(a, sections, words))
    render.write_atomic(out / "report.html", _html(a, sections, words))
    return summary


# ---------------------------------------------------------------------------------------------- summary


def summarize(a: Analysis, out: Path) -> dict[str, Any]:
    """The JSON summary: per language the cell table (gaps, D_E / D_T with intervals), the transfer law, the
    scratch curves and the regimes; the headline and the plain-words summary the report opens with."""
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
            "transfer_law": lt.law.to_dict() if lt.law else None,
            "scratch_curves": [
                {
                    "n_params": n,
                    "d": c.d,
                    "loss": c.loss[:, 0],
                    "monotone_loss": c.mono[:, 0] if len(c.d) else [],
                    "excluded": [{"d": d, "why": why} for d, why in c.excluded],
                }
                for n, c in sorted(lt.curves.items())
            ],
            "joint_fits": {
                init: {
                    **a.regimes.joint[(lang, init)].to_dict(),
                    "degenerate": a.regimes.degenerate[(lang, init)],
                }
                if (lang, init) in a.regimes.joint
                else None
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
            "method": method_text(a),
            "headline": headline(orderings),
            "plain_summary": plain_summary(a, orderings),
            "languages": langs,
            "comparison": a.transfer.comparison,
            "d_99": a.regimes.d_99,
            "holdout_largest": a.holdout,
            "allocation": a.allocation,
            "figures": [
                {"name": f.name, "file": f.path, "title": f.title, "units": f.units} for f in a.figures
            ],
        }
    )


def method_text(a: Analysis) -> list[str]:
    """How every number in the report is computed, in plain words (also in docs/analysis.md)."""
    split = a.cells["split"].value_counts().to_dict()
    return [
        "Cells: for each (language, init, N, D_F) the LR/schedule with the lowest validation loss (seeds "
        "averaged) is chosen; the loss the cell reports is that configuration's loss on a separate test split "
        f"(cells reported on test: {split.get('test', 0)}, on validation for lack of a test split: "
        f"{split.get('val', 0)}).",
        "Evidence: the gap is the fine-tuned minus the scratch loss at the same N and D_F, on the same test "
        "documents (paired).",
        "D_E: the scratch losses of one size, made non-increasing in D by isotonic regression, are joined by a "
        "monotone cubic in log D vs log loss; D_E is where that curve reaches the fine-tuned loss. Inside the "
        "scratch range D_T = D_E - D_F has the gap's sign; outside it D_E continues the end segment's power law "
        "and is reported as a bound (position above/below). Scratch runs that the token budget cut while their "
        "loss still fell are kept out of the curves.",
        a.reps.method,
        f"Transfer law: L_ft(N, D_F) = L_s(N, D_F + k D_F^alpha N^beta), least squares in log loss over every "
        f"fine-tuned cell (no selection on the sign of D_T), refitted on every replicate. Identified only with "
        f">= {MIN_CELLS} cells over >= {MIN_SIZES} sizes and >= {MIN_D_F} D_F, >= {MIN_BOOT_OK:.0%} of the "
        f"replicates converged, and 95% intervals of alpha and beta each no wider than {MAX_EXPONENT_WIDTH}; "
        "otherwise no constants are printed.",
        "Ranking: by D_F/D_E, which has no unit and so is fair across scripts (smaller = more transfer); a "
        "pair of languages is resolved when one is ahead in >= 97.5% of the paired replicates.",
        "Regimes: the measured slope d log L / d log N at fixed D_F leads (flat = data-limited); the joint fit "
        "(bounded exponents, Kaplan or Chinchilla form by AIC, degenerate fits flagged) is a second opinion and "
        "gives D(N), with its bootstrap interval, for the low-data regime (D_F <= 10% of D(N); 'unknown' when "
        "the interval straddles that). Compute is 6 N x tokens at the best step.",
    ]


# ----------------------------------------------------------------------------------------------- report


@dataclass
class Section:
    title: str
    text: str
    units: str
    headers: list[str]
    rows: list[list[str]]


CELL_COLUMNS = {
    "size": "size",
    "n_params": "N",
    "d_f": "D_F (tok)",
    "d_f_chars": "D_F (chars)",
    "loss": "fine-tuned (nats/tok)",
    "scratch_loss": "scratch (nats/tok)",
    "gap": "gap (nats/tok)",
    "gap_ci": "gap 95% CI",
    "gap_bpc": "gap (bits/char)",
    "gap_bpc_ci": "gap 95% CI (bits/char)",
    "fraction": "D_F/D_E",
    "fraction_ci": "D_F/D_E 95% CI",
    "d_t": "D_T (tok)",
    "d_t_ci": "D_T 95% CI (tok)",
    "d_t_chars": "D_T (chars)",
    "d_t_chars_ci": "D_T 95% CI (chars)",
    "position": "D_E vs scratch range",
    "bound": "bound",
    "low_data": "low-data",
    "n_seeds": "seeds",
    "lr": "lr",
}


def _sections(a: Analysis) -> list[Section]:
    s = [Section("Method", " ".join(method_text(a)), "as stated in each table", [], [])]
    for lang, lt in a.transfer.languages.items():
        h, r = render.table_rows(_with_intervals(lt.table), CELL_COLUMNS)
        s.append(
            Section(
                f"{lang}: evidence and transfer per fine-tuned cell",
                f"Losses on the {', '.join(sorted(set(lt.table.get('split', []))))} split. Gap = fine-tuned minus "
                f"scratch at the same N and D_F (paired; negative = fine-tuning helps). D_E inverted in the "
                f"{lt.basis} basis. Outside the scratch range a D_E is a bound ('above': beyond the largest "
                "scratch run, 'below': under the smallest).",
                "loss in nats per token (gap also in bits per character); D in tokens (tok) and characters "
                "(chars); D_F/D_E unitless",
                h,
                r,
            )
        )
    cmp_cols = {
        "transfer_rank": "rank",
        "language": "language",
        "basis": "D_E basis",
        "finetune_cells": "ft cells",
        "smallest_d_f": "smallest D_F (tok)",
        "fraction_smallest": "D_F/D_E there (geo. mean over sizes)",
        "finetune_better_clear": "cells clearly better than scratch",
        "gap_clear": "cells with a clear gap",
        "outside_range": "D_E outside the scratch range",
        "law": "transfer law",
    }
    h, r = render.table_rows(a.transfer.comparison, cmp_cols)
    s.append(
        Section(
            "Languages compared",
            "Rank 1 = most transfer: the smallest D_F / D_E at the smallest D_F, a unitless measure, fair across "
            "scripts. Per size with intervals and resolved pairs: the summary above.",
            "D_F in tokens; D_F / D_E unitless",
            h,
            r,
        )
    )
    law_rows = []
    for lang, lt in a.transfer.languages.items():
        law = lt.law
        if law is None:
            continue
        row: dict[str, Any] = {
            "language": lang,
            "status": law.status,
            "cells": law.n_cells,
            "sizes": law.n_sizes,
        }
        row["D_F values"] = law.n_d_f
        if law.identified:
            for k in ("alpha", "beta", "k", "k_chars"):
                row[k], row[f"{k} 95% CI"] = law.params[k], law.ci[k]
            row["RMSD log loss"] = law.rmsd_log
        row.update({f"{c}?": v for c, v in law.claims.items()})
        row["left out"] = "; ".join(law.excluded) or "none"
        law_rows.append(row)
    law_df = pd.DataFrame(law_rows)
    h, r = render.table_rows(law_df, {c: c for c in law_df.columns})
    s.append(
        Section(
            "Transfer law D_T = k D_F^alpha N^beta (fitted in the loss domain)",
            "Constants are shown only for an identified law (rule in the Method section). alpha < 1 and beta > 0 "
            "are the seed study's qualitative claims: 'holds' when the 95% interval lies on that side.",
            "k in tokens (k) and characters (k_chars); alpha, beta unitless",
            h,
            r,
        )
    )
    for lang, lt in a.transfer.languages.items():
        curve_rows = [
            {
                "N": n,
                "points": len(c.d),
                "D range": (float(c.d[0]), float(c.d[-1])) if len(c.d) else None,
                "pooled by isotonic": int((np.abs(c.mono[:, 0] - np.log(c.loss[:, 0])) > 1e-12).sum()),
                "left out": "; ".join(f"D={d:,.0f}: {why}" for d, why in c.excluded) or "none",
            }
            for n, c in sorted(lt.curves.items())
        ]
        cdf = pd.DataFrame(curve_rows)
        h, r = render.table_rows(cdf, {c: c for c in cdf.columns})
        unit = (
            "nats per token, D in tokens" if lt.basis == "tokens" else "bits per character, D in characters"
        )
        s.append(
            Section(f"{lang}: scratch curves", "Monotone interpolants through the scratch cells.", unit, h, r)
        )
        fits = a.curve_fits[a.curve_fits["language"] == lang] if not a.curve_fits.empty else a.curve_fits
        if not fits.empty:
            cols = {c: c for c in ["n_params", "law", "E", "B", "D_l", "beta", "rmsd_log", "points"]}
            h, r = render.table_rows(fits, cols)
            s.append(
                Section(
                    f"{lang}: the pure laws against the scratch curves (analysis.laws)",
                    "Each listed law fitted to one size's scratch losses: its RMSD of log loss says how far the "
                    "law is from the measurements. D_E is read off the monotone curve, not off these.",
                    unit,
                    h,
                    r,
                )
            )
    reg_cols = {
        "language": "lang",
        "init": "init",
        "size": "size",
        "d_f": "D_F (tok)",
        "slope_label": "slope says",
        "slope_log_n": "dlogL/dlogN",
        "joint_label": "joint fit says",
        "param_term_share": "param-term share",
        "convergence": "convergence",
        "low_data": "low-data",
        "d_99_ci": "D(N) 95% CI (tok)",
        "kaplan_bound": "Kaplan bound",
        "on_frontier": "frontier",
    }
    reg = a.regimes.table.copy()
    if not reg.empty:
        reg["d_99_ci"] = list(zip(reg["d_99_lo"], reg["d_99_hi"], strict=True))
    h, r = render.table_rows(reg, reg_cols)
    s.append(
        Section(
            "Regimes",
            "Each label with the number behind it. The measured slope leads (flat, > -0.01, = data-limited); the "
            "joint fit's larger term is a second opinion. `frontier` = on the lower envelope of loss against "
            "compute (6 N x tokens at the best step) for its language and init.",
            "D_F and D(N) in tokens; loss in nats per token",
            h,
            r,
        )
    )
    joint_rows = [
        {"language": k[0], "init": k[1], "law": f.law, "params": _params_text(f), "rmsd_log": f.rmsd_log,
         "n_points": f.n_points, "degenerate": a.regimes.degenerate[k], "note": a.regimes.joint_notes.get(k, "")}
        for k, f in sorted(a.regimes.joint.items())
    ]  # fmt: skip
    cols = {c: c for c in ["language", "init", "law", "params", "rmsd_log", "n_points", "degenerate", "note"]}
    h, r = render.table_rows(pd.DataFrame(joint_rows), cols)
    s.append(
        Section(
            "Joint fits L(N, D)",
            "Per (language, init), Kaplan's or Chinchilla's form (bounded exponents), whichever has the lower AIC. "
            "A degenerate fit (a parameter at a bound, or an exponent above 1.5) labels nothing.",
            "loss in nats per token, N in parameters, D in tokens",
            h,
            r,
        )
    )
    if not a.overtrain.empty:
        cols = {c: c for c in ["language", "init", "E", "a", "b", "eta", "rmsd_log", "note"]}
        h, r = render.table_rows(a.overtrain, cols)
        s.append(
            Section(
                "Over-training law L(C, M) (analysis.laws)",
                "Gadre et al. 2024: E + (a M^eta + b M^-eta) C^-eta, C = 6 N D_F, M = D_F / N, per (language, "
                "init), on converged cells.",
                "loss in nats per token",
                h,
                r,
            )
        )
    cols = {c: c for c in ["language", "init", "held_out_n", "n_points", "rmsd_log", "max_rel_error", "note"]}
    h, r = render.table_rows(a.holdout, cols)
    if a.options.holdout_largest:
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
        "reachable": "reachable",
        "cheapest": "cheapest",
        "extrapolated": "beyond data",
    }
    h, r = render.table_rows(a.allocation, cols)
    s.append(
        Section(
            "Allocation",
            "From the joint fits: target-language tokens each size needs to reach the target loss, with and "
            "without English pre-training; `reachable` says which init gets there at all; `cheapest` = least "
            "fine-tuning compute.",
            "loss in nats per token; D in tokens and characters",
            h,
            r,
        )
    )
    return s


def _with_intervals(t: pd.DataFrame) -> pd.DataFrame:
    """The cell table with (low, high) pairs in one column each, as the report prints intervals."""
    t = t.copy()
    for col in ("gap", "gap_bpc", "d_e", "d_t", "d_t_chars", "fraction"):
        if f"{col}_lo" in t.columns:
            t[f"{col}_ci"] = list(zip(t[f"{col}_lo"], t[f"{col}_hi"], strict=True))
    return t


def _header(a: Analysis) -> tuple[str, str]:
    langs = ", ".join(a.transfer.languages)
    src = ", ".join(str(p) for p in a.sources)
    return f"Language transfer report: {langs}", f"Sources: {src}. {len(a.cells)} cells."


def _markdown(a: Analysis, sections: list[Section], words: list[str]) -> str:
    title, sub = _header(a)
    out = [f"# {title}\n", f"{sub}\n", "## Summary\n"]
    out += [f"- {w}" for w in words]
    out.append("\n## Figures\n")
    for f in a.figures:
        out.append(f"### {f.title}\n\n![{f.name}](figures/{f.path.name})\n\nUnits: {f.units}.\n")
    for sec in sections:
        out.append(f"## {sec.title}\n")
        if sec.text:
            out.append(sec.text + "\n")
        if sec.headers:
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
    title, sub = _header(a)
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    out.append(f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(sub)}</p>")
    out.append("<h2>Summary</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in words) + "</ul>")
    out.append("<h2>Figures</h2>")
    for f in a.figures:
        out.append(f"<h3>{html.escape(f.title)}</h3><img alt='{f.name}' src='{render.png_data_uri(f.path)}'>")
        out.append(f"<p class='units'>Units: {html.escape(f.units)}.</p>")
    for sec in sections:
        out.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.text:
            out.append(f"<p>{html.escape(sec.text)}</p>")
        if sec.headers:
            out.append(f"<p class='units'>Units: {html.escape(sec.units)}.</p>")
            out.append(render.html_table(sec.headers, sec.rows))
    out.append("</body></html>")
    return "\n".join(out)


def _params_text(fit: FitResult) -> str:
    return ", ".join(f"{k}={render.fmt(v)}" for k, v in fit.params.items())
