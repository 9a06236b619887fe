"""`analyze` end to end: two ledgers in, one cross-language report with every figure and table out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sweep_engine.analysis.render import fmt, jsonable
from sweep_engine.analysis.report import analyze, default_report_dir
from sweep_engine.errors import UserError

FIGURES = {
    "transfer_de",
    "transfer_zh",
    "fraction",
    "transfer_law",
    "loss_vs_n",
    "bpc",
    "compute",
    "scratch_fits",
    "joint_fits",
    "regimes",
    "pretrain",
    "forgetting",
}


@pytest.fixture(scope="module")
def summary(ledger_dirs: list[Path]) -> dict[str, Any]:
    return analyze(ledger_dirs, bootstrap=10, seed=0)


@pytest.mark.slow
def test_report_has_every_figure_and_table(summary: dict[str, Any], ledger_dirs: list[Path]) -> None:
    out = Path(summary["report_dir"])
    assert out == ledger_dirs[0].parent / "report-german-chinese"
    assert {f["name"] for f in summary["figures"]} == FIGURES
    for f in summary["figures"]:
        png = Path(f["file"])
        assert png.parent == out / "figures" and png.stat().st_size > 5000
        assert f["units"]
    md = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"](figures/{name}.png)" in md
    for title in (
        "Languages compared",
        "de: fine-tuned cells",
        "zh: transfer law",
        "Regimes",
        "Allocation",
        "Hold-out",
    ):
        assert f"## {title}" in md
    assert md.count("Units: ") >= len(FIGURES) + 8  # every figure and table says its units
    html = (out / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == len(FIGURES)  # self-contained
    assert "figures/" not in html
    assert (out / "report.md").stat().st_mode & 0o044  # readable by others, not mkstemp's 0600


@pytest.mark.slow
def test_summary_is_json_with_the_per_language_tables(summary: dict[str, Any]) -> None:
    text = json.dumps(summary, allow_nan=False)
    back = json.loads(text)
    assert set(back["languages"]) == {"de", "zh"}
    de = back["languages"]["de"]
    assert len(de["cells"]) == 15
    assert {"d_t", "d_t_chars", "fraction", "extrapolated", "below_asymptote", "low_data"} <= set(
        de["cells"][0]
    )
    law = de["transfer_law"]["chars"]
    assert set(law["ci"]) == {"k", "alpha", "beta"}
    assert law["ci"]["alpha"][0] <= law["params"]["alpha"] <= law["ci"]["alpha"][1]
    assert len(de["regimes"]) == 30
    assert {"limited_by", "param_term_share", "convergence", "on_frontier"} <= set(de["regimes"][0])
    assert [r["language"] for r in back["comparison"]] == ["de", "zh"]
    assert len(back["allocation"]) > 0 and len(back["holdout_largest"]) == 4


def test_default_report_dirs(ledger_dirs: list[Path]) -> None:
    de, zh = ledger_dirs
    assert default_report_dir([de]) == de / "report"
    assert default_report_dir([de / "trials.parquet"]) == de / "report"
    assert default_report_dir([zh, de]) == de.parent / "report-chinese-german"
    with pytest.raises(UserError, match="no such file or directory"):
        default_report_dir([de.parent / "nope"])


def test_a_ledger_without_transfer_runs_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "trials.csv").write_text(
        "stage,language,init,n_params,d_f,status,best_val_loss\npretrain,en,scratch,1,1,FINISHED,3\n"
    )
    with pytest.raises(UserError, match="no FINISHED transfer runs"):
        analyze([tmp_path])
    (tmp_path / "trials.csv").write_text("stage,language\ntransfer,de\n")
    with pytest.raises(UserError, match=r"column\(s\) \['init', 'n_params'"):
        analyze([tmp_path])


def test_numbers_are_formatted_for_people() -> None:
    assert fmt(0.123456) == "0.1235"
    assert fmt(1234567.0) == "1.23e+06"
    assert fmt(float("nan")) == "–"
    assert fmt(float("inf")) == "∞"
    assert fmt((1.0, 2.0)) == "[1, 2]"
    assert fmt(True) == "yes"
    assert jsonable({"a": float("nan"), "b": (1, float("inf"))}) == {"a": None, "b": [1, None]}
