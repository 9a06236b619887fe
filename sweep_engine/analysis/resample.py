"""Replicates of every cell's loss: a paired bootstrap over held-out documents, plus run-to-run noise.

Every run records its loss on each held-out document at its best step (the ledger's `doc_losses`). One bootstrap
replicate draws the documents once, with replacement, and recomputes every run's loss from them, so all cells
(every language that shares the document ids, both inits, every size and D_F) see the same draw: a fine-tuned
minus scratch gap is paired, and a curve and the loss inverted on it move together, as they would on another
test set. Documents measure the evaluation's noise, not the training's: a cell's loss also varies from seed to
seed. That part is added to each replicate as exp(N(0, s^2 / k)) on the cell's mean of k seeds, with s the
run-to-run SD of the log loss, pooled over every configuration that ran several seeds; without repeated seeds,
s is estimated from the scatter of the scratch losses around smooth fitted curves (a conservative estimate: it
also holds the curves' misfit). Column 0 of every replicate array is the measurement itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sweep_engine.analysis.cells import CELL_KEYS, CONFIG_COLS

LN2 = math.log(2.0)


@dataclass
class DocSplit:
    """Per-document losses of one run on one held-out split."""

    keys: tuple[int, ...]
    tokens: np.ndarray  # tokens predicted per document
    chars: np.ndarray  # characters per document
    loss: np.ndarray  # summed loss per document (nats)


def parse_doc_losses(text: Any, split: str) -> DocSplit | None:
    """The `split` ("val" or "test") of a ledger row's `doc_losses` JSON; None when absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        d = json.loads(text)[split]
        out = DocSplit(
            keys=tuple(int(k) for k in d["keys"]),
            tokens=np.asarray(d["tokens"], dtype=float),
            chars=np.asarray(d["chars"], dtype=float),
            loss=np.asarray(d["loss"], dtype=float),
        )
    except (ValueError, KeyError, TypeError):
        return None
    n = len(out.keys)
    if (
        n == 0
        or not (out.tokens.size == out.chars.size == out.loss.size == n)
        or not np.isfinite(out.loss).all()
    ):
        return None
    return out


@dataclass
class CellReplicates:
    """Replicates of each cell's loss, aligned with the cell table's rows: column 0 the measurement, columns
    1..R bootstrap replicates.

    Attributes:
        loss: [cells, R + 1] nats per token.
        bpc: [cells, R + 1] bits per character.
        docs: languages whose cells are resampled over documents (others vary by seed noise alone).
        run_noise: SD of a run's log loss used for the seed part (NaN: none added).
        run_noise_source: how run_noise was obtained, in words.
        n_boot: R.
    """

    loss: np.ndarray
    bpc: np.ndarray
    docs: dict[str, int]  # language -> documents per replicate
    run_noise: float
    run_noise_source: str
    n_boot: int

    @property
    def method(self) -> str:
        """The interval method in one paragraph, for the report."""
        langs = ", ".join(f"{lang} ({n} documents)" for lang, n in sorted(self.docs.items())) or "none"
        seed = (
            f"plus run-to-run noise with SD {self.run_noise:.4f} in log loss ({self.run_noise_source})"
            if math.isfinite(self.run_noise)
            else f"without run-to-run noise ({self.run_noise_source})"
        )
        return (
            f"95% intervals are percentiles over {self.n_boot} paired bootstrap replicates: held-out documents "
            f"resampled with replacement once per replicate and shared by every cell of the languages with the "
            f"same document ids [{langs}], every cell's loss, scratch curve and D_E recomputed from them, "
            f"{seed}."
        )


def replicate_cells(
    cells: pd.DataFrame, ledger: pd.DataFrame, *, bootstrap: int, seed: int
) -> CellReplicates:
    """Bootstrap replicates of every cell's reported loss (see the module docstring).

    Args:
        cells: cells.best_cells output (its `run_keys` and `split` name the runs behind each cell).
        ledger: the ledger the cells came from (its `doc_losses` and `trial_key` columns).
        bootstrap: replicates R (0: only the measurement, column 0).
        seed: seeds the document draws and the seed noise.

    Returns:
        CellReplicates aligned with `cells`.
    """
    rng = np.random.default_rng(seed)
    by_key = ledger.set_index("trial_key", drop=False) if "trial_key" in ledger else None
    n = len(cells)
    loss = np.repeat(cells["loss"].to_numpy(float)[:, None], bootstrap + 1, axis=1)
    bpc = np.repeat(cells["bpc"].to_numpy(float)[:, None], bootstrap + 1, axis=1)
    docs: dict[str, int] = {}
    if by_key is not None and "doc_losses" in ledger and bootstrap > 0:
        splits = _cell_doc_splits(cells, by_key)
        weights: dict[tuple[int, ...], np.ndarray] = {}
        for lang, idx in cells.groupby("language", sort=True).indices.items():
            keys = {s.keys for i in idx for s in splits[i]} if all(splits[i] for i in idx) else set()
            if len(keys) != 1:
                continue  # some run lacks documents, or runs disagree on them: no document bootstrap here
            (doc_keys,) = keys
            if doc_keys not in weights:  # languages with the same ids share one draw: comparisons stay paired
                j = len(doc_keys)
                weights[doc_keys] = rng.multinomial(j, np.full(j, 1.0 / j), size=bootstrap).astype(float)
            w = weights[doc_keys]
            docs[str(lang)] = len(doc_keys)
            for i in idx:
                runs = splits[i]
                s = np.stack([r.loss for r in runs], axis=1)  # [J, k]
                t = np.stack([r.tokens for r in runs], axis=1)
                c = np.stack([r.chars for r in runs], axis=1)
                nats = w @ s
                loss[i, 1:] = (nats / (w @ t)).mean(axis=1)
                bpc[i, 1:] = (nats / (w @ c)).mean(axis=1) / LN2
    noise, source = run_noise(ledger, cells)
    if bootstrap > 0 and math.isfinite(noise) and noise > 0:
        k = cells["n_seeds"].to_numpy(float)[:, None]
        z = np.exp(rng.normal(0.0, 1.0, size=(n, bootstrap)) * noise / np.sqrt(k))
        loss[:, 1:] *= z
        bpc[:, 1:] *= z
    return CellReplicates(loss, bpc, docs, noise, source, bootstrap)


