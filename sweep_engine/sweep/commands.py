"""CLI commands of the sweep stage: `launch`, `resume`, `status` and `ui`.

Plain functions; cli.py registers them. Ray, MLflow and torch are imported inside the commands, so the rest of the
CLI (`validate`, `plan`, `status`, `launch --dry-run`) starts fast and starts no Ray. Exit codes: 0 every trial
finished, 1 some trial failed or was blocked (a summary says which and why), 2 bad input (nothing written), 130
interrupted (Ctrl-C; `resume` continues).
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sweep_engine.cli_args import OverridesArg, SpaceArg, load_space_or_exit
from sweep_engine.config import Space
from sweep_engine.exits import fail, on_bad_input

if TYPE_CHECKING:
    from sweep_engine.sweep.driver import SweepSummary
    from sweep_engine.sweep.status import TrialStatus

AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Join this Ray cluster ('auto', HOST:PORT); default: $RAY_ADDRESS (set by `ray job submit`), "
        "else a private local Ray.",
    ),
]
RetryOpt = Annotated[
    bool, typer.Option("--retry-failed", help="Also re-run trials the ledger records as FAILED.")
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print what would run, resume or be reused, and stop: no Ray, nothing written."
    ),
]


def launch_cmd(
    space_path: SpaceArg,
    overrides: OverridesArg = None,
    address: AddressOpt = None,
    retry_failed: RetryOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Run a sweep: pre-training, then transfer, one Ray Tune trial per trial spec. Relaunching continues it."""
    _launch(space_path, overrides, address, retry_failed, dry_run)


