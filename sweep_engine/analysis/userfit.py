"""`sweep-engine fit`: any law fitted to a user's CSV, optionally per group and with a hold-out of the largest N.

Columns are found by option or by a default name (n / n_params, d / d_f, compute / flops, loss / best_val_loss,
dt / d_t). The joint laws take D = C / (6 N) when the CSV has compute instead of D.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep_engine.analysis.fit import FitResult, fit_groups
from sweep_engine.analysis.laws import LAWS, get_law
from sweep_engine.errors import UserError

DEFAULT_COLUMNS = {
    "n": ("n", "n_params", "N"),
    "d": ("d", "d_f", "D", "tokens"),
    "compute": ("compute", "flops", "C"),
    "loss": ("loss", "best_val_loss", "L"),
    "dt": ("dt", "d_t", "D_T"),
}


def read_csv(path: Path) -> pd.DataFrame:
    """The user's table.

    Raises:
        UserError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return pd.read_csv(io.BytesIO(path.read_bytes()))
    except Exception as exc:  # any parse failure is bad input
        raise UserError(f"{path}: cannot read as CSV ({type(exc).__name__}: {exc})") from None


def _column(df: pd.DataFrame, role: str, given: str | None, required: bool) -> str | None:
    """The column playing `role`: the one named by its option (must exist) or the first default name found."""
    if given is not None:
        if given not in df.columns:
            raise UserError(f"--{role} {given!r}: no such column; the CSV has {list(df.columns)}")
        return given
    found = next((c for c in DEFAULT_COLUMNS[role] if c in df.columns), None)
    if found is None and required:
        names = " or ".join(repr(c) for c in DEFAULT_COLUMNS[role])
        raise UserError(
            f"no {role} column: name one with --{role} COL (none of {names} in {list(df.columns)})"
        )
    return found


def law_inputs(
    law_name: str,
    df: pd.DataFrame,
    *,
    n: str | None = None,
    d: str | None = None,
    compute: str | None = None,
    loss: str | None = None,
    dt: str | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, str]]:
    """The law's inputs and target from the CSV: (inputs, target, labels for error messages).

    Raises:
        UserError: unknown law, or a needed column missing (the message names the option to use).
    """
    law = get_law(law_name)
    num = lambda c: pd.to_numeric(df[c], errors="coerce").to_numpy(float)  # noqa: E731
    if law.name == "transfer":
        cn, cd = _column(df, "n", n, True), _column(df, "d", d, True)
        ct = _column(df, "dt", dt, True)
        assert cn and cd and ct
        return {"d_f": num(cd), "n": num(cn)}, num(ct), {"d_f": cd, "n": cn, "target": ct}
    cl = _column(df, "loss", loss, True)
    assert cl
    if law.name == "power":
        # One variable: the option given, else the first of D, N, C the CSV has.
        given = [(r, c) for r, c in (("d", d), ("n", n), ("compute", compute)) if c is not None]
        if len(given) > 1:
            raise UserError(
                f"law power has one input; give one of --d, --n, --compute, got {[r for r, _ in given]}"
            )
        role, col = (
            given[0]
            if given
            else next(
                ((r, c) for r in ("d", "n", "compute") if (c := _column(df, r, None, False))), ("d", None)
            )
        )
        if col is None:
            raise UserError("law power needs its variable: give --d, --n or --compute")
        col = _column(df, role, col, True)
        assert col
        return {"x": num(col)}, num(cl), {"x": col, "target": cl}
    if law.name == "rectified":
        cd = _column(df, "d", d, True)
        assert cd
        return {"d": num(cd)}, num(cl), {"d": cd, "target": cl}
    # chinchilla, kaplan, overtrain: N and D, or either of them with compute C = 6 N D.
    cn, cd, cc = (
        _column(df, "n", n, False),
        _column(df, "d", d, False),
        _column(df, "compute", compute, False),
    )
    if cn and cd:
        return {"n": num(cn), "d": num(cd)}, num(cl), {"n": cn, "d": cd, "target": cl}
    if cn and cc:
        return (
            {"n": num(cn), "d": num(cc) / (6.0 * num(cn))},
            num(cl),
            {"n": cn, "d": f"{cc}/(6*{cn})", "target": cl},
        )
    if cd and cc:
        return (
            {"n": num(cc) / (6.0 * num(cd)), "d": num(cd)},
            num(cl),
            {"n": f"{cc}/(6*{cd})", "d": cd, "target": cl},
        )
    raise UserError(
        f"law {law.name} needs two of N, D, compute: give --n and --d, or --compute with one of them"
    )


