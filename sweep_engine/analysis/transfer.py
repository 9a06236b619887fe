"""Effective data transferred (Hernandez et al. 2021): D_E, D_T = D_E - D_F, D_F / D_E, and the transfer law.

Per language and size N, the from-scratch curve L_s(N, D) is the power law E + B / D^beta fitted to the scratch
cells (or, with fewer than four points, a monotone log-log interpolation, flagged). D_E solves
L_s(N, D_E) = L_ft(N, D_F); it is flagged `extrapolated` when it falls outside the scratch data's D range and
`below_asymptote` (and left NaN) when the fine-tuned loss is at or below the scratch curve's E. Each D_E (and
so D_T and D_F / D_E) gets a 95% interval from the scratch fit's bootstrap: every resample's curve is inverted
at the same fine-tuned loss, and the interval is the percentiles of those D_E. The law
D_T = k D_F^alpha N^beta is fitted per language on the low-data cells (D_F <= 10% of D(N), the data at which
the scratch loss is within 1% of E).

Units: the inversion runs in nats per token with D in tokens when scratch and fine-tuned runs of a language
share a tokenizer (equal validation tokens per character); otherwise in bits per character with D in
characters, because losses per token of different tokenizers cannot be compared. Either way both D_T in tokens
and in characters are reported (characters per token of the training text = d_f_chars / d_f).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweep_engine.analysis.fit import CI_LEVEL, FitResult, fit_groups

LOW_DATA_FRACTION = 0.1  # D_F <= 10% of D(N) (Hernandez et al. 2021)
CONVERGED_WITHIN = 0.01  # D(N): scratch loss within 1% of its infinite-data value E
MIN_CURVE_POINTS = 4  # a 3-parameter power law from fewer points would pass through them exactly


@dataclass
class ScratchCurve:
    """The from-scratch loss of one (language, N) as a function of D, in one unit basis."""

    language: str
    n_params: float
    basis: str  # "tokens" (loss in nats/token, D in tokens) or "chars" (bits/char, D in characters)
    d: np.ndarray
    loss: np.ndarray
    fit: FitResult | None  # the power law E + B / D^beta, or None when interpolated
    note: str = ""

    @property
    def kind(self) -> str:
        return "power" if self.fit is not None else "interpolated"

    @property
    def d_99(self) -> float:
        """D(N): the D at which the fitted loss is within 1% of E (NaN for an interpolated curve)."""
        if self.fit is None:
            return math.nan
        p = self.fit.params
        return float((p["B"] / (CONVERGED_WITHIN * p["E"])) ** (1.0 / p["beta"]))

    def loss_at(self, d: np.ndarray) -> np.ndarray:
        """The curve at D (log-log interpolation, extended linearly, when there is no fit)."""
        d = np.asarray(d, dtype=float)
        if self.fit is not None:
            return self.fit.predict(x=d)
        xs, ys = self._monotone()
        if xs.size < 2:
            return np.full(d.shape, math.nan)
        return np.exp(_interp_extend(np.log(d), xs, ys))

    def d_for(self, loss: float) -> tuple[float, bool, bool]:
        """D_E for a loss: (D_E, extrapolated, below_asymptote)."""
        lo, hi = float(self.d.min()), float(self.d.max())
        if self.fit is not None:
            p = self.fit.params
            if loss <= p["E"]:
                return math.nan, True, True
            d_e = float((p["B"] / (loss - p["E"])) ** (1.0 / p["beta"]))
            return d_e, not (lo <= d_e <= hi), False
        xs, ys = self._monotone()
        if xs.size < 2:
            return math.nan, True, False
        # Invert log L(log D): ys decreasing, so reverse both to give np.interp an increasing abscissa.
        log_d = float(_interp_extend(np.array([math.log(loss)]), ys[::-1], xs[::-1])[0])
        if not math.isfinite(log_d):
            return math.nan, True, True
        d_e = math.exp(log_d)
        return d_e, not (lo <= d_e <= hi), False

    def d_interval(self, loss: float, level: float = CI_LEVEL) -> tuple[float, float]:
        """Percentile interval of D_E at `loss` over the scratch fit's bootstrap resamples.

        Each resample's curve E_r + B_r / D^beta_r is inverted at the same loss. A resample whose asymptote
        E_r lies at or above the loss never reaches it: its D_E counts as infinite (the interval opens upward)
        rather than being dropped, which would make the interval look tighter than the data allow.

        Args:
            loss: the fine-tuned loss, in the curve's unit.
            level: interval level in percent.

        Returns:
            (low, high) in the curve's D unit; NaN for an interpolated curve or a fit without bootstrap.
        """
        fit = self.fit
        if fit is None or fit.n_bootstrap == 0 or len(fit.boot_theta) == 0 or not math.isfinite(loss):
            return math.nan, math.nan
        params = fit.law_obj.to_params(fit.boot_theta)
        names = list(fit.law_obj.names)
        e, b, beta = (params[:, names.index(k)] for k in ("E", "B", "beta"))
        ok = np.isfinite(e) & np.isfinite(b) & np.isfinite(beta) & (beta > 0)
        if not ok.any():
            return math.nan, math.nan
        e, b, beta = e[ok], b[ok], beta[ok]
        gap = loss - e
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            d_e = np.where(gap > 0, (b / np.where(gap > 0, gap, 1.0)) ** (1.0 / beta), np.inf)
        # Order statistics ("lower"/"higher"), not interpolation: an infinite resample must give an infinite
        # end, not inf - inf = NaN.
        tail = (100.0 - level) / 2
        lo = float(np.percentile(d_e, tail, method="lower"))
        hi = float(np.percentile(d_e, 100.0 - tail, method="higher"))
        return lo, hi

    def _monotone(self) -> tuple[np.ndarray, np.ndarray]:
        """log D and log loss of the points where the running minimum of the loss strictly falls."""
        order = np.argsort(self.d)
        d, loss = self.d[order], np.minimum.accumulate(self.loss[order])
        keep = np.concatenate([[True], np.diff(loss) < 0])
        return np.log(d[keep]), np.log(loss[keep])


def _interp_extend(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """np.interp, extended beyond the ends along the end segments (NaN where an end segment is flat)."""
    out = np.interp(x, xs, ys)
    lo_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    hi_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    out = np.where(x < xs[0], ys[0] + (x - xs[0]) * lo_slope, out)
    out = np.where(x > xs[-1], ys[-1] + (x - xs[-1]) * hi_slope, out)
    flat = ((x < xs[0]) & (lo_slope == 0)) | ((x > xs[-1]) & (hi_slope == 0))
    return np.where(flat, np.nan, out)


@dataclass
class LanguageTransfer:
    """Everything the transfer analysis finds for one language."""

    language: str
    basis: str
    curves: dict[float, ScratchCurve]
    table: pd.DataFrame  # one row per fine-tuned cell
    laws: dict[str, FitResult | None] = field(default_factory=dict)  # "chars" and "tokens"
    law_notes: dict[str, str] = field(default_factory=dict)
    law_points: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass
class TransferAnalysis:
    languages: dict[str, LanguageTransfer]
    comparison: pd.DataFrame


def unit_basis(cells: pd.DataFrame) -> str:
    """ "tokens" when scratch and fine-tuned runs share a tokenizer (equal val tokens per character), else
    "chars" (which needs d_f_chars and best_val_bpc)."""
    tpc = cells.groupby("init")["val_tokens_per_char"].median()
    has_chars = cells["d_f_chars"].notna().all() and cells["best_val_bpc"].notna().all()
    if len(tpc) == 2 and tpc.notna().all() and abs(tpc.iloc[0] / tpc.iloc[1] - 1) > 1e-3 and has_chars:
        return "chars"
    return "tokens"


def analyze_transfer(cells: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0) -> TransferAnalysis:
    """D_E, D_T, D_F / D_E and the transfer law for every language in the cell table.

    Args:
        cells: cells.best_cells output.
        bootstrap: resamples for the intervals of the scratch curves and the transfer law.
        seed: bootstrap seed.

    Returns:
        TransferAnalysis with one LanguageTransfer per language and a cross-language comparison table.
    """
    languages: dict[str, LanguageTransfer] = {}
    bases = {str(lang): unit_basis(lc) for lang, lc in cells.groupby("language", sort=True)}
    curves = _scratch_curves(cells, bases, bootstrap=bootstrap, seed=seed)
    for lang, lc in cells.groupby("language", sort=True):
        basis = bases[str(lang)]
        mine = {n: c for (lg, n), c in curves.items() if lg == lang}
        table = _transfer_table(lc[lc["init"] == "finetune"], mine, basis)
        languages[str(lang)] = LanguageTransfer(language=str(lang), basis=basis, curves=mine, table=table)
    _fit_transfer_laws(languages, bootstrap=bootstrap, seed=seed)
    return TransferAnalysis(languages=languages, comparison=comparison_table(languages))


def _columns(basis: str) -> tuple[str, str]:
    return ("d_f", "best_val_loss") if basis == "tokens" else ("d_f_chars", "best_val_bpc")


def _scratch_curves(
    cells: pd.DataFrame, bases: dict[str, str], *, bootstrap: int, seed: int
) -> dict[tuple[str, float], ScratchCurve]:
    """Scratch curves for every (language, N) in the language's basis; all power-law fits run as one batch."""
    out: dict[tuple[str, float], ScratchCurve] = {}
    to_fit: list[tuple[str, float]] = []
    scratch = cells[cells["init"] == "scratch"]
    for (lang, n), sc in scratch.groupby(["language", "n_params"], sort=True):
        basis = bases[str(lang)]
        dcol, lcol = _columns(basis)
        ok = sc[dcol].notna() & sc[lcol].notna() & (sc[dcol] > 0)
        d, loss = sc.loc[ok, dcol].to_numpy(float), sc.loc[ok, lcol].to_numpy(float)
        if d.size == 0:
            continue
        key = (str(lang), float(n))
        out[key] = ScratchCurve(language=str(lang), n_params=float(n), basis=basis, d=d, loss=loss, fit=None)
        if np.unique(d).size >= MIN_CURVE_POINTS:
            to_fit.append(key)
        else:
            out[key].note = f"{np.unique(d).size} scratch sizes < {MIN_CURVE_POINTS}: log-log interpolation"
    if to_fit:
        fits = fit_groups(
            "power", [({"x": out[k].d}, out[k].loss) for k in to_fit], bootstrap=bootstrap, seed=seed
        )
        for key, res in zip(to_fit, fits, strict=True):
            out[key].fit = res
    return out


