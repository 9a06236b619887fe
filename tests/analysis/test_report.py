"""`analyze` end to end: two ledgers in, one cross-language report with every figure and table out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sweep_engine.analysis.render import fmt, jsonable
from sweep_engine.analysis.report import analyze, default_report_dir
from sweep_engine.analysis.summary import Entry, SizeOrdering, headline, sci, seed_verdict
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


@pytest.mark.slow
def test_report_opens_with_a_plain_words_summary(summary: dict[str, Any]) -> None:
    md = Path(summary["report_md"]).read_text()
    assert md.index("## Summary") < md.index("## Figures")
    words = "\n".join(summary["plain_summary"])
    # de's k is 10x zh's: German gains most at every size, which agrees with the seed (es is absent).
    assert words.count("German gains most") == 3
    assert (
        "matches the seed study's ordering de > es > zh (of its languages, this sweep has de, zh) at every"
        in words
    )
    assert "Fine-tuning reaches a lower validation loss than training from scratch" in words
    assert "converged" in words and "budget-limited" in words and "data-limited" in words
    assert "extrapolated" in words
    head = summary["headline"]
    assert head["line"].startswith("D_T at D_F=10,000 tokens (tokens, 95% bootstrap interval): xs: de ")
    assert head["matches_seed"] is True
    assert [s["order"] for s in head["sizes"]] == [["de", "zh"]] * 3
    md_cells = md[md.index("## de: fine-tuned cells") :]
    assert "D_T 95% CI (tok)" in md_cells and "D_F/D_E 95% CI" in md_cells
    de = summary["languages"]["de"]["cells"][0]
    assert {"d_t_lo", "d_t_hi", "d_e_lo", "d_e_hi", "d_t_chars_lo", "d_t_chars_hi"} <= set(de)
    assert de["d_t_lo"] <= de["d_t"] <= de["d_t_hi"]


def _ordering(size: str, values: dict[str, tuple[float, float, float]]) -> SizeOrdering:
    entries = [
        Entry(lang, d_t, lo, hi, fraction=0.5, extrapolated=False, below_asymptote=False)
        for lang, (d_t, lo, hi) in sorted(values.items(), key=lambda kv: -kv[1][0])
    ]
    return SizeOrdering(size=size, n_params=1e5, d_f=1000.0, entries=entries)


def test_the_seed_verdict_says_where_the_ordering_fails_with_the_numbers() -> None:
    good = _ordering("xs", {"de": (3.1e4, 2.5e4, 3.9e4), "es": (1.2e4, 1.0e4, 1.5e4), "zh": (2e3, 1e3, 3e3)})
    bad = _ordering("s", {"de": (1.0e4, 0.5e4, 2.5e4), "es": (2.0e4, 1.5e4, 2.5e4), "zh": (3e3, 2e3, 4e3)})
    assert good.matches_seed is True and bad.matches_seed is False
    verdict = seed_verdict([good, bad])
    assert verdict.startswith(
        "The seed study's ordering de > es > zh holds only at xs; at s the order is es 2.0e4"
    )
    assert "es vs de at s" in verdict  # overlapping intervals are called out
    assert seed_verdict([good]).startswith(
        "This matches the seed study's ordering de > es > zh at every size"
    )
    line = headline([good, bad])["line"]
    assert line == (
        "D_T at D_F=1,000 tokens (tokens, 95% bootstrap interval): xs: de 3.1e4 [2.5e4, 3.9e4] > es 1.2e4 "
        "[1.0e4, 1.5e4] > zh 2.0e3 [1.0e3, 3.0e3]; s: es 2.0e4 [1.5e4, 2.5e4] > de 1.0e4 [5.0e3, 2.5e4] > "
        "zh 3.0e3 [2.0e3, 4.0e3]"
    )
    assert headline([good, bad])["matches_seed"] is False
    assert sci(-250.0) == "-2.5e2" and sci(float("nan")) == "n/a"


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