def fit_csv(
    law_name: str,
    path: Path,
    *,
    n: str | None = None,
    d: str | None = None,
    compute: str | None = None,
    loss: str | None = None,
    dt: str | None = None,
    by: str | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    holdout_largest: bool = False,
    delta: float | None = None,
) -> list[dict[str, Any]]:
    """Fit `law_name` to the CSV at `path` (per value of column `by` when given).

    Returns:
        One dict per group: the FitResult's JSON form (law, params, ci, rmsd_log, n_points, ...), with
        "group" under `by` and "holdout" under `holdout_largest`.

    Raises:
        UserError / FitError: bad input (unknown law, missing column, too few points, NaN, loss <= 0, ...).
    """
    if law_name not in LAWS:
        raise UserError(f"LAW must be one of {sorted(LAWS)}, got {law_name!r}")
    df = read_csv(path)
    if by is not None and by not in df.columns:
        raise UserError(f"--by {by!r}: no such column; the CSV has {list(df.columns)}")
    parts = [(None, df)] if by is None else [(g, sub) for g, sub in df.groupby(by, sort=True)]
    groups: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    held: list[tuple[dict[str, np.ndarray], np.ndarray, float]] = []
    labels: dict[str, str] = {}
    for _, sub in parts:
        inputs, target, labels = law_inputs(law_name, sub, n=n, d=d, compute=compute, loss=loss, dt=dt)
        if holdout_largest:
            n_arr = _holdout_n(law_name, sub, inputs, n)
            top = n_arr == np.nanmax(n_arr)
            held.append(({k: v[top] for k, v in inputs.items()}, target[top], float(np.nanmax(n_arr))))
            inputs, target = {k: v[~top] for k, v in inputs.items()}, target[~top]
        groups.append((inputs, target))
    names = None if by is None else [f"{by}={name}" for name, _ in parts]
    fits = fit_groups(
        law_name, groups, bootstrap=bootstrap, seed=seed, delta=delta, labels=labels, names=names
    )
    out = []
    for i, ((name, _), fit) in enumerate(zip(parts, fits, strict=True)):
        res = fit.to_dict()
        if by is not None:
            res = {"group": _plain(name), **res}
        if holdout_largest:
            res["holdout"] = _score_holdout(fit, *held[i])
        out.append(res)
    return out


def _holdout_n(law_name: str, df: pd.DataFrame, inputs: dict[str, np.ndarray], n: str | None) -> np.ndarray:
    if "n" in inputs:
        return inputs["n"]
    col = _column(df, "n", n, False)
    if col is None:
        raise UserError(f"--holdout-largest needs an N column for law {law_name}: give --n COL")
    return pd.to_numeric(df[col], errors="coerce").to_numpy(float)


def _score_holdout(
    fit: FitResult, inputs: dict[str, np.ndarray], target: np.ndarray, n_max: float
) -> dict[str, Any]:
    """How well the fit without the largest N predicts that N's points."""
    pred = fit.predict(**inputs)
    err = np.log(pred) - np.log(target)
    ok = np.isfinite(err)
    return {
        "held_out_n": n_max,
        "n_points": int(ok.sum()),
        "rmsd_log": float(np.sqrt(np.mean(err[ok] ** 2))) if ok.any() else None,
        "max_rel_error": float(np.max(np.abs(np.expm1(err[ok])))) if ok.any() else None,
    }


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def describe(res: dict[str, Any]) -> str:
    """A fit as a few lines of text (the non-JSON output of `fit`)."""
    law = get_law(res["law"])
    head = f"{law.name}: {law.formula}" + (f"   [{res['group']}]" if "group" in res else "")
    lines = [head]
    for k, v in res["params"].items():
        lo, hi = res["ci"][k]
        ci = f"  95% CI [{_g(lo)}, {_g(hi)}]" if lo is not None else ""
        lines.append(f"  {k:>8} = {_g(v)}{ci}")
    lines.append(
        f"  RMSD of log {'D_T' if law.target == 'dt' else 'loss'} = {_g(res['rmsd_log'])}, {res['n_points']} points"
    )
    if "holdout" in res:
        h = res["holdout"]
        lines.append(
            f"  held out N = {_g(h['held_out_n'])}: {h['n_points']} points, RMSD log {_g(h['rmsd_log'])}, "
            f"max relative error {_g(h['max_rel_error'])}"
        )
    return "\n".join(lines)


def _g(v: Any) -> str:
    return "nan" if v is None else f"{v:.4g}"
