"""Transfer per fine-tuned cell: the paired gap to scratch first, then D_E, D_T = D_E - D_F and D_F / D_E.

The evidence is the gap: at the same N and D_F, the fine-tuned minus the scratch loss, on the same test
documents, with a paired interval (resample.py). D_E is the scratch data that reaches the fine-tuned loss, read
off the monotone scratch curve of that size (curves.py); inside the scratch range its sign agrees with the gap
by construction, outside it is flagged (`position` above/below) and reported as a bound. D_F / D_E is unitless,
so it ranks languages fairly across scripts; D_T is given in tokens and in characters.

Units: the inversion runs in nats per token with D in tokens when a language's scratch and fine-tuned runs
share a tokenizer (equal tokens per character), otherwise in bits per character with D in characters, because
losses per token of different tokenizers cannot be compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweep_engine.analysis.curves import ABOVE, BELOW, INSIDE, ScratchCurve
from sweep_engine.analysis.resample import CellReplicates, percentile_interval
from sweep_engine.analysis.transfer_law import TransferLaw, fit_transfer_law

POSITION = {INSIDE: "inside", ABOVE: "above", BELOW: "below"}


@dataclass
class LanguageTransfer:
    """Everything the transfer analysis finds for one language.

    Attributes:
        curves: N -> scratch curve.
        table: one row per fine-tuned cell (see `transfer_table`).
        reps: (N, D_F) -> replicate arrays of that cell: "gap" (nats/token), "gap_bpc", "fraction", "d_t".
        law: the transfer law fitted in the loss domain (None: no fine-tuned cells).
    """

    language: str
    basis: str
    curves: dict[float, ScratchCurve]
    table: pd.DataFrame
    reps: dict[tuple[float, float], dict[str, np.ndarray]] = field(default_factory=dict)
    law: TransferLaw | None = None


@dataclass
class TransferAnalysis:
    languages: dict[str, LanguageTransfer]
    comparison: pd.DataFrame
    method: str = ""


def unit_basis(cells: pd.DataFrame) -> str:
    """ "tokens" when scratch and fine-tuned runs share a tokenizer (equal val tokens per character), else
    "chars" (which needs d_f_chars and bits per character)."""
    tpc = cells.groupby("init")["val_tokens_per_char"].median()
    has_chars = cells["d_f_chars"].notna().all() and cells["bpc"].notna().all()
    if len(tpc) == 2 and tpc.notna().all() and abs(tpc.iloc[0] / tpc.iloc[1] - 1) > 1e-3 and has_chars:
        return "chars"
    return "tokens"


def analyze_transfer(
    cells: pd.DataFrame,
    reps: CellReplicates,
    *,
    low_data: dict[tuple[str, float, float], str] | None = None,
    seed: int = 0,
    fit_law: bool = True,
) -> TransferAnalysis:
    """D_E, D_T, D_F / D_E, the gaps and the transfer law for every language in the cell table.

    Args:
        cells: cells.best_cells output.
        reps: replicates of every cell's loss (resample.replicate_cells), aligned with `cells`.
        low_data: (language, N, D_F) -> "low-data" / "beyond low-data" / "unknown" (regimes.py); cells
            known to lie beyond the low-data regime are kept out of the transfer law.
        seed: seeds the transfer-law fits' starts (deterministic otherwise).
        fit_law: fit the transfer law (analysis.laws lists "transfer").

    Returns:
        TransferAnalysis with one LanguageTransfer per language and a cross-language comparison table.
    """
    languages: dict[str, LanguageTransfer] = {}
    for lang, lc in cells.groupby("language", sort=True):
        lang = str(lang)
        basis = unit_basis(lc)
        curves = scratch_curves(lc, reps, basis)
        table, cell_reps = transfer_table(lc, reps, curves, basis, low_data or {})
        lt = LanguageTransfer(lang, basis, curves, table, cell_reps)
        if not table.empty and fit_law:
            lt.law = fit_transfer_law(lt, reps, lc, seed=seed)
        languages[lang] = lt
    return TransferAnalysis(languages=languages, comparison=comparison_table(languages), method=reps.method)


def basis_columns(basis: str) -> tuple[str, str]:
    """The cell table's (D column, loss column) in a basis."""
    return ("d_f", "loss") if basis == "tokens" else ("d_f_chars", "bpc")


