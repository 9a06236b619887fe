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


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--power", "--worlds", "0"], "error: --worlds: must be at least 10"),
        (["--power", "--prior", "{tmp}/nowhere"], "error: --prior: {tmp}/nowhere: no such file or directory"),
        (["--power", "--prior", "{tmp}"], "error: --prior: {tmp}: a results directory must hold one of"),
        (["--worlds", "20"], "error: --worlds: only with --power"),
        (["--prior", "{tmp}"], "error: --prior: only with --power"),
    ],
)
def test_plan_power_bad_input_exits_2_naming_the_option(
    tmp_path: Path, extra: list[str], expected: str
) -> None:
    args = [
        "plan",
        str(REPO / "search_spaces" / "quick" / "german.yaml"),
        *[a.format(tmp=tmp_path) for a in extra],
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert expected.format(tmp=tmp_path) in result.stderr


def test_plan_power_default_worlds_in_help_is_the_default() -> None:
    from sweep_engine.analysis.power.run import WORLDS

    result = runner.invoke(app, ["plan", "--help"])
    assert f"(default {WORLDS})" in " ".join(result.stdout.split())


@pytest.mark.slow
def test_plan_power_json_answers_every_question() -> None:
    """The whole path on the quick spaces, two languages: probabilities, the weakest question, the changes."""
    spaces = [str(REPO / "search_spaces" / "quick" / f"{n}.yaml") for n in ("german", "chinese")]
    result = runner.invoke(app, ["plan", *spaces, "--power", "--worlds", "10", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["grid"]["languages"] == ["de", "zh"] and out["seed"] == 3 and out["worlds"] == 10
    q = out["questions"]
    cells = q["d_t"]["cells"]
    assert len(cells) == 2 * len(out["grid"]["sizes"]) * len(out["grid"]["d_f"])
    assert all(0 <= c["p"] <= 1 for c in cells)
    assert q["order"]["applies"] and len(q["order"]["sizes"]) == len(out["grid"]["sizes"])
    assert {r["language"] for r in q["law"]["languages"]} == {"de", "zh"}
    assert out["weakest"] in ("d_t", "order", "law")
    names = {c["name"] for c in out["changes"]}
    assert names == {"seed", "seed_smallest", "d_f_below", "size", "test_set"} or not out["changes"]
    for c in out["changes"]:
        assert c["extra_flops"] > 0 and (c["after"] is None or 0 <= c["after"] <= 1)


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


# ------------------------------------------------------------------------------------------ conventions


def test_version() -> None:
    from sweep_engine import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"sweep-engine {__version__}\n"


def test_shell_completion_completes_commands_and_options() -> None:
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="sweep-engine")
    assert (
        script.exit_code == 0
        and "complete -o default -F _sweep_engine_completion sweep-engine" in script.stdout
    )

    def complete(words: str) -> list[str]:
        env = {
            "_SWEEP_ENGINE_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(words.count(" ")),
        }
        return runner.invoke(app, [], prog_name="sweep-engine", env=env).stdout.split()

    assert complete("sweep-engine la") == ["launch"]
    assert complete("sweep-engine launch s.yaml --dr") == ["--dry-run"]


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    ok = runner.invoke(app, ["validate", str(path), "transfer.lr=[1e-3, 3e-3]", "transfer.init=[scratch]"])
    assert ok.exit_code == 0 and "transfer=4" in ok.stdout  # 1 language x 2 D_F x 1 init x 2 LRs
    plan = runner.invoke(app, ["plan", str(path), "transfer.d_f=[1000]", "pretrain.sizes=[xs, s]", "--json"])
    assert [s["trials"] for s in json.loads(plan.stdout)["stages"]] == [2, 4]
    for override, message in [
        ("transfer.lr=[-1]", "transfer.lr[0]: must be positive, got -1"),
        ("transfer.lrr=[0.1]", "transfer.lrr: unknown key"),
        (
            "resources.max_concurrent_trials=0",
            "resources.max_concurrent_trials: must be a positive integer, got 0",
        ),
        ("transfer.d_f=[1000, 1000]", "transfer.d_f: values must be unique, got duplicates [1000]"),
        ("name.first=x", "name.first: must name a key inside a mapping, but name is a value"),
        ("transfer.lr", "'transfer.lr': an override must be KEY=VALUE"),
        ("transfer.lr=[1e-3", "transfer.lr: an override's value must be YAML"),
    ]:
        bad = runner.invoke(app, ["launch", str(path), override])
        assert bad.exit_code == 2, (override, bad.output)
        assert bad.stderr.startswith(f"error: {path}: {message}"), bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_one_error_format_from_every_command(tmp_path: Path) -> None:
    """A bad space reads the same from every command that takes one: one `error:` line per problem, exit 2."""
    data = minimal()
    data["transfer"]["d_f"] = [-5]
    data["resources"] = {"cpus_per_trial": 0}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    expected = (
        f"error: {path}: transfer.d_f[0]: must be a positive integer, got -5\n"
        f"error: {path}: resources.cpus_per_trial: must be positive, got 0\n"
    )
    commands = [
        ["validate"],
        ["plan"],
        ["launch"],
        ["resume"],
        ["status"],
        ["ui"],
        ["data", "prepare"],
        ["analyze"],
    ]
    for command in commands:
        result = runner.invoke(app, [*command, str(path)])
        assert (result.exit_code, sorted(result.stderr.splitlines())) == (2, sorted(expected.splitlines())), (
            command
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
