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
from sweep_engine.cli_args import load_space_or_exit
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
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="SPACE... [KEY=VALUE]...",
            help="Search-space YAML files (several target spaces: one study), and overrides applied to each.",
        ),
    ],
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
    power: Annotated[
        bool,
        typer.Option(
            "--power", help="Probability that the grid resolves its questions, and the best next change."
        ),
    ] = False,
    prior: Annotated[
        list[Path] | None,
        typer.Option(
            "--prior", help="With --power: finished sweeps (results dirs or ledgers) to fit the prior to."
        ),
    ] = None,
    worlds: Annotated[
        int | None, typer.Option("--worlds", help="With --power: worlds drawn (default 40).")
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="With --power: seeds the worlds (printed; replays).")
    ] = 0,
) -> None:
    """Trials, tokens, FLOPs and estimated wall time per stage, with its terms. Writes nothing, starts no Ray.

    With --power: draw worlds from a prior, build the ledger each space's grid would record in each, run the
    real analysis on it, and print the probability of resolving each question (docs/power.md).
    """
    from sweep_engine import plan as planning
    from sweep_engine.budgets import cap_warnings
    from sweep_engine.hardware import PEAK_FLOPS, peak_flops

    overrides = [a for a in args if "=" in a and not Path(a).exists()]
    paths = [Path(a) for a in args if a not in overrides]
    if not paths:
        raise fail("SPACE: give at least one search-space file")
    if not power and (prior or worlds is not None):
        raise fail(f"{'--prior' if prior else '--worlds'}: only with --power")
    if power:
        _power(paths, overrides, prior or [], worlds, seed, as_json)
        return
    spaces = [load_space_or_exit(p, overrides) for p in paths]
    with on_bad_input():
        if gpu is not None and peak_flops(gpu) is None:
            raise ConfigError(
                f"--gpu must name a GPU of the peak-FLOPs table {sorted(PEAK_FLOPS)}, got {gpu!r}"
            )
    measured = None
    if calibrate:
        from sweep_engine.training.step import calibrate as measure  # torch, only when asked

        measured = {k: v for space in spaces for k, v in measure(space).items()}
    results = [planning.make_plan(space, measured, planning.Assumptions(gpu=gpu)) for space in spaces]
    if as_json:
        dicts = [r.to_dict() for r in results]
        typer.echo(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
        return
    for space, result in zip(spaces, results, strict=True):
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


def _power(
    paths: list[Path],
    overrides: list[str],
    prior_paths: list[Path],
    worlds: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """`plan --power`: the analysis package does the work (analysis/power/)."""
    from sweep_engine.analysis.power.fitted import fit_prior
    from sweep_engine.analysis.power.questions import WIDTH
    from sweep_engine.analysis.power.report import render, to_dict
    from sweep_engine.analysis.power.run import WORLDS, check_options, power_analysis
    from sweep_engine.analysis.power.simulate import BOOTSTRAP

    n = WORLDS if worlds is None else worlds
    with on_bad_input():
        check_options(n, BOOTSTRAP, WIDTH)  # before any fitting: bad options fail at once
        prior = fit_prior(prior_paths) if prior_paths else None
        report = power_analysis(paths, overrides, prior=prior, worlds=n, seed=seed)
    typer.echo(json.dumps(to_dict(report), indent=1) if as_json else render(report))


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
