"""The analysis as one function: ledger(s) in, every table out (`Analysis`); no files written.

The order of the stages is the order of the evidence:

    cells      best configuration per (language, init, N, D_F), chosen on validation, reported on test
    resample   paired bootstrap replicates of every cell's loss (documents + seed noise)
    regimes    bounded joint fits L(N, D) -> D(N) with an interval -> the low-data regime of each cell
    transfer   gap to scratch, D_E on the monotone scratch curve, D_T, D_F / D_E, the transfer law
    regimes    the labels of every cell; hold-out; allocation

report.py draws and writes what this returns; `sweep-engine plan --power` runs it on synthetic ledgers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sweep_engine.analysis.allocation import allocation_table, holdout_largest
from sweep_engine.analysis.cells import best_cells, pretrain_runs
from sweep_engine.analysis.ledger_io import read_ledgers
from sweep_engine.analysis.regimes import Regimes, classify, fit_joint, low_data_map, low_data_table
from sweep_engine.analysis.resample import CellReplicates, replicate_cells
from sweep_engine.analysis.transfer import TransferAnalysis, analyze_transfer
from sweep_engine.errors import UserError


@dataclass
class Analysis:
    """Everything computed from the ledgers; the figures and tables read only this."""

    sources: list[Path]
    cells: pd.DataFrame
    pretrain: pd.DataFrame
    reps: CellReplicates
    transfer: TransferAnalysis
    regimes: Regimes
    holdout: pd.DataFrame
    allocation: pd.DataFrame
    figures: list[Any] = field(default_factory=list)  # plots.Figure, filled by report.analyze


def run_analysis(results: Sequence[Path], *, bootstrap: int = 200, seed: int = 0) -> Analysis:
    """Read the ledgers and compute every table.

    Raises:
        UserError: unreadable ledgers, or no finished transfer runs in them.
    """
    ledger = read_ledgers([Path(r) for r in results])
    return analyze_ledger(ledger, bootstrap=bootstrap, seed=seed, sources=[Path(r) for r in results])


def analyze_ledger(
    ledger: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0, sources: Sequence[Path] = ()
) -> Analysis:
    """Every table from a ledger already in memory (read_ledgers output, or a synthetic one).

    Args:
        ledger: ledger rows (docs/ledger.md).
        bootstrap: replicates behind every interval (0: point estimates only, no intervals).
        seed: seeds the replicates and the fits' bootstrap.
        sources: where the ledger came from, for the report.

    Raises:
        UserError: no finished transfer runs.
    """
    cells = best_cells(ledger)
    if cells.empty:
        where = ", ".join(map(str, sources)) or "the ledger"
        raise UserError(f"{where}: no FINISHED transfer runs in the ledger(s)")
    reps = replicate_cells(cells, ledger, bootstrap=bootstrap, seed=seed)
    joint, notes = fit_joint(cells, bootstrap=bootstrap, seed=seed)
    d99 = low_data_table(cells, joint)
    transfer = analyze_transfer(cells, reps, low_data=low_data_map(cells, d99), seed=seed)
    regimes = classify(cells, joint, notes, d99)
    usable = {k: f for k, f in joint.items() if not regimes.degenerate[k]}
    return Analysis(
        sources=list(sources),
        cells=cells,
        pretrain=pretrain_runs(ledger),
        reps=reps,
        transfer=transfer,
        regimes=regimes,
        holdout=holdout_largest(cells, bootstrap=0, seed=seed),
        allocation=allocation_table(cells, usable),
    )