def _cell_doc_splits(cells: pd.DataFrame, by_key: pd.DataFrame) -> list[list[DocSplit]]:
    """Per cell, the per-document losses of its runs on the cell's reported split ([] if any is missing)."""
    out: list[list[DocSplit]] = []
    for keys, split in zip(cells["run_keys"], cells["split"], strict=True):
        runs = [
            parse_doc_losses(by_key.at[k, "doc_losses"], str(split)) if k in by_key.index else None
            for k in keys
        ]
        out.append([r for r in runs if r is not None] if all(r is not None for r in runs) else [])
    return out


def run_noise(ledger: pd.DataFrame, cells: pd.DataFrame) -> tuple[float, str]:
    """SD of one run's log loss from seed to seed, and how it was obtained.

    Pooled over every (cell, configuration) of the transfer runs that ran two or more seeds; without any,
    the pooled residual SD of the scratch losses around a smooth fitted curve per (language, N) (conservative:
    misfit counts as noise); NaN when neither is possible.
    """
    ok = (ledger["stage"] == "transfer") & (ledger["status"] == "FINISHED") & (ledger["best_val_loss"] > 0)
    runs = ledger[ok]
    col = "test_loss" if "test_loss" in runs and runs["test_loss"].notna().all() else "best_val_loss"
    group = [c for c in CELL_KEYS + CONFIG_COLS if c in runs.columns]
    if not runs.empty and "seed" in runs:
        logs = np.log(runs[col].astype(float))
        g = logs.groupby([runs[c].fillna("-") for c in group])
        k = g.size()
        dof = int((k[k > 1] - 1).sum())
        if dof > 0:
            ss = float(g.var(ddof=1)[k > 1].mul(k[k > 1] - 1).sum())
            return math.sqrt(ss / dof), f"pooled over repeated seeds, {dof} degrees of freedom"
    return _curve_scatter(cells)


def _curve_scatter(cells: pd.DataFrame) -> tuple[float, str]:
    """Pooled residual SD of log scratch loss around a smooth curve per (language, N) (no repeated seeds)."""
    from sweep_engine.analysis.fit import fit_groups  # torch: only on this fallback path

    scratch = cells[(cells["init"] == "scratch") & ~cells["still_falling"]]
    groups, params = [], []
    for _, g in scratch.groupby(["language", "n_params"], sort=True):
        if len(g) >= 5:
            # Lin et al.'s rectified law has the pre-power phase that small D shows; it needs 6 points to leave
            # two degrees of freedom; with 5, the plain power law.
            law = "rectified" if len(g) >= 6 else "power"
            groups.append((law, g["d_f"].to_numpy(float), g["loss"].to_numpy(float)))
            params.append(4 if law == "rectified" else 3)
    if not groups:
        return (
            math.nan,
            "no repeated seeds and no scratch curve with 5 or more points: run-to-run noise unknown",
        )
    ss, dof = 0.0, 0
    for law in ("rectified", "power"):
        chosen = [(d, y) for lw, d, y in groups if lw == law]
        if not chosen:
            continue
        key = "d" if law == "rectified" else "x"
        fits = fit_groups(law, [({key: d}, y) for d, y in chosen], bootstrap=0, delta=1.0)
        for (d, y), fit in zip(chosen, fits, strict=True):
            resid = np.log(fit.predict(**{key: d})) - np.log(y)
            ss += float(np.sum(resid**2))
            dof += len(y) - (4 if law == "rectified" else 3)
    return math.sqrt(
        ss / dof
    ), f"no repeated seeds: scatter of the scratch losses around smooth curves, {dof} d.o.f."


def percentile_interval(reps: np.ndarray, level: float = 95.0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over replicates (last axis; column 0, the measurement, excluded).

    Order statistics ("lower"/"higher"), not interpolation: an infinite replicate gives an infinite end, not
    inf - inf = NaN. NaN replicates are left out; all NaN gives NaN.
    """
    r = np.asarray(reps, dtype=float)[..., 1:]
    tail = (100.0 - level) / 2
    if r.shape[-1] == 0:
        nan = np.full(r.shape[:-1], np.nan)
        return nan, nan.copy()
    with np.errstate(invalid="ignore"):
        lo = np.nanpercentile(r, tail, axis=-1, method="lower")
        hi = np.nanpercentile(r, 100.0 - tail, axis=-1, method="higher")
    return lo, hi
