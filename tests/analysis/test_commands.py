"""The `analyze` and `fit` commands through Typer, registered on a small app the way cli.py does."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from sweep_engine.analysis import commands, plots
from sweep_engine.analysis.commands import analyze_cmd, fit_cmd, resolve_results_dir


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("analyze")(analyze_cmd)
    app.command("fit")(fit_cmd)
    return app


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def chinchilla_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two groups following E + A/N^alpha + B/D^beta with known constants, given as N and compute."""
    rng = np.random.default_rng(0)
    n, d = (m.ravel() for m in np.meshgrid(np.geomspace(1e7, 1e10, 5), np.geomspace(1e9, 1e12, 5)))
    rows = []
    for group, (e, a, b, alpha, beta) in {
        "g1": (1.8, 400.0, 1500.0, 0.34, 0.28),
        "g2": (2.2, 300.0, 900.0, 0.3, 0.32),
    }.items():
        loss = (e + a / n**alpha + b / d**beta) * np.exp(rng.normal(0, 0.002, n.size))
        rows.append(pd.DataFrame({"model": group, "params": n, "train_flops": 6 * n * d, "loss": loss}))
    path = tmp_path_factory.mktemp("csv") / "points.csv"
    pd.concat(rows).to_csv(path, index=False)
    return path


