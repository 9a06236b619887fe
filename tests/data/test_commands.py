from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner

from sweep_engine.data.commands import corpora_cmd, prepare_cmd
from tests.data.conftest import write_text_corpus

runner = CliRunner()


def _app() -> typer.Typer:
    # Registered the way cli.py registers them.
    app = typer.Typer(add_completion=False)
    app.command("corpora")(corpora_cmd)
    data = typer.Typer()
    data.command("prepare")(prepare_cmd)
    app.add_typer(data, name="data")
    return app


def test_corpora_json_lists_the_four_languages() -> None:
    result = runner.invoke(_app(), ["corpora", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["language"] for r in rows} == {"en", "es", "de", "zh"}
    for r in rows:
        assert {"name", "language", "chars", "license", "installed"} <= set(r)
        assert r["installed"] is True and r["chars"] > 1_000_000
    assert {r["name"] for r in rows if r["chars"] > 3_000_000} >= {
        "bible-en-web",
        "bible-es-rv1909",
        "bible-de-elb1932",
    }


def test_corpora_table() -> None:
    result = runner.invoke(_app(), ["corpora"])
    assert result.exit_code == 0, result.output
    for name in ("bible-en-web", "bible-es-rv1909", "bible-de-elb1932", "bible-zh-cuv", "Public domain"):
        assert name in result.stdout


def _space(tmp_path: Path, corpus_path: Path) -> Path:
    space = {
        "name": "tiny",
        "storage": str(tmp_path / "results"),
        "tokenizer": {"kind": "bpe", "vocab_size": 300},
        "pretrain": {
            "corpus": {"path": str(corpus_path)},
            "sizes": ["xs"],
            "context": 16,
            "batch_tokens": 64,
            "lr": 1e-3,
            "stopping": {"eval_interval_tokens": 64, "token_cap": 256},
            "validation": {"size": 5},
        },
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def test_prepare_builds_the_caches_and_reports_tokens_per_char(tmp_path: Path) -> None:
    space = _space(tmp_path, write_text_corpus(tmp_path / "c.txt", 30))
    result = runner.invoke(_app(), ["data", "prepare", str(space)])
    assert result.exit_code == 0, result.output
    assert "tokens/char" in result.stdout
    cache = tmp_path / "results" / "cache"
    assert len(list((cache / "tokenizers").glob("*.json"))) == 1
    assert any((cache / "splits").iterdir())


def test_prepare_bad_input_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(_app(), ["data", "prepare", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    space = _space(tmp_path, tmp_path / "missing.txt")
    result = runner.invoke(_app(), ["data", "prepare", str(space)])
    assert result.exit_code == 2
    assert "missing.txt' does not exist" in result.stderr
    assert not (tmp_path / "results").exists()
