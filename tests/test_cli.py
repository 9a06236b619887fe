from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sweep_engine.cli import app
from tests.test_config import minimal

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_validate_shipped_spaces_exit_0() -> None:
    paths = sorted(str(p) for p in (REPO / "search_spaces").rglob("*.yaml"))
    result = runner.invoke(app, ["validate", *paths])
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok") == len(paths)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({**minimal(), "extra": 1}, "extra: unknown key"),
        ("name: [", "YAML syntax error at line"),
        ("", "file is empty"),
        (None, "file not found"),
    ],
)
def test_validate_bad_input_exit_2_and_writes_nothing(tmp_path: Path, content: object, expected: str) -> None:
    path = tmp_path / "space.yaml"
    if content is not None:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_validate_reports_bad_file_among_good(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**minimal(), "resources": {"max_concurrent_trials": 0}}))
    result = runner.invoke(app, ["validate", str(REPO / "search_spaces" / "english.yaml"), str(bad)])
    assert result.exit_code == 2
    assert "english.yaml: ok" in result.stdout
    assert "resources.max_concurrent_trials: must be a positive integer, got 0" in result.stderr


def test_plan_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", str(REPO / "search_spaces" / "paper" / "chinese.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [s["stage"] for s in plan["stages"]] == ["pretrain", "transfer"]
    assert plan["stages"][1]["trials"] == 216


def test_plan_table_and_bad_input() -> None:
    ok = runner.invoke(app, ["plan", str(REPO / "search_spaces" / "chinese.yaml")])
    assert ok.exit_code == 0 and "transfer" in ok.stdout and "assumptions:" in ok.stdout
    assert "trial-hours: train" in ok.stdout and "checkpoints" in ok.stdout and "compile" in ok.stdout
    bad_gpu = runner.invoke(app, ["plan", str(REPO / "search_spaces" / "chinese.yaml"), "--gpu", "Z9"])
    assert bad_gpu.exit_code == 2 and "--gpu must name a GPU" in bad_gpu.stderr
    missing = runner.invoke(app, ["plan", "nope.yaml"])
    assert missing.exit_code == 2 and "file not found" in missing.stderr


def test_console_script_starts_no_ray(tmp_path: Path) -> None:
    """The installed entry point runs validate without importing ray, mlflow or torch."""
    code = (
        "import sys; from sweep_engine.cli import app; sys.argv=['sweep-engine','validate',"
        f"{str(REPO / 'search_spaces' / 'chinese.yaml')!r}]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('ray', 'mlflow', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env={**os.environ})
    assert list(tmp_path.iterdir()) == []