def test_fit_json_has_the_documented_keys(runner: CliRunner, app: typer.Typer, chinchilla_csv: Path) -> None:
    df = pd.read_csv(chinchilla_csv)
    df[df["model"] == "g1"].to_csv(chinchilla_csv.with_name("g1.csv"), index=False)
    args = [
        "fit",
        "chinchilla",
        str(chinchilla_csv.with_name("g1.csv")),
        "--n",
        "params",
        "--compute",
        "train_flops",
    ]
    res = runner.invoke(app, [*args, "--json", "--bootstrap", "30", "--seed", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"law", "params", "ci", "rmsd_log", "n_points"} <= set(out)
    assert out["law"] == "chinchilla" and out["n_points"] == 25
    assert set(out["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert out["params"]["alpha"] == pytest.approx(0.34, abs=0.03)
    assert all(len(v) == 2 for v in out["ci"].values())
    text = runner.invoke(app, [*args, "--bootstrap", "0"])
    assert text.exit_code == 0 and "alpha =" in text.stdout and "25 points" in text.stdout


def test_fit_by_column_fits_each_group(runner: CliRunner, app: typer.Typer, chinchilla_csv: Path) -> None:
    args = [
        "fit",
        "chinchilla",
        str(chinchilla_csv),
        "--n",
        "params",
        "--compute",
        "train_flops",
        "--by",
        "model",
    ]
    res = runner.invoke(app, [*args, "--json", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["group"] for r in out] == ["g1", "g2"]
    assert out[0]["params"]["E"] == pytest.approx(1.8, abs=0.1)
    assert out[1]["params"]["E"] == pytest.approx(2.2, abs=0.1)


def test_fit_holdout_largest_scores_the_largest_n(
    runner: CliRunner, app: typer.Typer, chinchilla_csv: Path
) -> None:
    args = [
        "fit",
        "chinchilla",
        str(chinchilla_csv),
        "--n",
        "params",
        "--compute",
        "train_flops",
        "--by",
        "model",
    ]
    res = runner.invoke(app, [*args, "--holdout-largest", "--json", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for r in out:
        assert r["n_points"] == 20  # 25 points less the 5 of the largest N
        assert r["holdout"]["held_out_n"] == pytest.approx(1e10)
        assert r["holdout"]["n_points"] == 5
        assert r["holdout"]["rmsd_log"] < 0.02


def test_fit_transfer_and_rectified_use_their_own_columns(
    runner: CliRunner, app: typer.Typer, tmp_path: Path
) -> None:
    d_f, n = (m.ravel() for m in np.meshgrid(np.geomspace(1e4, 1e8, 5), np.geomspace(1e6, 1e8, 3)))
    pd.DataFrame({"d_f": d_f, "n": n, "dt": 2e4 * d_f**0.2 * n**0.35}).to_csv(tmp_path / "t.csv", index=False)
    res = runner.invoke(app, ["fit", "transfer", str(tmp_path / "t.csv"), "--json", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["params"]) == {"k", "alpha", "beta"}
    assert out["params"]["k"] == pytest.approx(2e4, rel=1e-3)
    d = np.array([0.0, 200, 400, 800, 1600, 3200, 6400])
    pd.DataFrame({"size": d, "loss": 300 / (100 + d**0.5) + 1.5}).to_csv(tmp_path / "r.csv", index=False)
    res = runner.invoke(
        app, ["fit", "rectified", str(tmp_path / "r.csv"), "--d", "size", "--json", "--bootstrap", "0"]
    )
    assert res.exit_code == 0, res.output
    assert list(json.loads(res.stdout)["params"]) == ["B", "D_l", "beta", "E"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "foo", "{csv}"], "LAW must be one of"),
        (["fit", "power", "{missing}"], "no such file"),
        (["fit", "chinchilla", "{csv}", "--n", "nope"], "--n 'nope': no such column"),
        (["fit", "chinchilla", "{csv}", "--n", "params"], "needs two of N, D, compute"),
        (["fit", "chinchilla", "{csv}", "--by", "model_"], "--by 'model_': no such column"),
        (["fit", "power", "{few}", "--d", "d"], "has 3 parameters .* but got 2"),
        (["fit", "power", "{few}", "--d", "d", "--loss", "bad"], "'bad' must be > 0"),
        (["analyze", "{missing}"], "no such file or directory"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    runner: CliRunner, app: typer.Typer, chinchilla_csv: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    pd.DataFrame({"d": [1e4, 1e5], "loss": [3.0, 2.5], "bad": [1.0, -1.0]}).to_csv(
        tmp_path / "few.csv", index=False
    )
    paths = {"csv": chinchilla_csv, "missing": tmp_path / "missing.csv", "few": tmp_path / "few.csv"}
    res = runner.invoke(app, [a.format(**paths) for a in args])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert pytest.importorskip("re").search(message, err), err


def test_analyze_json_on_a_results_dir(
    runner: CliRunner,
    app: typer.Typer,
    ledger_dirs: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The figures are test_report's business; here only the command's plumbing.
    monkeypatch.setattr(plots, "draw_all", lambda a, out: [])
    res = runner.invoke(
        app, ["analyze", str(ledger_dirs[1]), "--json", "--bootstrap", "0", "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["report_dir"] == str(tmp_path / "r")
    assert list(out["languages"]) == ["zh"]
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "report.html").is_file()
    text = runner.invoke(
        app, ["analyze", str(ledger_dirs[1]), "--bootstrap", "0", "--out", str(tmp_path / "r")]
    )
    assert text.exit_code == 0, text.output
    assert "gap  xs at D_F=250: zh " in text.stdout and "D_F/D_E  xs: zh D_F/D_E" in text.stdout
    assert "zh transfer law: not identified: " in text.stdout  # --bootstrap 0: no interval to judge it by


def test_space_files_resolve_to_their_results_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sweep_engine.config as config

    seen: list[Any] = []

    def fake_load_space(path: Path) -> SimpleNamespace:
        seen.append(path)
        return SimpleNamespace(results_dir=tmp_path / "results" / "german")

    monkeypatch.setattr(config, "load_space", fake_load_space)
    assert resolve_results_dir(Path("search_spaces/german.yaml")) == tmp_path / "results" / "german"
    assert seen == [Path("search_spaces/german.yaml")]
    assert resolve_results_dir(tmp_path) == tmp_path  # a directory passes through
    assert set(commands.COMMANDS) == {"analyze", "fit"}
    assert commands.COMMANDS["fit"] is fit_cmd


def test_analyze_takes_the_spaces_analysis_settings(tmp_path: Path, ledger_dirs: list[Path]) -> None:
    """`analyze SPACE` reads the space's analysis section: laws, hold-out, bootstrap and seed (the flags win)."""
    from sweep_engine.analysis.commands import analysis_options

    space = tmp_path / "s.yaml"
    space.write_text(
        "name: s\npretrain: {language: en, corpus: {builtin: bible}, sizes: [xs], context: 32, batch_tokens: 512,"
        " lr: 1.0e-3, stopping: {eval_interval_tokens: 512, token_cap: 1024}}\n"
        "analysis: {laws: [chinchilla], holdout_largest: false, bootstrap: 7, seed: 3}\n"
    )
    opts = analysis_options([space], bootstrap=None, seed=None)
    assert (opts.laws, opts.holdout_largest, opts.bootstrap, opts.seed) == (("chinchilla",), False, 7, 3)
    assert analysis_options([space], bootstrap=11, seed=None).bootstrap == 11
    assert analysis_options([ledger_dirs[0]], bootstrap=None, seed=None).bootstrap == 200


def test_laws_choose_what_is_fitted(ledger_dirs: list[Path], tmp_path: Path) -> None:
    from sweep_engine.analysis.pipeline import AnalysisOptions, run_analysis

    only = run_analysis(
        [ledger_dirs[0]], AnalysisOptions(laws=("chinchilla",), holdout_largest=False, bootstrap=10)
    )
    assert {f.law for f in only.regimes.joint.values()} == {"chinchilla"}
    assert only.transfer.languages["de"].law is None and only.holdout.empty and only.curve_fits.empty