def _rep_loss(reps: CellReplicates, basis: str) -> np.ndarray:
    return reps.loss if basis == "tokens" else reps.bpc


def scratch_curves(lc: pd.DataFrame, reps: CellReplicates, basis: str) -> dict[float, ScratchCurve]:
    """One curve per size from the language's scratch cells; cells the budget cut while still falling are
    kept out (they measure compute, not data) and listed in the curve's `excluded`."""
    dcol, _ = basis_columns(basis)
    values = _rep_loss(reps, basis)
    out = {}
    for n, g in lc[lc["init"] == "scratch"].groupby("n_params", sort=True):
        keep = g[~g["still_falling"].astype(bool) & g[dcol].notna() & (g[dcol] > 0)]
        excluded = [
            (float(d), "stopped by the token budget while its loss still fell")
            for d in g.loc[g["still_falling"].astype(bool), dcol]
        ]
        out[float(n)] = ScratchCurve(
            str(g["language"].iloc[0]),
            float(n),
            basis,
            keep[dcol].to_numpy(float),
            values[keep.index.to_numpy()],
            excluded,
        )
    return out


def transfer_table(
    lc: pd.DataFrame,
    reps: CellReplicates,
    curves: dict[float, ScratchCurve],
    basis: str,
    low_data: dict[tuple[str, float, float], str],
) -> tuple[pd.DataFrame, dict[tuple[float, float], dict[str, np.ndarray]]]:
    """One row per fine-tuned cell (gap, D_E, D_T, D_F / D_E with intervals and flags) and its replicates."""
    dcol, _ = basis_columns(basis)
    values = _rep_loss(reps, basis)
    scratch = {
        (float(n), float(d)): i
        for i, n, d in zip(lc.index, lc["n_params"], lc["d_f"], strict=True)
        if lc.at[i, "init"] == "scratch"
    }
    same_tok = basis == "tokens"
    rows: list[dict[str, Any]] = []
    cell_reps: dict[tuple[float, float], dict[str, np.ndarray]] = {}
    for i, c in lc[lc["init"] == "finetune"].iterrows():
        n, d_f = float(c["n_params"]), float(c["d_f"])
        cpt = float(c["d_f_chars"]) / d_f if pd.notna(c["d_f_chars"]) else math.nan  # characters per token
        row: dict[str, Any] = {
            "language": c["language"],
            "size": c.get("size"),
            "n_params": n,
            "d_f": d_f,
            "d_f_chars": float(c["d_f_chars"]),
            "chars_per_token": cpt,
            "split": c["split"],
            "loss": float(c["loss"]),
            "bpc": float(c["bpc"]),
            "zero_shot_loss": float(c.get("zero_shot_loss", math.nan)),
            "lr": c.get("lr"),
            "schedule_kind": c.get("schedule_kind"),
            "n_seeds": int(c["n_seeds"]),
            "ft_still_falling": bool(c["still_falling"]),
            "low_data": low_data.get((str(c["language"]), n, d_f), "unknown"),
        }
        r: dict[str, np.ndarray] = {}
        # ---- the evidence: the paired gap to the scratch cell of the same N and D_F ----
        if (n, d_f) in scratch:
            j = scratch[(n, d_f)]
            r["gap"] = reps.loss[i] - reps.loss[j] if same_tok else np.full(reps.loss.shape[1], math.nan)
            r["gap_bpc"] = reps.bpc[i] - reps.bpc[j]
            row["scratch_loss"], row["scratch_bpc"] = float(lc.at[j, "loss"]), float(lc.at[j, "bpc"])
            row["scratch_still_falling"] = bool(lc.at[j, "still_falling"])
        else:
            r["gap"] = r["gap_bpc"] = np.full(reps.loss.shape[1], math.nan)
            row["scratch_loss"] = row["scratch_bpc"] = math.nan
            row["scratch_still_falling"] = False
        for name in ("gap", "gap_bpc"):
            lo, hi = percentile_interval(r[name])
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = float(r[name][0]), float(lo), float(hi)
        sd = float(np.nanstd(r["gap_bpc"][1:])) if r["gap_bpc"].size > 2 else math.nan
        row["gap_z"] = row["gap_bpc"] / sd if sd > 0 else math.nan
        # ---- D_E on the scratch curve, then D_T and D_F / D_E in tokens and characters ----
        curve = curves.get(n)
        if curve is not None and curve.usable:
            d_e, pos = curve.invert(values[i])
        else:
            d_e, pos = np.full(values.shape[1], math.nan), np.full(values.shape[1], INSIDE)
        to_tok, to_chr = (1.0, cpt) if basis == "tokens" else (1.0 / cpt, 1.0)
        d_e_tok = d_e * to_tok
        r["d_t"] = d_e_tok - d_f
        with np.errstate(divide="ignore", invalid="ignore"):
            r["fraction"] = np.where(d_e_tok > 0, d_f / d_e_tok, np.inf)
        for name, arr in (
            ("d_e", d_e_tok),
            ("d_e_chars", d_e * to_chr),
            ("d_t", r["d_t"]),
            ("d_t_chars", d_e * to_chr - float(c["d_f_chars"])),
            ("fraction", r["fraction"]),
        ):
            lo, hi = percentile_interval(arr)
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = float(arr[0]), float(lo), float(hi)
        row["position"] = POSITION[int(pos[0])] if curve is not None and curve.usable else "no curve"
        row["extrapolated"] = row["position"] != "inside"
        row["position_share"] = float(np.mean(pos[1:] != INSIDE)) if pos.size > 1 else math.nan
        row["scratch_points"] = len(curve.d) if curve is not None else 0
        row["scratch_range"] = (
            (float(curve.d[0] * to_tok), float(curve.d[-1] * to_tok))
            if curve is not None and len(curve.d)
            else None
        )
        row["bound"] = _bound(row)
        rows.append(row)
        cell_reps[(n, d_f)] = r
    return pd.DataFrame(rows), cell_reps


