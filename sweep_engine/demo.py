"""`sweep-engine demo`: the whole study on this machine, end to end, through the real engine.

Three target-language sweeps (Chinese, Spanish, German) run one after the other through `sweep.ray_tune.launch`, the
function behind `sweep-engine launch` (Ray Tune + MLflow), inside one Ray session. They share one English
pre-training stage (`pretrain_from`): its trial keys are content hashes and its checkpoints live under the
shared storage root, so the first launch trains the English models and the other two find them done and only
record them (the demo checks and says so). Then one cross-language analysis, the function behind
`sweep-engine analyze`, over the three results directories, logged to every sweep's parent MLflow runs as
`analyze` does, and a closing block: where the report is, the
answer (the D_T ordering per size at the smallest D_F, with intervals, against the seed study's de > es > zh),
how to open the MLflow UI on the runs, and the demo's wall time.

Exit codes as elsewhere: 0 every trial finished, 1 some trial failed or was blocked, 2 bad input (nothing
run), 130 interrupted (`sweep-engine resume SPACE`, or the demo again, continues where it stopped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sweep_engine.config import Space
    from sweep_engine.sweep.driver import SweepSummary

LANGUAGES = ("chinese", "spanish", "german")  # launch order; the first trains the shared English models
REPO_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


@dataclass
class Launched:
    """One target sweep of the demo and how it ended."""

    space: Space
    path: Path
    summary: SweepSummary

    @property
    def pretrain_trained(self) -> int:
        """English pre-training trials this launch trained itself (not found done)."""
        stage = next((s for s in self.summary.stages if s.stage == "pretrain"), None)
        return stage.finished - stage.reused if stage else 0

    @property
    def pretrain_reused(self) -> int:
        stage = next((s for s in self.summary.stages if s.stage == "pretrain"), None)
        return stage.reused if stage else 0


def spaces_dir_for(spaces_dir: Path | None, quick: bool) -> Path:
    """The directory holding {chinese,spanish,german}.yaml: --spaces-dir, else ./search_spaces, else the
    repository's (an editable install run from elsewhere); `quick/` below it with --quick."""
    if spaces_dir is None:
        here = Path("search_spaces")
        spaces_dir = here if here.is_dir() else REPO_SPACES
    return spaces_dir / "quick" if quick else spaces_dir


def load_demo_spaces(directory: Path, storage: Path | None) -> list[tuple[Path, Space]]:
    """Load the three target spaces; with `storage`, every sweep (and its MLflow store) lives there instead.

    Raises:
        UserError: a space is missing or invalid (every problem of every file in one message).
    """
    from sweep_engine.config import load_space
    from sweep_engine.errors import ConfigError

    out, problems = [], []
    for name in LANGUAGES:
        path = directory / f"{name}.yaml"
        try:
            space = load_space(path)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if storage is not None:
            # Space is frozen: a copy with another results root. The tracking URI and the shared checkpoints
            # follow from it, so the three sweeps still share one store and one English pre-training.
            space = space.model_copy(update={"storage": str(storage)})
        out.append((path, space))
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def demo_cmd(
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny spaces (search_spaces/quick/): the whole study in minutes.")
    ] = False,
    spaces_dir: Annotated[
        Path | None,
        typer.Option(
            "--spaces-dir",
            help="Directory with chinese.yaml, spanish.yaml, german.yaml (default: search_spaces).",
        ),
    ] = None,
    storage: Annotated[
        Path | None,
        typer.Option(
            "--storage", help="Results root for every sweep and the MLflow store (default: the spaces')."
        ),
    ] = None,
    bootstrap: Annotated[
        int | None,
        typer.Option(
            "--bootstrap", min=0, help="Bootstrap resamples of the analysis (default: the spaces')."
        ),
    ] = None,
) -> None:
    """Run the study end to end: three target-language sweeps sharing one English pre-training, then one
    cross-language report. Prints the report's paths, the D_T ordering per size and the MLflow UI command."""
    from sweep_engine.errors import UserError
    from sweep_engine.exits import BAD_INPUT, FAILURE, fail, on_bad_input
    from sweep_engine.sweep.progress import format_duration

    start = time.monotonic()
    directory = spaces_dir_for(spaces_dir, quick)
    with on_bad_input():
        spaces = load_demo_spaces(directory, storage)

    launched, code = _run_sweeps(spaces)
    swept = time.monotonic()
    if code == 130:
        typer.echo("interrupted: run the demo again (or `sweep-engine resume SPACE`) to continue", err=True)
        raise typer.Exit(130)
    for line in _pretrain_lines(launched):
        typer.echo(line)

    from sweep_engine.analysis.commands import options_of
    from sweep_engine.analysis.report import analyze

    first = spaces[0][1]
    typer.echo("analysing the three sweeps together ...", err=True)
    try:
        options = options_of(first.analysis)
        summary = analyze(
            [s.results_dir for _, s in spaces],
            options=options if bootstrap is None else replace(options, bootstrap=bootstrap),
        )
    except UserError as exc:
        # No finished transfer runs: the trials' failures (already listed) are the cause when there are any.
        raise fail(f"analysis: {exc}", FAILURE if code else BAD_INPUT) from None

    # Beside the runs in the MLflow UI, as `sweep-engine analyze` does; from the spaces themselves (not their
    # files), so that a --storage override logs to the store the sweeps used.
    from sweep_engine.tracking import log_report

    report_dir = Path(summary["report_dir"])
    logged = [rid for _, s in spaces for rid in log_report(s.tracking_uri, s.experiment_name, report_dir)]
    typer.echo(f"report logged to {len(logged)} MLflow parent run(s)", err=True)
    for line in closing_lines(summary, spaces, storage_overridden=storage is not None):
        typer.echo(line)
    end = time.monotonic()
    typer.echo(
        f"wall time: {format_duration(end - start)} ({end - start:.0f} s: sweeps {swept - start:.0f} s, "
        f"analysis {end - swept:.0f} s)"
    )
    raise typer.Exit(code)