def _transfer_table(ft: pd.DataFrame, curves: dict[float, ScratchCurve], basis: str) -> pd.DataFrame:
    """One row per fine-tuned cell: D_E, D_T, D_F / D_E (tokens and characters) with their flags and 95%
    bootstrap intervals (`*_lo`, `*_hi`; NaN where the scratch curve is interpolated or not bootstrapped)."""
    dcol, lcol = _columns(basis)
    rows: list[dict[str, Any]] = []
    for _, c in ft.iterrows():
        curve = curves.get(float(c["n_params"]))
        cpt = c["d_f_chars"] / c["d_f"] if pd.notna(c["d_f_chars"]) else math.nan  # characters per token
        d_e = lo = hi = math.nan
        extrapolated = below = False
        if curve is not None and pd.notna(c[lcol]):
            d_e, extrapolated, below = curve.d_for(float(c[lcol]))
            lo, hi = curve.d_interval(float(c[lcol]))
        # The inversion's unit first, then the other one through the training text's characters per token.
        scale_tok, scale_chr = (1.0, cpt) if basis == "tokens" else (1.0 / cpt, 1.0)
        d_e_tok, d_e_chr = d_e * scale_tok, d_e * scale_chr
        d_f, d_f_chr = float(c["d_f"]), float(c["d_f_chars"])
        d_99 = curve.d_99 if curve is not None else math.nan
        d_99_tok = d_99 if basis == "tokens" else d_99 / cpt
        low = c["d_f"] <= LOW_DATA_FRACTION * d_99_tok if math.isfinite(d_99_tok) else None
        rows.append(
            {
                "language": c["language"],
                "n_params": float(c["n_params"]),
                "size": c.get("size"),
                "d_f": float(c["d_f"]),
                "d_f_chars": float(c["d_f_chars"]),
                "chars_per_token": cpt,
                "loss": float(c["best_val_loss"]),
                "bpc": float(c["best_val_bpc"]),
                "zero_shot_loss": float(c.get("zero_shot_loss", math.nan)),
                "lr": c.get("lr"),
                "schedule_kind": c.get("schedule_kind"),
                "d_e": d_e_tok,
                "d_e_lo": lo * scale_tok,
                "d_e_hi": hi * scale_tok,
                "d_e_chars": d_e_chr,
                "d_e_chars_lo": lo * scale_chr,
                "d_e_chars_hi": hi * scale_chr,
                "d_t": d_e_tok - d_f,
                "d_t_lo": lo * scale_tok - d_f,
                "d_t_hi": hi * scale_tok - d_f,
                "d_t_chars": d_e_chr - d_f_chr,
                "d_t_chars_lo": lo * scale_chr - d_f_chr,
                "d_t_chars_hi": hi * scale_chr - d_f_chr,
                "fraction": d_f / d_e_tok if d_e_tok > 0 else math.nan,
                # D_F / D_E falls as D_E grows: its low end comes from D_E's high end.
                "fraction_lo": d_f / (hi * scale_tok) if hi > 0 else math.nan,
                "fraction_hi": d_f / (lo * scale_tok) if lo > 0 else math.nan,
                "extrapolated": bool(extrapolated),
                "below_asymptote": bool(below),
                "no_scratch": curve is None,
                "scratch_curve": curve.kind if curve is not None else "none",
                "d_99": d_99_tok,
                "low_data": low,
            }
        )
    cols = ["language", "n_params", "d_f", "d_e", "d_t", "fraction", "extrapolated", "below_asymptote"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


def _fit_transfer_laws(languages: dict[str, LanguageTransfer], *, bootstrap: int, seed: int) -> None:
    """D_T = k D_F^alpha N^beta per language and unit, on low-data cells with D_T > 0; one batched fit."""
    jobs: list[tuple[str, str, pd.DataFrame]] = []
    for lang, lt in languages.items():
        for unit, dfc, dtc in (("chars", "d_f_chars", "d_t_chars"), ("tokens", "d_f", "d_t")):
            lt.laws[unit] = None
            t = lt.table
            if t.empty:
                lt.law_notes[unit] = "no fine-tuned cells"
                continue
            low = t["low_data"].map(lambda v: v is None or bool(v)).astype(bool)
            valid = low & np.isfinite(t[dtc]) & (t[dtc] > 0) & np.isfinite(t[dfc]) & ~t["below_asymptote"]
            clean = valid & ~t["extrapolated"]
            # Extrapolated D_E are kept only when too few interpolated ones remain for a 3-parameter fit.
            pts = t[clean] if clean.sum() >= 4 else t[valid]
            notes = [f"{int(valid.sum())} of {len(t)} cells in the low-data regime with D_T > 0"]
            if clean.sum() < 4 and (valid & t["extrapolated"]).any():
                notes.append(f"{int((valid & t['extrapolated']).sum())} with extrapolated D_E kept")
            if t["no_scratch"].any():
                notes.append(
                    f"{int(t['no_scratch'].sum())} cells without scratch runs at their size (no D_E)"
                )
            if (t["scratch_curve"] == "interpolated").any():
                notes.append("low-data regime unknown for interpolated scratch curves (cells kept)")
            lt.law_notes[unit] = "; ".join(notes)
            if len(pts) < 3 or pts["n_params"].nunique() < 2 or pts[dfc].nunique() < 2:
                lt.law_notes[unit] += "; too few points (need 3, with 2 sizes and 2 D_F) to fit"
                continue
            lt.law_points[unit] = pts
            jobs.append((lang, unit, pts))
    if not jobs:
        return
    groups = [
        (
            {"d_f": p["d_f_chars" if u == "chars" else "d_f"], "n": p["n_params"]},
            p["d_t_chars" if u == "chars" else "d_t"],
        )
        for _, u, p in jobs
    ]
    fits = fit_groups("transfer", groups, bootstrap=bootstrap, seed=seed)
    for (lang, unit, _), res in zip(jobs, fits, strict=True):
        languages[lang].laws[unit] = res


def comparison_table(languages: dict[str, LanguageTransfer]) -> pd.DataFrame:
    """One row per language: how much pre-training is worth there, and its transfer law (D in characters).

    Languages are ranked by the median D_F / D_E over cells with a finite D_E (smaller = more transfer).
    """
    rows = []
    for lang, lt in languages.items():
        t = lt.table
        ok = t[np.isfinite(t["fraction"])] if not t.empty else t
        law = lt.laws.get("chars")
        row: dict[str, Any] = {
            "language": lang,
            "basis": lt.basis,
            "finetune_cells": len(t),
            "cells_with_d_e": len(ok),
            "extrapolated": int(t["extrapolated"].sum()) if not t.empty else 0,
            "below_asymptote": int(t["below_asymptote"].sum()) if not t.empty else 0,
            "median_fraction": float(ok["fraction"].median()) if len(ok) else math.nan,
            "median_d_t_chars": float(ok["d_t_chars"].median()) if len(ok) else math.nan,
        }
        for name in ("k", "alpha", "beta"):
            row[name] = law.params[name] if law else math.nan
            row[f"{name}_ci"] = law.ci[name] if law else (math.nan, math.nan)
        row["law_points"] = law.n_points if law else 0
        row["law_rmsd_log"] = law.rmsd_log if law else math.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df["transfer_rank"] = df["median_fraction"].rank(method="min").astype("Int64")
        df = df.sort_values(["transfer_rank", "language"]).reset_index(drop=True)
    return df
