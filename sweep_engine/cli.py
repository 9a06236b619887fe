"""The `sweep-engine` command. Exit codes: 0 success, 1 runtime failure, 2 bad input.

Each stage's commands live beside the stage (data/commands.py, analysis/commands.py, sweep/commands.py); this
file only registers them, so importing the CLI stays cheap (Ray, MLflow and torch load inside the commands).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sweep_engine import __version__
from sweep_engine.analysis.commands import analyze_cmd, fit_cmd
from sweep_engine.cli_args import OverridesArg, SpaceArg, load_space_or_exit
from sweep_engine.config import load_space
from sweep_engine.data.commands import corpora_cmd, prepare_cmd
from sweep_engine.demo import demo_cmd
from sweep_engine.errors import ConfigError, UserError
from sweep_engine.exits import fail, on_bad_input
from sweep_engine.sweep.commands import launch_cmd, resume_cmd, status_cmd, ui_cmd

app = typer.Typer(
    name="sweep-engine",
    help="Declarative scaling-law sweeps for language transfer (Ray Tune + Ray Train + MLflow).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)  # Typer's --install-completion / --show-completion: shell completion of commands, options and paths


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sweep-engine {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Declarative scaling-law sweeps for language transfer (Ray Tune + Ray Train + MLflow)."""


@app.command()
def validate(
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="SPACE... [KEY=VALUE]...",
            help="Search-space YAML files, and overrides applied to each (e.g. transfer.lr=[1e-3]).",
        ),
    ],
) -> None:
    """Check search-space files; print a one-line summary of each valid one, and a warning for every transfer
    D_F whose token cap cannot reach its expected overfitting point (budgets.py). Writes nothing."""
    from sweep_engine.budgets import cap_warnings
    from sweep_engine.space import count_trials

    # An argument with "=" that is not a file is an override (a file name may hold "=" too).
    overrides = [a for a in args if "=" in a and not Path(a).exists()]
    errors = []
    for path in (Path(a) for a in args if a not in overrides):
        try:
            space = load_space(path, overrides)
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
        for warning in cap_warnings(space):
            typer.echo(f"warning: {path}: {warning}", err=True)
    if errors:
        raise fail("\n".join(errors))


@app.command()
def plan(
    space_path: SpaceArg,
    overrides: OverridesArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    calibrate: Annotated[
        bool, typer.Option("--calibrate", help="Measure CPU tokens/s of each size here (CPU trials only).")
    ] = False,
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu", help="GPU type of GPU trials (default: the space's accelerator_type, else H100)."
        ),
    ] = None,
) -> None:
    """Trials, tokens, FLOPs and estimated wall time per stage, with its terms. Writes nothing, starts no Ray."""
    from sweep_engine import plan as planning
    from sweep_engine.budgets import cap_warnings
    from sweep_engine.hardware import PEAK_FLOPS, peak_flops

    space = load_space_or_exit(space_path, overrides)
    with on_bad_input():
        if gpu is not None and peak_flops(gpu) is None:
            raise ConfigError(
                f"--gpu must name a GPU of the peak-FLOPs table {sorted(PEAK_FLOPS)}, got {gpu!r}"
            )
    measured = None
    if calibrate:
        from sweep_engine.training.step import calibrate as measure  # torch, only when asked

        measured = measure(space)
    result = planning.make_plan(space, measured, planning.Assumptions(gpu=gpu))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"plan: {result.space}  (upper bounds: every trial to its token cap)")
    typer.echo(
        f"{'stage':<9} {'trials':>6} {'tokens':>9} {'FLOPs 6ND':>10} {'FLOPs hw':>9} {'est. wall':>10}  at"
    )
    for s in result.stages:
        typer.echo(
            f"{s.stage:<9} {s.trials:>6,} {s.tokens:>9.3g} {s.flops:>10.3g} {s.hardware_flops:>9.3g} "
            f"{_hours(s.est_hours):>10}  {s.concurrency} at once"
        )
        typer.echo(
            f"  trial-hours: train {_hours(s.train_hours)}, eval {_hours(s.eval_hours)} "
            f"({s.eval_tokens:.3g} tokens), checkpoints {_hours(s.checkpoint_hours)}, "
            f"compile {_hours(s.compile_hours)}; sizes {' '.join(s.sizes)}"
        )
    typer.echo(f"assumptions: {result.throughput_source}")
    for warning in cap_warnings(space):
        typer.echo(f"warning: {warning}", err=True)


def _hours(h: float) -> str:
    if h < 1:
        return f"{h * 60:.1f} min"
    if h < 48:
        return f"{h:.1f} h"
    return f"{h / 24:.1f} days"


# The other stages' commands live beside their stage; each imports its heavy libraries (Ray, MLflow, torch,
# matplotlib) only inside the command, so `validate` and `plan` stay fast.
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
