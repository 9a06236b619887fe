"""`sweep-engine launch / resume / status / ui`, and the failure drill: SIGKILL the launcher, relaunch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sweep_engine.cli import app
from sweep_engine.config import load_space
from sweep_engine.data.inputs import input_problems
from sweep_engine.space import expand, transfer_trials
from sweep_engine.spec import FINISHED, RUNNING
from sweep_engine.sweep.driver import SweepDriver
from sweep_engine.sweep.jobs import InlineExecutor, SweepPaths
from sweep_engine.tracking import TRIAL, MlflowTracker, ui_command
from tests.tiny_sweep import fake_run, mlflow_template, shared_cache, space_dict, write_space

runner = CliRunner()


def files_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("command", ["launch", "resume"])
def test_bad_space_exits_2_and_writes_nothing(tmp_path: Path, command: str) -> None:
    data = space_dict(tmp_path / "results")
    data["transfer"]["d_f"] = [-5]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    result = runner.invoke(app, [command, str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "transfer.d_f[0]: must be a positive integer, got -5" in result.output
    assert not (tmp_path / "results").exists()


def test_unreadable_corpus_exits_2_before_ray_or_mlflow(tmp_path: Path) -> None:
    data = space_dict(tmp_path / "results", languages=("es",))
    data["transfer"]["languages"]["es"] = {"corpus": {"path": str(tmp_path / "missing.txt")}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["launch", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2 and "missing.txt" in result.output
    assert "s.yaml: transfer.languages.es.corpus.path: must name a readable corpus" in result.output
    assert not (tmp_path / "results" / "tiny").exists() and not (tmp_path / "results" / "mlflow.db").exists()


def test_relative_paths_are_read_against_the_space_file_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spaces, elsewhere = tmp_path / "spaces", tmp_path / "elsewhere"
    spaces.mkdir()
    elsewhere.mkdir()
    (spaces / "de.jsonl").write_text('{"text": "Im Anfang war das Wort."}\n')
    data = space_dict(Path("out"), languages=("de",))  # storage relative too
    data["transfer"]["languages"]["de"] = {"corpus": {"path": "de.jsonl"}}
    (spaces / "s.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(elsewhere)
    assert runner.invoke(app, ["validate", "../spaces/s.yaml"]).exit_code == 0
    space = load_space(Path("../spaces/s.yaml"))
    assert space.transfer is not None and space.storage_dir == spaces / "out"
    assert space.transfer.languages["de"].corpus.path == str(spaces / "de.jsonl")
    assert input_problems(space) == []

    # The same space without its corpus: launch names the field and exits 2 before it starts Ray.
    (spaces / "de.jsonl").unlink()

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("launch started Ray before it checked the space's inputs")

    monkeypatch.setattr("sweep_engine.sweep.ray_tune.ray_session", no_ray)
    result = runner.invoke(app, ["launch", "../spaces/s.yaml"])
    assert result.exit_code == 2, result.output
    assert (
        f"transfer.languages.de.corpus.path: must name a readable corpus: corpus file '{spaces / 'de.jsonl'}'"
        in result.output
    )
    assert not (spaces / "out").exists()


def test_status_of_a_new_sweep_writes_nothing(tmp_path: Path) -> None:
    write_space(tmp_path / "s.yaml", space_dict(tmp_path / "results"))
    result = runner.invoke(app, ["status", str(tmp_path / "s.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    stages = {s["stage"]: s for s in json.loads(result.output)["stages"]}
    assert (stages["pretrain"]["total"], stages["pretrain"]["pending"], stages["transfer"]["total"]) == (
        1,
        1,
        8,
    )
    assert stages["transfer"]["eta_s"] > 0  # the plan's throughput estimate, before any trial finished
    assert files_under(tmp_path / "results") == []


def test_status_counts_done_failed_running_and_resumable(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    space = write_space(
        tmp_path / "s.yaml", space_dict(tmp_path / "results"), mlflow_db=mlflow_template(tmp_path_factory)
    )
    tracker = MlflowTracker(space.tracking_uri, space.experiment_name)
    executor = InlineExecutor(fake_run, faults="language=es&init=scratch&d_f=1000:config")
    assert SweepDriver(space, executor, tracker).run().exit_code == 1
    # two trials as a SIGKILLed driver leaves them: their results gone, one with a checkpoint and a RUNNING run
    paths = SweepPaths.of(space)
    left = [s for s in transfer_trials(space) if s.init == "finetune"][:2]
    for spec in left:
        (paths.workdir(spec) / "result.json").unlink()
    (paths.workdir(left[0]) / "state.pt").write_text("")
    parent = tracker.parent_run("transfer", "x", {})
    tracker.trial_run(parent, left[1].key(), {}, {})
    ledger = pd.read_parquet(paths.ledger)
    ledger[~ledger.trial_key.isin([s.key() for s in left])].to_parquet(paths.ledger)

    result = runner.invoke(app, ["status", str(tmp_path / "s.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    got = {s["stage"]: s for s in json.loads(result.output)["stages"]}
    assert {k: got["transfer"][k] for k in ("total", "done", "running", "failed", "pending", "resumable")} == {
        "total": 8, "done": 5, "running": 1, "failed": 1, "pending": 1, "resumable": 1,
    }  # fmt: skip
    assert got["transfer"]["eta_s"] == pytest.approx(2 * 0.01 / 2)  # 2 left x mean wall 0.01 s / 2 at once
    table = runner.invoke(app, ["status", str(tmp_path / "s.yaml")])
    assert table.exit_code == 0 and "transfer" in table.output and "resumable" in table.output

    per_trial = runner.invoke(app, ["status", str(tmp_path / "s.yaml"), "--json", "--trials"])
    trials = {t["key"]: t for t in json.loads(per_trial.output)["trials"]}
    assert list(trials) == [s.key() for s in expand(space)]
    assert Counter(t["state"] for t in trials.values()) == {
        "done": 6,
        "failed": 1,
        "running": 1,
        "resumable": 1,
    }
    assert trials[left[0].key()]["state"] == "resumable" and trials[left[1].key()]["state"] == "running"
    failed = next(t for t in trials.values() if t["state"] == "failed")
    assert (failed["language"], failed["init"], failed["d_f"], failed["stop_reason"]) == (
        "es",
        "scratch",
        1000,
        "config",
    )
    done = next(t for t in trials.values() if t["stage"] == "pretrain")
    assert done["state"] == "done" and done["stop_reason"] == "budget" and done["best_val_loss"] > 0
    shown = runner.invoke(app, ["status", str(tmp_path / "s.yaml"), "--trials"]).output
    assert all(key in shown for key in trials) and "resumable" in shown and "config" in shown

    # launch --dry-run says what a relaunch would do with each of them, and does nothing.
    before = {p: p.stat().st_mtime_ns for p in files_under(tmp_path / "results")}
    dry = runner.invoke(app, ["launch", str(tmp_path / "s.yaml"), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "pretrain: 1 reuse" in dry.output and "transfer: 1 run, 1 resume, 5 reuse, 1 skip" in dry.output
    rows = {
        line.split()[2]: line.split()[0]
        for line in dry.output.splitlines()
        if line.split()[1:2] in (["pretrain"], ["transfer"])
    }
    assert rows[left[0].key()] == "resume" and rows[left[1].key()] == "run" and rows[failed["key"]] == "skip"
    retry = runner.invoke(app, ["resume", str(tmp_path / "s.yaml"), "--dry-run", "--retry-failed"])
    assert "transfer: 1 run, 1 resume, 1 retry, 5 reuse" in retry.output
    assert {p: p.stat().st_mtime_ns for p in files_under(tmp_path / "results")} == before


def test_dry_run_with_overrides_starts_no_ray_and_writes_nothing(tmp_path: Path) -> None:
    write_space(tmp_path / "s.yaml", space_dict(tmp_path / "results"))
    code = (
        "import sys; from sweep_engine.cli import app\n"
        "sys.argv = ['sweep-engine', 'launch', 's.yaml', 'transfer.lr=[1e-3, 3e-3]', 'transfer.d_f=[1000]',\n"
        "            '--dry-run']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('ray', 'mlflow', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    # 2 languages x 1 D_F x 2 inits x 2 LRs, as the overrides say, none of them started before
    assert "pretrain: 1 run" in out.stdout and "transfer: 8 run" in out.stdout
    assert "1e-03" not in out.stdout and out.stdout.count(" 0.001 ") == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ui_serves_the_sweeps_store(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    space = write_space(
        tmp_path / "s.yaml", space_dict(tmp_path / "results"), mlflow_db=mlflow_template(tmp_path_factory)
    )
    MlflowTracker(space.tracking_uri, space.experiment_name)
    port = _free_port()
    cmd = [sys.executable, "-m", "sweep_engine.cli", "ui", str(tmp_path / "s.yaml"), "--port", str(port)]
    cmd += ["--workers", "2"]  # handed to the server (tracking.ui_command)
    assert ui_command(space.tracking_uri, "127.0.0.1", port, 2)[-2:] == ["--workers", "2"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/#/experiments/" in line
        deadline, status = time.time() + 90, None
        while time.time() < deadline and status != 200:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status
            except OSError:
                time.sleep(0.5)
        assert status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_ui_without_a_store_exits_2(tmp_path: Path) -> None:
    write_space(tmp_path / "s.yaml", space_dict(tmp_path / "results"))
    result = runner.invoke(app, ["ui", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2 and "launch the sweep first" in result.output


# ------------------------------------------------------------------------------------------------ drill


def _launch(space_file: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "sweep_engine.cli", "launch", str(space_file)]
    # A session of its own: after the drill, whatever of the killed launcher's Ray is left goes with it.
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


@pytest.mark.ray
@pytest.mark.slow
def test_sigkill_drill_relaunch_resumes_without_retraining(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Longer transfer runs (64K tokens) leave a window in which some trials are done and others half-way.
    data = space_dict(
        tmp_path / "results", transfer={"stopping": {"eval_interval_tokens": 8192, "token_cap": 65536}}
    )
    space = write_space(
        tmp_path / "d.yaml", data, shared_cache(tmp_path_factory), mlflow_template(tmp_path_factory)
    )
    paths, specs = SweepPaths.of(space), expand(space)

    proc = _launch(tmp_path / "d.yaml")
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            done = [s for s in specs if (paths.workdir(s) / "result.json").exists()]
            halfway = [s for s in specs if (paths.workdir(s) / "state.pt").exists()]
            if len(done) >= 3 and halfway:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the sweep ended before the drill could kill it"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        time.sleep(2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's agents outlive a SIGKILLed driver
    assert halfway and len(done) < len(specs)
    finished_before = {s.key(): (paths.workdir(s) / "result.json").stat().st_mtime for s in done}

    relaunch = _launch(tmp_path / "d.yaml")
    out, _ = relaunch.communicate(timeout=300)
    assert relaunch.returncode == 0, out

    ledger = pd.read_parquet(paths.ledger)
    assert sorted(ledger.trial_key) == sorted(s.key() for s in specs) and set(ledger.status) == {FINISHED}
    tracker = MlflowTracker(space.tracking_uri, space.experiment_name)
    runs = tracker.runs(TRIAL)
    assert sorted(r.tags["trial_key"] for r in runs) == sorted(s.key() for s in specs)  # once each
    assert RUNNING not in {r.status for r in tracker.runs()} and {r.status for r in runs} == {FINISHED}
    for run in runs:  # each curve point once, in the run reused across the kill
        steps = [s for s, _ in tracker.metric_history(run.run_id, "val_loss")]
        assert len(steps) == len(set(steps))
    assert {
        k: (paths.workdir(s) / "result.json").stat().st_mtime for s in done for k in [s.key()]
    } == finished_before
