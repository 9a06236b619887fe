"""The `sweep-engine` command. Exit codes: 0 success, 1 runtime failure, 2 bad input.

Each stage's commands live beside the stage (data/commands.py, analysis/commands.py, sweep/commands.py); this
file only registers them, so importing the CLI stays cheap (Ray, MLflow and torch load inside the commands).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sweep_engine.config import load_space
from sweep_engine.errors import UserError
from sweep_engine.exits import fail, on_bad_input

app = typer.Typer(
    name="sweep-engine",
    help="Declarative scaling-law sweeps for language transfer (Ray Tune + Ray Train + MLflow).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def validate(spaces: Annotated[list[Path], typer.Argument(help="Search-space YAML files.")]) -> None:
    """Check search-space files; print a one-line summary of each valid one. Writes nothing."""
    from sweep_engine.space import count_trials

    errors = []
    for path in spaces:
        try:
            space = load_space(path)
        except UserError as exc:
            errors.append(str(exc))
            continue
        counts = count_trials(space)
        langs = ",".join(space.transfer.languages) if space.transfer else "-"
        sizes = len(space.pretrain.sizes) if space.pretrain else 0
        typer.echo(
            f"{path}: ok  name={space.name} sizes={sizes} languages={langs} "
            f"trials: pretrain={counts['pretrain']} transfer={counts['transfer']}"
        )
    if errors:
        raise fail("\n".join(errors))


@app.command()
def plan(
    space_path: Annotated[Path, typer.Argument(metavar="SPACE", help="A search-space YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    calibrate: Annotated[
        bool, typer.Option("--calibrate", help="Measure tokens/s of each size here instead of assuming.")
    ] = False,
) -> None:
    """Trials, tokens, FLOPs and estimated wall time per stage. Writes nothing, starts no Ray."""
    from sweep_engine import plan as planning

    with on_bad_input():
        space = load_space(space_path)
    measured = None
    if calibrate:
        from sweep_engine.training.step import calibrate as measure  # torch, only when asked

        measured = measure(space)
    result = planning.make_plan(space, measured)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(title=f"plan: {result.space}")
    for col in ("stage", "trials", "tokens (max)", "FLOPs (max, 6N)", "est. wall", "concurrency", "sizes"):
        table.add_column(col, justify="right" if col not in ("stage", "sizes") else "left")
    for s in result.stages:
        table.add_row(
            s.stage,
            f"{s.trials:,}",
            f"{s.tokens:.3g}",
            f"{s.flops:.3g}",
            _hours(s.est_hours),
            str(s.concurrency),
            " ".join(s.sizes),
        )
    Console().print(table)
    typer.echo(f"throughput: {result.throughput_source}")


def _hours(h: float) -> str:
    if h < 1:
        return f"{h * 60:.1f} min"
    if h < 48:
        return f"{h:.1f} h"
    return f"{h / 24:.1f} days"


# The other stages' commands live beside their stage; each imports its heavy libraries (Ray, MLflow, torch,
# matplotlib) only inside the command, so `validate` and `plan` stay fast.
from sweep_engine.analysis.commands import analyze_cmd, fit_cmd  # noqa: E402
from sweep_engine.data.commands import corpora_cmd, prepare_cmd  # noqa: E402
from sweep_engine.demo import demo_cmd  # noqa: E402
from sweep_engine.sweep.commands import launch_cmd, resume_cmd, status_cmd, ui_cmd  # noqa: E402

app.command("launch")(launch_cmd)
app.command("resume")(resume_cmd)
app.command("status")(status_cmd)
app.command("ui")(ui_cmd)
app.command("analyze")(analyze_cmd)
app.command("fit")(fit_cmd)
app.command("corpora")(corpora_cmd)
app.command("demo")(demo_cmd)
data_app = typer.Typer(
    help="Prepare the data a sweep needs (tokenizers, token caches).", no_args_is_help=True
)
data_app.command("prepare")(prepare_cmd)
app.add_typer(data_app, name="data")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