def _bound(row: dict[str, Any]) -> str:
    """What an out-of-range D_E says for sure, in tokens (empty inside the range)."""
    rng = row["scratch_range"]
    if row["position"] == "above" and rng:
        return f"D_E > {rng[1]:.3g} (beyond the largest scratch run)"
    if row["position"] == "below" and rng:
        return f"D_E < {rng[0]:.3g} (below the smallest scratch run)"
    if row["ft_still_falling"]:
        return "fine-tuned run cut by its budget: D_E is a lower bound"
    return ""


def comparison_table(languages: dict[str, LanguageTransfer]) -> pd.DataFrame:
    """One row per language: D_F / D_E at its smallest D_F (geometric mean over sizes), the law, the flags.

    Languages are ranked by that D_F / D_E (smaller = more transfer): a unitless measure, fair across scripts.
    """
    rows = []
    for lang, lt in languages.items():
        t = lt.table
        row: dict[str, Any] = {"language": lang, "basis": lt.basis, "finetune_cells": len(t)}
        if t.empty:
            rows.append(row)
            continue
        smallest = t[t["d_f"] == t["d_f"].min()]
        inside = smallest[smallest["position"] == "inside"]
        frac = inside["fraction"].to_numpy(float)
        row.update(
            {
                "smallest_d_f": float(t["d_f"].min()),
                "fraction_smallest": float(np.exp(np.mean(np.log(frac))))
                if frac.size and (frac > 0).all()
                else math.nan,
                "outside_range": int(t["extrapolated"].sum()),
                "gap_clear": int(((t["gap_bpc_hi"] < 0) | (t["gap_bpc_lo"] > 0)).sum()),
                "finetune_better_clear": int((t["gap_bpc_hi"] < 0).sum()),
            }
        )
        law = lt.law
        row["law"] = law.status if law else "not fitted"
        for name in ("k", "alpha", "beta"):
            row[name], row[f"{name}_ci"] = math.nan, (math.nan, math.nan)
            if law is not None and law.identified:  # constants only for an identified law
                row[name], row[f"{name}_ci"] = law.params[name], law.ci[name]
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty and "fraction_smallest" in df:
        df["transfer_rank"] = df["fraction_smallest"].rank(method="min").astype("Int64")
        df = df.sort_values(["transfer_rank", "language"]).reset_index(drop=True)
    return df
