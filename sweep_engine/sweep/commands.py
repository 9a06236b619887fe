"""CLI commands of the sweep stage: `launch`, `resume`, `status` and `ui`.

Plain functions; cli.py registers them. Ray, MLflow and torch are imported inside the commands, so the rest of the
CLI (`validate`, `plan`) starts fast. Exit codes: 0 every trial finished, 1 some trial failed or was blocked
(a summary says which and why), 2 bad input (nothing written), 130 interrupted (Ctrl-C; `resume` continues).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sweep_engine.config import Space, load_space
from sweep_engine.exits import fail, on_bad_input

if TYPE_CHECKING:
    from sweep_engine.sweep.driver import SweepSummary

SpaceArg = Annotated[Path, typer.Argument(metavar="SPACE", help="A search-space YAML file.")]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Join this Ray cluster (e.g. 'auto' on a `ray up` head node); default: "
        "start an embedded local Ray.",
    ),
]
RetryOpt = Annotated[
    bool, typer.Option("--retry-failed", help="Also re-run trials the ledger records as FAILED.")
]


def launch_cmd(space_path: SpaceArg, address: AddressOpt = None, retry_failed: RetryOpt = False) -> None:
    """Run a sweep: pre-training, then transfer, one Ray Tune trial per trial spec. Relaunching continues it."""
    _launch(space_path, address, retry_failed)


def resume_cmd(space_path: SpaceArg, address: AddressOpt = None, retry_failed: RetryOpt = False) -> None:
    """Continue a sweep after Ctrl-C, a crash or a lost node (the same as `launch`, said explicitly)."""
    _launch(space_path, address, retry_failed)


def _launch(space_path: Path, address: str | None, retry_failed: bool) -> None:
    with on_bad_input():
        space = load_space(space_path)
    [(_, summary)] = launch_spaces([space], address=address, retry_failed=retry_failed)
    raise typer.Exit(summary.exit_code)


def launch_spaces(
    spaces: list[Space], *, address: str | None = None, retry_failed: bool = False
) -> list[tuple[Space, SweepSummary]]:
    """Launch sweeps one after the other in one Ray session, each with its live view and closing summary.

    Stops after a launch that was interrupted (Ctrl-C or SIGTERM). `sweep-engine demo` launches its three
    target sweeps through this too.

    Raises:
        typer.Exit: with code 2 when a space's data is bad input (nothing of that sweep was written).
    """
    from sweep_engine.space import sweep_key
    from sweep_engine.sweep import ray_tune  # Ray, only now
    from sweep_engine.sweep.progress import RichProgressView

    console = Console(stderr=True)
    out: list[tuple[Space, SweepSummary]] = []
    # `kill` stops a sweep as cleanly as Ctrl-C: trials KILLED, resumable.
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
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
            first = error.strip().splitlines()[-1] if error.strip() else ""
            console.print(f"FAILED {stage.stage} {key} ({reason}): {first}", markup=False, highlight=False)
        if stage.blocked:
            console.print(f"{stage.stage}: {stage.blocked} trial(s) blocked: their pre-training trial failed")
    console.print(
        f"ledger: {space.results_dir / 'trials.parquet'}   runs: sweep-engine ui {space.source or ''}"
    )
    if summary.interrupted:
        console.print(
            "interrupted: every unfinished trial resumes from its checkpoint with `sweep-engine resume`"
        )


def status_cmd(
    space_path: SpaceArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Trials done / running / failed / pending per stage, and an ETA (from the files and MLflow; no Ray)."""
    from sweep_engine.space import sweep_key
    from sweep_engine.sweep.progress import format_duration
    from sweep_engine.sweep.status import sweep_status

    with on_bad_input():
        space = load_space(space_path)
    stages = sweep_status(space)
    if as_json:
        typer.echo(
            json.dumps({"sweep_key": sweep_key(space), "stages": [s.to_dict() for s in stages]}, indent=1)
        )
        return
    table = Table(title=f"status: {space.name} ({sweep_key(space)})", title_justify="left", box=None)
    for col in ("stage", "total", "done", "running", "failed", "pending", "resumable", "ETA"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in stages:
        values = (s.total, s.done, s.running, s.failed, s.pending, s.resumable)
        table.add_row(s.stage, *(str(v) for v in values), format_duration(s.eta_s))
    Console().print(table)


def ui_cmd(
    space_path: SpaceArg,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 5000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server worker processes.")] = 1,
) -> None:
    """Start the MLflow UI on the sweep's tracking store and print its URL (Ctrl-C stops it)."""
    from sweep_engine.tracking import serve_ui, serves_own_ui, store_exists

    with on_bad_input():
        space = load_space(space_path)
    uri = space.tracking_uri
    if not store_exists(uri):
        raise fail(f"{space_path}: tracking.uri: no store at {uri} yet: launch the sweep first")
    if serves_own_ui(uri):
        # A tracking server (the head node's, see cluster.yaml) already serves its own UI.
        typer.echo(f"MLflow UI: {uri}")
        return
    if serve_ui(uri, space.experiment_name, host=host, port=port, workers=workers):
        raise typer.Exit(1)
