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
from sweep_engine.analysis.extra_fits import curve_fits, overtrain_fits
from sweep_engine.analysis.ledger_io import read_ledgers
from sweep_engine.analysis.regimes import Regimes, classify, fit_joint, low_data_map, low_data_table
from sweep_engine.analysis.resample import CellReplicates, replicate_cells
from sweep_engine.analysis.transfer import TransferAnalysis, analyze_transfer
from sweep_engine.errors import UserError

JOINT_FORMS = ("kaplan", "chinchilla")
CURVE_LAWS = ("power", "rectified")


@dataclass(frozen=True)
class AnalysisOptions:
    """What the analysis fits, from a space's `analysis:` section (config.AnalysisConfig) or the defaults.

    Attributes:
        laws: kaplan / chinchilla = the joint forms the regimes choose between (by AIC); transfer = the transfer
            law; power / rectified = a parametric fit beside each monotone scratch curve (how far the pure law
            is from the measurements); overtrain = Gadre et al.'s L(C, M) per (language, init), listed.
        holdout_largest: the hold-out check (the joint law without the largest N, scored on it).
        bootstrap: replicates behind every interval.
        seed: seeds the replicates and the fits' bootstrap.
    """

    laws: tuple[str, ...] = ("kaplan", "chinchilla", "transfer")
    holdout_largest: bool = True
    bootstrap: int = 200
    seed: int = 0


DEFAULT_OPTIONS = AnalysisOptions()


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
    options: AnalysisOptions = DEFAULT_OPTIONS
    curve_fits: pd.DataFrame = field(default_factory=pd.DataFrame)  # laws in CURVE_LAWS per scratch curve
    overtrain: pd.DataFrame = field(default_factory=pd.DataFrame)
    figures: list[Any] = field(default_factory=list)  # plots.Figure, filled by report.analyze


def run_analysis(results: Sequence[Path], options: AnalysisOptions = DEFAULT_OPTIONS) -> Analysis:
    """Read the ledgers and compute every table.

    Raises:
        UserError: unreadable ledgers, or no finished transfer runs in them.
    """
    ledger = read_ledgers([Path(r) for r in results])
    return analyze_ledger(ledger, options, sources=[Path(r) for r in results])


def analyze_ledger(
    ledger: pd.DataFrame, options: AnalysisOptions = DEFAULT_OPTIONS, *, sources: Sequence[Path] = ()
) -> Analysis:
    """Every table from a ledger already in memory (read_ledgers output, or a synthetic one).

    Args:
        ledger: ledger rows (docs/ledger.md).
        options: what to fit, and the bootstrap (0 replicates: point estimates only, no intervals).
        sources: where the ledger came from, for the report.

    Raises:
        UserError: no finished transfer runs.
    """
    bootstrap, seed = options.bootstrap, options.seed
    cells = best_cells(ledger)
    if cells.empty:
        where = ", ".join(map(str, sources)) or "the ledger"
        raise UserError(f"{where}: no FINISHED transfer runs in the ledger(s)")
    reps = replicate_cells(cells, ledger, bootstrap=bootstrap, seed=seed)
    forms = tuple(f for f in JOINT_FORMS if f in options.laws)
    joint, notes = fit_joint(cells, bootstrap=bootstrap, seed=seed, forms=forms)
    d99 = low_data_table(cells, joint)
    transfer = analyze_transfer(
        cells, reps, low_data=low_data_map(cells, d99), seed=seed, fit_law="transfer" in options.laws
    )
    regimes = classify(cells, joint, notes, d99)
    usable = {k: f for k, f in joint.items() if not regimes.degenerate[k]}
    return Analysis(
        sources=list(sources),
        cells=cells,
        pretrain=pretrain_runs(ledger),
        reps=reps,
        transfer=transfer,
        regimes=regimes,
        holdout=holdout_largest(cells, bootstrap=0, seed=seed, forms=forms)
        if options.holdout_largest and forms
        else pd.DataFrame(),
        allocation=allocation_table(cells, usable),
        options=options,
        curve_fits=curve_fits(transfer, [law for law in CURVE_LAWS if law in options.laws]),
        overtrain=overtrain_fits(cells) if "overtrain" in options.laws else pd.DataFrame(),
    )
