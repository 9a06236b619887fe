"""The `analyze` and `fit` commands, as plain functions typed for Typer.

The CLI registers them with `app.command("analyze")(analyze_cmd)` and `app.command("fit")(fit_cmd)`. Bad input
(a missing file or column, an unknown law, too few points) prints one line naming the field and the rule to
stderr and exits with code 2; anything else that escapes is a runtime failure (exit 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from sweep_engine.analysis.pipeline import AnalysisOptions
from sweep_engine.exits import on_bad_input as _bad_input


def resolve_results_dir(path: Path) -> Path:
    """A results directory or ledger file as given; a space file (.yaml / .yml) becomes its results directory.

    Raises:
        UserError: the space file is invalid (ConfigError).
    """
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        from sweep_engine.config import load_space

        return Path(load_space(path).results_dir)
    return path


def analysis_options(paths: list[Path], *, bootstrap: int | None, seed: int | None) -> AnalysisOptions:
    """The first space file's `analysis:` settings (the defaults without one); --bootstrap and --seed win."""
    space_file = next((Path(p) for p in paths if Path(p).suffix in (".yaml", ".yml")), None)
    base = AnalysisOptions()
    if space_file is not None:
        from sweep_engine.config import load_space

        base = options_of(load_space(space_file).analysis)
    return replace(
        base,
        bootstrap=base.bootstrap if bootstrap is None else bootstrap,
        seed=base.seed if seed is None else seed,
    )


def options_of(config: Any) -> AnalysisOptions:
    """AnalysisOptions from a space's config.AnalysisConfig."""
    return AnalysisOptions(
        laws=tuple(config.laws),
        holdout_largest=config.holdout_largest,
        bootstrap=config.bootstrap,
        seed=config.seed,
    )


def tracking_of(path: Path) -> tuple[str, str] | None:
    """The MLflow store and experiment of a sweep given as a space file or as a results directory (the default
    store `sqlite:///<storage>/mlflow.db`, experiment named after the directory); None for a lone ledger file."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        from sweep_engine.config import load_space

        space = load_space(path)
        return space.tracking_uri, space.experiment_name
    if path.is_dir():
        from sweep_engine.tracking import default_uri

        return default_uri(path.parent), path.resolve().name
    return None


def log_report_to_mlflow(paths: list[Path], report_dir: Path) -> list[str]:
    """Log the report to the parent runs of every analysed sweep that has an MLflow store; the run ids."""
    from sweep_engine.tracking import log_report  # MLflow is imported only here, at the edge

    logged: list[str] = []
    for path in paths:
        where = tracking_of(path)
        if where is not None:
            logged += log_report(*where, report_dir)
    return logged


def analyze_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Space files (.yaml), results directories (with trials.parquet) or ledger files."
        ),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report directory (default: <dir>/report, or <parent>/report-<names>)."),
    ] = None,
    bootstrap: Annotated[
        int | None,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Bootstrap replicates (default: the space's analysis.bootstrap, or 200).",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Bootstrap seed (default: the space's analysis.seed, or 0).")
    ] = None,
) -> None:
    """Analyse one or several sweeps (several = one cross-language report): report.md, report.html, figures."""
    from sweep_engine.analysis.report import analyze

    with _bad_input():
        results = [resolve_results_dir(p) for p in paths]
        options = analysis_options(paths, bootstrap=bootstrap, seed=seed)
        summary = analyze(results, out, options)
    logged = log_report_to_mlflow(paths, Path(summary["report_dir"]))
    if json_out:
        typer.echo(json.dumps(summary, indent=1))
        return
    typer.echo(
        f"report: {summary['report_dir']}/report.md (and report.html, {len(summary['figures'])} figures)"
    )
    if logged:
        typer.echo(f"logged to {len(logged)} MLflow parent run(s): {', '.join(logged)}")
    for line in summary["headline"]["evidence"]:
        typer.echo(f"  gap  {line}")
    for line in summary["headline"]["transfer"]:
        typer.echo(f"  D_F/D_E  {line}")
    typer.echo(f"  {summary['headline']['verdict']}")
    for lang, info in summary["languages"].items():
        law = info["transfer_law"]
        if law is not None:
            typer.echo(f"  {lang} transfer law: {law['status']}")


def fit_cmd(
    law: Annotated[str, typer.Argument(help="chinchilla, kaplan, power, rectified, overtrain or transfer.")],
    input_csv: Annotated[Path, typer.Argument(metavar="INPUT.csv", help="CSV with one row per point.")],
    n: Annotated[str | None, typer.Option("--n", help="N column (default: n or n_params).")] = None,
    d: Annotated[str | None, typer.Option("--d", help="D column (default: d or d_f).")] = None,
    compute: Annotated[str | None, typer.Option("--compute", help="Compute column; D = C / (6 N).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="Loss column (default: loss).")] = None,
    dt: Annotated[
        str | None, typer.Option("--dt", help="Transfer law target D_T (default: dt or d_t).")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Fit each value of this column separately.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    holdout_largest: Annotated[
        bool, typer.Option("--holdout-largest", help="Fit without the largest N and score the fit on it.")
    ] = False,
    delta: Annotated[
        float | None, typer.Option("--delta", help="Huber threshold on log loss (default 1e-3; rectified 1).")
    ] = None,
) -> None:
    """Fit a scaling law to your own CSV, with bootstrap confidence intervals."""
    from sweep_engine.analysis.userfit import describe, fit_csv

    with _bad_input():
        results = fit_csv(
            law,
            input_csv,
            n=n,
            d=d,
            compute=compute,
            loss=loss,
            dt=dt,
            by=by,
            bootstrap=bootstrap,
            seed=seed,
            holdout_largest=holdout_largest,
            delta=delta,
        )
    if json_out:
        typer.echo(json.dumps(results if by is not None else results[0], indent=1))
        return
    for res in results:
        typer.echo(describe(res))


COMMANDS: dict[str, Callable[..., None]] = {"analyze": analyze_cmd, "fit": fit_cmd}
