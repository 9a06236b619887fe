"""`sweep-engine demo --quick` end to end: three real sweeps (Ray Tune, the training loop, MLflow on SQLite) sharing
one English pre-training, then the cross-language report. A few minutes on two CPU cores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep_engine.config import load_space
from sweep_engine.ledger import read_ledger
from sweep_engine.space import expand

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "search_spaces" / "quick"
TARGETS = ("chinese", "spanish", "german")
STOP_REASONS = {"overfit", "budget", "plateau", "diverged"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    storage = tmp_path_factory.mktemp("demo")
    cmd = [sys.executable, "-m", "sweep_engine.cli", "demo", "--quick", "--storage", str(storage)]
    # From an empty directory: the demo must find the repository's spaces without being run from the repo.
    run = subprocess.run(
        [*cmd, "--bootstrap", "50"],
        cwd=storage,
        # As `make demo` does: the start time read before its install, so the last line counts the install too.
        env={**os.environ, "SWEEP_ENGINE_MAKE_START": str(time.time())},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return run, storage


@pytest.mark.slow
@pytest.mark.ray
def test_demo_runs_the_study_and_prints_the_answer(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    run, storage = demo
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    report_html = re.search(r"^report: (\S+report\.html)$", out, re.M)
    assert report_html and Path(report_html.group(1)).parent.parent == storage
    assert re.search(r"^\s+\S+report\.md$", out, re.M)
    answer = out[out.index("answer, the evidence first") : out.index("verdict: ")]
    for size in ("xxs", "xs"):  # the gap per language, in nats per token and bits per character
        assert re.search(
            rf"^  {size} at D_F=500: de [+-][\d.]+ nats/token \[.+\], [+-][\d.]+ bits/char", answer, re.M
        )
        assert re.search(rf"^  {size}: \w\w D_F/D_E", answer, re.M)
    assert re.search(r"^verdict: By D_F/D_E, the seed study's ordering de > es > zh", out, re.M)
    assert f"mlflow ui --backend-store-uri sqlite:///{storage}/mlflow.db" in out
    assert re.search(r"^wall time: \S+ \(\d+ s: sweeps \d+ s, analysis \d+ s\)$", out, re.M)
    assert re.search(r"^make demo: \S+ \(\d+ s, the install included\)$", out, re.M)
    # The shared English models: trained by the first sweep, found done by the other two.
    assert "English pre-training: 2 trained by quick-chinese" in out
    assert "quick-spanish reused 2, quick-german reused 2" in out
    assert "warning" not in out


@pytest.mark.slow
@pytest.mark.ray
def test_demo_report_has_the_summary_and_every_figure(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, storage = demo
    out = storage / "report-quick-chinese-quick-spanish-quick-german"
    md = (out / "report.md").read_text()
    assert md.index("## Summary") < md.index("## Figures")
    summary = md[md.index("## Summary") : md.index("## Figures")]
    for words in (
        "The evidence, per size at the smallest D_F",
        "seed study's ordering de > es > zh",
        "Fine-tuned against scratch per D_F",
        "converged",
        "data-limited",
        "paired bootstrap replicates",
    ):
        assert words in summary
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    assert "figures/forgetting.png" in figures and "figures/transfer_zh.png" in figures
    for fig in figures:
        assert (out / fig).stat().st_size > 1000
    assert md.count("Units: ") >= len(figures)  # every figure says its units
    assert "D_T 95% CI (tok)" in md and "gap 95% CI" in md
    assert (out / "report.html").read_text().count("data:image/png;base64,") == len(figures)


@pytest.mark.slow
@pytest.mark.ray
def test_demo_records_every_trial_once_in_mlflow_and_the_ledger(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    from mlflow.tracking import MlflowClient

    _, storage = demo
    client = MlflowClient(tracking_uri=f"sqlite:///{storage}/mlflow.db")
    pretrain_keys = []
    for name in TARGETS:
        space = load_space(QUICK / f"{name}.yaml")
        specs = {t.key(): t for t in expand(space)}
        assert len(specs) == 18  # 2 English models + 2 sizes x 4 D_F x 2 inits

        ledger = read_ledger(storage / space.name / "trials.parquet")
        assert len(ledger) == len(specs) and set(ledger["trial_key"]) == set(specs)
        assert (ledger["status"] == "FINISHED").all()
        assert set(ledger["stop_reason"]) <= STOP_REASONS
        assert ledger["best_val_loss"].gt(0).all()
        ft = ledger[ledger["init"] == "finetune"]
        assert ft["extra_val_loss_en"].notna().all()  # forgetting is measured
        pretrain_keys.append(set(ledger.loc[ledger["stage"] == "pretrain", "trial_key"]))

        experiment = client.get_experiment_by_name(space.name)
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        assert not [r for r in runs if r.info.status == "RUNNING"]
        trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
        keys = [r.data.tags["trial_key"] for r in trials]
        assert sorted(keys) == sorted(specs)  # one run per trial, no duplicates
        assert all(r.info.status == "FINISHED" for r in trials)
        parents = {r.info.run_id for r in runs if r.data.tags.get("run_kind") == "parent"}
        assert all(r.data.tags["mlflow.parentRunId"] in parents for r in trials)
        for parent in parents:  # the cross-language report sits beside the runs
            assert "report/report.md" in [f.path for f in client.list_artifacts(parent, "report")]
        reused = {r.data.tags["trial_key"] for r in trials if r.data.tags.get("reused") == "true"}
        assert reused == (set() if name == "chinese" else pretrain_keys[0])
    assert pretrain_keys[0] == pretrain_keys[1] == pretrain_keys[2]  # one English pre-training for all three
