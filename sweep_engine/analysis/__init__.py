"""Post-processing of sweep results: robust law fits, effective data transferred, regimes, figures, reports.

Plain Python on pandas / numpy / scipy / matplotlib (torch for the batched fits); never Ray or MLflow.

- `fit_law`, `fit_groups` (fit.py): Huber on log loss, L-BFGS from a grid of starts, seeded bootstrap.
- `LAWS` (laws.py): chinchilla, kaplan, power, rectified, overtrain, transfer.
- `run_analysis`, `analyze_ledger` (pipeline.py): ledger(s) in, every table out.
- `analyze` (report.py): ledger(s) in, report.md / report.html / figures out, JSON summary back.
- `synthetic.py`: worlds with a known truth and the ledgers a sweep would record in them.
- `analyze_cmd`, `fit_cmd` (commands.py): the CLI commands.
"""

from __future__ import annotations

from sweep_engine.analysis.fit import FitResult, fit_groups, fit_law
from sweep_engine.analysis.laws import LAWS, Law, get_law

__all__ = ["LAWS", "FitResult", "Law", "fit_groups", "fit_law", "get_law"]


def __getattr__(name: str) -> object:
    # The report pulls in matplotlib; load it only when asked for (`sweep-engine fit` does not need it).
    if name in ("analyze", "default_report_dir"):
        from sweep_engine.analysis import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
