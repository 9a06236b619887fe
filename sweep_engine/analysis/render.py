"""Formatting for the report: numbers, Markdown and HTML tables, JSON-safe values, atomic writes."""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def fmt(v: Any) -> str:
    """A number as a person reads it: 4 significant digits, scientific beyond 1e5 or below 1e-3."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, tuple | list) and len(v) == 2:
        return f"[{fmt(v[0])}, {fmt(v[1])}]"
    if isinstance(v, int | np.integer):
        return f"{int(v):.3g}" if abs(int(v)) >= 1e5 else str(int(v))
    if isinstance(v, float | np.floating):
        x = float(v)
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.3g}"
        return f"{x:.4g}"
    return str(v)


def table_rows(df: pd.DataFrame, columns: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    """(headers, formatted rows) for the given column -> header mapping (columns missing from df skipped)."""
    cols = [c for c in columns if c in df.columns]
    return [columns[c] for c in cols], [[fmt(v) for v in row] for row in df[cols].itertuples(index=False)]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "_(no rows)_\n"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "<p><em>(no rows)</em></p>\n"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN and inf become None, numpy scalars Python numbers, tuples lists, paths strings."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, pd.DataFrame):
        return [jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
