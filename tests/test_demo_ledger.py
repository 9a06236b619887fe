"""The laptop study shipped in docs/demo/: its ledgers rebuild the whole report on a fresh clone through the real
`sweep-engine analyze`, they meet the study's rules (converged cells, seeds, a flat English curve), and README
quotes the answer they give, line for line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sweep_engine.analysis.cells import best_cells
from sweep_engine.ledger import read_ledger

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "docs" / "demo"
SWEEPS = ("chinese", "spanish", "german")  # the demo's launch order: chinese owns the English pre-training
INVERTED_STOPS = {"overfit", "plateau"}  # a run the analysis inverts must have found its best validation loss


def _ledgers() -> pd.DataFrame:
    return pd.concat([read_ledger(DEMO / name / "trials.parquet") for name in SWEEPS], ignore_index=True)


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    # A copy, so that the report lands in a temporary directory as it would beside a fresh clone's results.
    root = tmp_path_factory.mktemp("demo-ledgers")
    for name in SWEEPS:
        (root / name).mkdir()
        shutil.copy(DEMO / name / "trials.parquet", root / name / "trials.parquet")
    run = subprocess.run(
        [sys.executable, "-m", "sweep_engine.cli", "analyze", *(str(root / n) for n in SWEEPS), "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(run.stdout), root


@pytest.mark.slow
def test_analyze_rebuilds_the_whole_report_from_the_shipped_ledgers(
    rebuilt: tuple[dict[str, Any], Path],
) -> None:
    summary, root = rebuilt
    report = Path(summary["report_dir"])
    assert report == root / "report-chinese-spanish-german"
    assert {"de", "es", "zh"} == set(summary["languages"])
    for name in ("report.md", "report.html"):
        assert (report / name).stat().st_size > 1000
    figures = {f["name"]: Path(f["file"]) for f in summary["figures"]}
    assert {"gaps", "pretrain", "transfer_de", "transfer_es", "transfer_zh"} <= set(figures)
    assert all(path.parent == report / "figures" and path.stat().st_size > 0 for path in figures.values())
    # Nothing but the report was written beside the ledgers (no MLflow store appears from nowhere).
    assert sorted(p.name for p in root.iterdir()) == sorted([*SWEEPS, report.name])


@pytest.mark.slow
def test_readme_quotes_the_answer_the_shipped_ledgers_give(rebuilt: tuple[dict[str, Any], Path]) -> None:
    summary, _ = rebuilt
    readme = (REPO / "README.md").read_text()
    head = summary["headline"]
    for line in [*head["evidence"], *head["transfer"], head["verdict"]]:
        assert line in readme, f"README does not quote the shipped ledger's line: {line}"


@pytest.mark.slow
def test_where_the_gap_is_clear_d_t_excludes_zero_on_the_same_side(
    rebuilt: tuple[dict[str, Any], Path],
) -> None:
    summary, _ = rebuilt
    smallest = min(c["d_f"] for info in summary["languages"].values() for c in info["cells"])
    clear = agree = 0
    for info in summary["languages"].values():
        for c in (c for c in info["cells"] if c["d_f"] == smallest):
            helps, hurts = c["gap_bpc_hi"] < 0, c["gap_bpc_lo"] > 0  # bits per character: fair across scripts
            clear += helps or hurts
            agree += (helps and c["d_t_lo"] > 0) or (hurts and c["d_t_hi"] < 0)
    assert clear > 0
    assert agree == clear


def test_the_shipped_study_meets_its_rules() -> None:
    ledger = _ledgers()
    assert (ledger["status"] == "FINISHED").all()
    english = ledger[ledger["stage"] == "pretrain"].drop_duplicates("trial_key")
    assert len(english) == 3 and (english["stop_reason"] == "plateau").all()
    # The cells the analysis inverts: each (language, init, N, D_F)'s configuration chosen on validation.
    cells = best_cells(ledger)
    n_d_f = ledger.loc[ledger["stage"] == "transfer", "d_f"].nunique()
    assert len(cells) == 3 * 3 * n_d_f * 2  # languages x sizes x D_F x inits, all there
    assert set(cells["stop_reason"]) <= INVERTED_STOPS, cells["stop_reason"].value_counts()
    smallest = cells["d_f"] == cells["d_f"].min()
    assert (cells.loc[~smallest, "n_seeds"] >= 2).all() and (cells.loc[smallest, "n_seeds"] >= 3).all()
    # Successive halving: each cell's first seed tried both LR arms, and losers stopped early as `pruned`.
    transfer = ledger[ledger["stage"] == "transfer"]
    assert (transfer["stop_reason"] == "pruned").sum() > 0
