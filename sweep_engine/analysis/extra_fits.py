"""Fits the report lists beside its measurements when a space's `analysis.laws` asks for them.

- `power` / `rectified` per scratch curve: the pure law (E + B / D^beta, or Lin et al.'s B / (D_l + D^beta) + E)
  fitted to the scratch losses of one size, with its RMSD of log loss. D_E comes from the monotone curve through
  the measurements, not from these: they say how far each law is from the data.
- `overtrain` per (language, init): Gadre et al.'s E + (a M^eta + b M^-eta) C^-eta over the cells, C = 6 N D,
  M = D / N.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from sweep_engine.analysis.fit import fit_groups
from sweep_engine.errors import FitError

if TYPE_CHECKING:
    from sweep_engine.analysis.transfer import TransferAnalysis

MIN_POINTS = {"power": 4, "rectified": 5}  # one more point than the law has parameters


def curve_fits(transfer: TransferAnalysis, laws: list[str]) -> pd.DataFrame:
    """One row per (language, N, law) with the law's constants and its RMSD of log loss (no bootstrap)."""
    rows: list[dict[str, Any]] = []
    for law in laws:
        jobs = [
            (lang, n, c)
            for lang, lt in transfer.languages.items()
            for n, c in sorted(lt.curves.items())
            if len(c.d) >= MIN_POINTS[law]
        ]
        if not jobs:
            continue
        key = "x" if law == "power" else "d"
        fits = fit_groups(law, [({key: c.d}, c.loss[:, 0]) for _, _, c in jobs], bootstrap=0)
        for (lang, n, c), fit in zip(jobs, fits, strict=True):
            rows.append({"language": lang, "n_params": n, "law": law, "basis": c.basis, **fit.params,
                         "rmsd_log": fit.rmsd_log, "points": fit.n_points})  # fmt: skip
    return pd.DataFrame(rows)


def overtrain_fits(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (language, init): the over-training law's constants and RMSD, or why there is none."""
    rows: list[dict[str, Any]] = []
    groups, keys = [], []
    for (lang, init), c in cells.groupby(["language", "init"], sort=True):
        c = c[~c["still_falling"].astype(bool)]
        if len(c) < 6 or c["n_params"].nunique() < 2:
            rows.append(
                {"language": lang, "init": init, "note": f"{len(c)} converged cells: need 6 over 2 sizes"}
            )
            continue
        keys.append((lang, init))
        groups.append(({"n": c["n_params"].to_numpy(float), "d": c["d_f"].to_numpy(float)}, c["loss"]))
    if groups:
        try:
            fits = fit_groups("overtrain", groups, bootstrap=0)
        except FitError as exc:
            return pd.DataFrame(rows + [{"note": str(exc)}])
        for (lang, init), fit in zip(keys, fits, strict=True):
            rows.append({"language": lang, "init": init, **fit.params, "rmsd_log": fit.rmsd_log, "note": ""})
    return (
        pd.DataFrame(rows).sort_values(["language", "init"], na_position="last") if rows else pd.DataFrame()
    )