def resume_cmd(
    space_path: SpaceArg,
    overrides: OverridesArg = None,
    address: AddressOpt = None,
    retry_failed: RetryOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Continue a sweep after Ctrl-C, a crash or a lost node (the same as `launch`, said explicitly)."""
    _launch(space_path, overrides, address, retry_failed, dry_run)


def _launch(
    space_path: Path, overrides: list[str] | None, address: str | None, retry_failed: bool, dry_run: bool
) -> None:
    space = load_space_or_exit(space_path, overrides)
    if dry_run:
        print_dry_run(table_console(), space, retry_failed)
        return
    [(_, summary)] = launch_spaces([space], address=address, retry_failed=retry_failed)
    raise typer.Exit(summary.exit_code)


# What a launch does with a trial in each state (sweep.driver: SweepDriver._admit).
_ACTIONS = {"done": "reuse", "resumable": "resume", "pending": "run", "running": "run", "failed": "skip"}
_ORDER = ("run", "resume", "retry", "reuse", "skip")


def dry_run_action(trial: TrialStatus, retry_failed: bool) -> str:
    """What `launch` would do with the trial: reuse (found done), resume (from its state.pt), run, skip (it
    FAILED before; `--retry-failed` runs it again as `retry`)."""
    if trial.state == "failed" and retry_failed:
        return "retry"
    return _ACTIONS[trial.state]


def print_dry_run(console: Console, space: Space, retry_failed: bool) -> None:
    """The trials a launch would start, resume, reuse or skip, per trial and per stage. Reads the ledger and the
    checkpoints only: starts no Ray, opens no tracker, writes nothing."""
    from sweep_engine.space import count_trials, sweep_key
    from sweep_engine.sweep.status import trial_statuses

    # A run left RUNNING by a killed driver is reconciled at launch; here it counts by its files.
    trials = trial_statuses(space, running_keys=set())
    table = Table(
        title=f"launch --dry-run: {space.name} ({sweep_key(space)})", title_justify="left", box=None
    )
    for col in ("action", "stage", "trial", "lang", "size", "D_F", "init", "lr", "seed", "after"):
        _add_column(table, col)
    for t in trials:
        d_f = "all" if t.d_f is None else f"{t.d_f:,}"
        after = (
            t.init_from
            if t.init_from and dry_run_action(t, retry_failed) in ("run", "resume", "retry")
            else ""
        )
        row = (dry_run_action(t, retry_failed), t.stage, t.key, t.language, t.size, d_f, t.init, f"{t.lr:g}")
        table.add_row(*row, str(t.seed), after)
    console.print(table)
    for stage in ("pretrain", "transfer"):
        counts = Counter(dry_run_action(t, retry_failed) for t in trials if t.stage == stage)
        if counts:
            console.print(f"{stage}: " + ", ".join(f"{counts[a]} {a}" for a in _ORDER if counts[a]))
    if space.search.kind == "optuna" and space.transfer is not None:
        budget = count_trials(space)["transfer"] * len(space.transfer.seeds)
        console.print(f"transfer: up to {budget} trials sampled by Optuna as the sweep runs (not listed)")
    console.print("dry run: no Ray started, nothing written")


def launch_spaces(
    spaces: list[Space], *, address: str | None = None, retry_failed: bool = False
) -> list[tuple[Space, SweepSummary]]:
    """Launch sweeps, each with its closing summary: several run as one Tune experiment with one live view
    (ray_tune.launch_together), a single one on its own. `sweep-engine demo` launches its three target sweeps
    through this.

    Raises:
        typer.Exit: with code 2 when a space's data is bad input (nothing of that sweep was written).
    """
    from sweep_engine.data.inputs import check_inputs
    from sweep_engine.space import sweep_key
    from sweep_engine.sweep.faults import FAULTS_ENV, parse_faults
    from sweep_engine.sweep.progress import PrefixedView, RichProgressView

    console = Console(stderr=True)
    out: list[tuple[Space, SweepSummary]] = []
    # Bad input exits 2 before Ray starts: a missing corpus must not cost a Ray start and a pre-training.
    with on_bad_input():
        for space in spaces:
            check_inputs(space)
        parse_faults(os.environ.get(FAULTS_ENV, ""))
    # `kill` stops a sweep as cleanly as Ctrl-C: trials KILLED, resumable.
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    from sweep_engine.sweep import ray_tune  # Ray, only now

    try:
        if len(spaces) > 1:
            # One Tune experiment for all: no core idles between one sweep's tail and the next sweep.
            shared = RichProgressView(console, title=", ".join(f"{s.name} {sweep_key(s)}" for s in spaces))
            try:
                with on_bad_input():
                    summaries = ray_tune.launch_together(
                        spaces,
                        address=address,
                        retry_failed=retry_failed,
                        views=[PrefixedView(shared, s.name) for s in spaces],
                        data_progress=shared.data,
                    )
            finally:
                shared.close()
            for space, summary in zip(spaces, summaries, strict=True):
                print_summary(console, space, summary)
                out.append((space, summary))
            return out
        with ray_tune.ray_session(address):
            for space in spaces:
                progress = RichProgressView(console, title=f"{space.name} {sweep_key(space)}")
                try:
                    with on_bad_input():
                        summary = ray_tune.launch(
                            space, retry_failed=retry_failed, progress=progress, data_progress=progress.data
                        )
                finally:
                    progress.close()
                print_summary(console, space, summary)
                out.append((space, summary))
                if summary.interrupted:
                    break
    finally:
        signal.signal(signal.SIGTERM, previous)
    return out


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """A SIGTERM handler: stop the way Ctrl-C does (trials KILLED, the sweep resumable)."""
    raise KeyboardInterrupt


def print_summary(console: Console, space: Space, summary: SweepSummary) -> None:
    """The end-of-launch table: per stage, trials finished, reused, failed, blocked, killed."""
    table = Table(title=f"sweep {space.name} ({summary.sweep_key})", title_justify="left", box=None)
    for col in ("stage", "trials", "finished", "reused", "failed", "blocked", "killed"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in summary.stages:
        table.add_row(
            s.stage, *(str(v) for v in (s.total, s.finished, s.reused, s.failed, s.blocked, s.killed))
        )
    console.print(table)
    for stage in summary.stages:
        for key, reason, error in stage.failures:
            # The first line says what happened, the last one ends with the trial log's path.
            lines = [line.strip() for line in error.strip().splitlines() if line.strip()] or [""]
            said = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
            console.print(
                f"FAILED {stage.stage} {key} ({reason}): {said}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if stage.blocked:
            console.print(f"{stage.stage}: {stage.blocked} trial(s) blocked: their pre-training trial failed")
    from sweep_engine.tracking import experiment_url

    # A tracking server's runs table, else the command that serves a local store's.
    runs = (
        experiment_url(space.tracking_uri, space.experiment_name) or f"sweep-engine ui {space.source or ''}"
    )
    console.print(f"ledger: {space.results_dir / 'trials.parquet'}   runs: {runs}", soft_wrap=True)
    if summary.interrupted:
        console.print(
            "interrupted: every unfinished trial resumes from its checkpoint with `sweep-engine resume`"
        )


def status_cmd(
    space_path: SpaceArg,
    overrides: OverridesArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    trials: Annotated[bool, typer.Option("--trials", help="Also one row per trial.")] = False,
) -> None:
    """Trials done / running / failed / pending per stage, and an ETA (from the files and MLflow; no Ray)."""
    from sweep_engine.space import sweep_key
    from sweep_engine.sweep.progress import format_duration
    from sweep_engine.sweep.status import sweep_status, trial_statuses

    space = load_space_or_exit(space_path, overrides)
    stages = sweep_status(space)
    rows = trial_statuses(space) if trials else []
    if as_json:
        out: dict[str, Any] = {"sweep_key": sweep_key(space), "stages": [s.to_dict() for s in stages]}
        if trials:
            out["trials"] = [r.to_dict() for r in rows]
        typer.echo(json.dumps(out, indent=1))
        return
    console = table_console()
    table = Table(title=f"status: {space.name} ({sweep_key(space)})", title_justify="left", box=None)
    for col in ("stage", "total", "done", "running", "failed", "pending", "resumable", "ETA"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in stages:
        values = (s.total, s.done, s.running, s.failed, s.pending, s.resumable)
        table.add_row(s.stage, *(str(v) for v in values), format_duration(s.eta_s))
    console.print(table)
    if trials:
        console.print(trial_table(rows))


def table_console() -> Console:
    """stdout for the per-trial tables: a terminal's width, else wide enough for a log file's full rows."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _add_column(table: Table, name: str) -> None:
    # A trial key is never cut or wrapped (it is what a user copies); other columns give way first.
    is_key = name in ("trial", "after")
    table.add_column(
        name,
        justify="right" if name in ("D_F", "lr", "seed", "best val") else "left",
        no_wrap=name in ("trial", "after", "stage", "action", "state"),
        min_width=12 if is_key else None,
    )


def trial_table(rows: list[TrialStatus]) -> Table:
    """One row per trial: its state, axes, and (when done) best validation loss and stop reason."""
    table = Table(box=None, title="trials", title_justify="left")
    for col in ("state", "stage", "trial", "lang", "size", "D_F", "init", "lr", "seed", "best val", "stop"):
        _add_column(table, col)
    for r in rows:
        best = "" if r.best_val_loss is None else f"{r.best_val_loss:.4f}"
        d_f = "all" if r.d_f is None else f"{r.d_f:,}"
        table.add_row(
            r.state,
            r.stage,
            r.key,
            r.language,
            r.size,
            d_f,
            r.init,
            f"{r.lr:g}",
            str(r.seed),
            best,
            r.stop_reason or "",
        )
    return table


def ui_cmd(
    space_path: SpaceArg,
    overrides: OverridesArg = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 5000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server worker processes.")] = 1,
) -> None:
    """Start the MLflow UI on the sweep's tracking store and print its URL (Ctrl-C stops it)."""
    from sweep_engine.tracking import experiment_url, serve_ui, serves_own_ui, store_exists

    space = load_space_or_exit(space_path, overrides)
    uri = space.tracking_uri
    if not store_exists(uri):
        raise fail(f"{space_path}: tracking.uri: no store at {uri} yet: launch the sweep first")
    if serves_own_ui(uri):
        # A tracking server (the head node's, see cluster.yaml) already serves its own UI.
        typer.echo(f"MLflow UI: {experiment_url(uri, space.experiment_name) or uri}")
        return
    if serve_ui(uri, space.experiment_name, host=host, port=port, workers=workers):
        raise typer.Exit(1)