def _run_sweeps(spaces: list[tuple[Path, Space]]) -> tuple[list[Launched], int]:
    """Launch the three sweeps in one Ray session; return them and the worst exit code."""
    from sweep_engine.sweep.commands import launch_spaces

    paths = {id(space): path for path, space in spaces}
    ran = launch_spaces([space for _, space in spaces])
    launched = [Launched(space, paths[id(space)], summary) for space, summary in ran]
    return launched, max((s.exit_code for _, s in ran), default=0)


def _pretrain_lines(launched: list[Launched]) -> list[str]:
    """Who trained the shared English models, and a warning if a later sweep trained them again."""
    if not launched:
        return []
    first, rest = launched[0], launched[1:]
    lines = [
        f"English pre-training: {first.pretrain_trained} trained by {first.space.name}, "
        f"{first.pretrain_reused} found done; "
        + ", ".join(f"{r.space.name} reused {r.pretrain_reused}" for r in rest)
    ]
    again = [r for r in rest if r.pretrain_trained]
    for r in again:
        lines.append(
            f"warning: {r.space.name} trained {r.pretrain_trained} English pre-training trial(s) again: its "
            "pre-training differs from the first space's (pretrain_from, tokenizer or storage)"
        )
    return lines


def closing_lines(
    summary: dict[str, Any], spaces: list[tuple[Path, Space]], *, storage_overridden: bool
) -> list[str]:
    """The demo's last words: the report, the answer, and how to look at the runs.

    Args:
        summary: `analyze()`'s JSON summary.
        spaces: the (file, space) pairs that ran.
        storage_overridden: --storage was given, so `sweep-engine ui SPACE` (which reads the file's storage)
            would open another store; print only the tracker's own UI command then.
    """
    from sweep_engine.tracking import ui_hint

    head = summary["headline"]
    first_path, first = spaces[0]
    names = ", ".join(s.experiment_name for _, s in spaces)
    lines = [
        "",
        "answer, the evidence first: fine-tuned minus scratch loss on the same test documents at the smallest D_F",
        "        (95% paired interval; negative = English pre-training helps):",
        *(f"  {line}" for line in head["evidence"]),
        "transfer: D_F/D_E (unitless, fair across scripts; smaller = more help), D_T in tokens and characters:",
        *(f"  {line}" for line in head["transfer"]),
        f"verdict: {head['verdict']}",
        f"report: {summary['report_html']}",
        f"        {summary['report_md']}",
        f"runs:   {ui_hint(first.tracking_uri)}   (experiments {names})",
    ]
    if not storage_overridden:
        lines.append(f"        or: sweep-engine ui {first_path}")
    return lines
