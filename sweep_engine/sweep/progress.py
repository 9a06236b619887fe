"""The live view of `sweep-engine launch`: one line per stage (done of total, running, failed, tokens/s, ETA).

On a terminal it redraws in place (rich Live); in a log file it prints one line per trial that ends, so a CI log
stays readable. Tune's own tables are silenced (ray_tune.py), this is the whole console output of a sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sweep_engine.spec import FAILED, FINISHED
from sweep_engine.sweep.jobs import Outcome, ProgressView


@dataclass
class _Stage:
    total: int
    concurrency: int
    finished: int = 0
    failed: int = 0
    killed: int = 0
    running: dict[str, float] = field(default_factory=dict)  # trial_key -> its latest tokens/s
    walls: list[float] = field(default_factory=list)  # wall seconds of trials that ran in this launch
    started_at: dict[str, float] = field(default_factory=dict)

    @property
    def ended(self) -> int:
        return self.finished + self.failed

    def eta_s(self) -> float | None:
        """Remaining trials x mean wall time of the trials run so far / concurrency (None before any)."""
        if not self.walls:
            return None
        remaining = max(0, self.total - self.ended)
        return remaining * (sum(self.walls) / len(self.walls)) / max(1, self.concurrency)


def format_duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `42s`, or `-` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_rate(tokens_per_s: float) -> str:
    if tokens_per_s >= 1e6:
        return f"{tokens_per_s / 1e6:.1f}M"
    if tokens_per_s >= 1e3:
        return f"{tokens_per_s / 1e3:.1f}K"
    return f"{tokens_per_s:.0f}"


class RichProgressView:
    """The live view of a launch (a jobs.ProgressView), drawn with rich.

    Args:
        console: Where to draw (stderr by default, so stdout stays for results).
        title: Shown above the table, e.g. the space's name and sweep key.
    """

    def __init__(self, console: Console | None = None, title: str = "") -> None:
        self.console = console or Console(stderr=True)
        self.title = title
        self.stages: dict[str, _Stage] = {}
        self.t0 = time.perf_counter()
        self.caption = ""
        self.live: Live | None = None
        if self.console.is_terminal:
            self.live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self.live.start()

    def render(self) -> Table:
        elapsed = format_duration(time.perf_counter() - self.t0)
        table = Table(
            title=f"{self.title}  ({elapsed})",
            caption=self.caption or None,
            title_justify="left",
            caption_justify="left",
            box=None,
            pad_edge=False,
        )
        for col in ("stage", "done", "running", "failed", "tokens/s", "ETA"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for name, st in self.stages.items():
            rate = sum(st.running.values())
            table.add_row(
                name,
                f"{st.ended}/{st.total}",
                str(len(st.running)),
                str(st.failed),
                format_rate(rate) if st.running else "-",
                format_duration(st.eta_s()),
            )
        return table

    def data(self, done: int, total: int, message: str) -> None:
        """Progress of the data preparation (tokenizers, token caches) before the first trial."""
        self.caption = f"data {done}/{total}: {message}" if done < total else ""
        if self.live is None and done == total:
            self.console.print(f"data ready ({total} data sets)", highlight=False)
        self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def stage_started(self, stage: str, total: int, concurrency: int) -> None:
        self.stages[stage] = _Stage(total, concurrency)
        self._refresh()

    def trial_started(self, stage: str, key: str) -> None:
        st = self.stages[stage]
        st.running.setdefault(key, 0.0)
        st.started_at.setdefault(key, time.perf_counter())
        self._refresh()

    def trial_reported(self, stage: str, key: str, metrics: dict[str, Any]) -> None:
        st = self.stages[stage]
        if key in st.running and isinstance(metrics.get("tokens_per_s"), (int, float)):
            st.running[key] = float(metrics["tokens_per_s"])
        self._refresh()

    def trial_ended(self, stage: str, outcome: Outcome) -> None:
        st = self.stages[stage]
        st.running.pop(outcome.trial_key, None)
        started = st.started_at.pop(outcome.trial_key, None)
        if outcome.status == FINISHED:
            st.finished += 1
        elif outcome.status == FAILED:
            st.failed += 1
        else:
            st.killed += 1
        if started is not None:
            st.walls.append(time.perf_counter() - started)
        if self.live is None and started is not None:
            # Not a terminal: one line per trial that ran in this launch.
            what = outcome.result.stop_reason if outcome.result else (outcome.failure_reason or "")
            self.console.print(
                f"{stage} {st.ended}/{st.total} {outcome.trial_key} {outcome.status.lower()} {what}".rstrip(),
                highlight=False,
            )
        self._refresh()

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.stop()
            self.live = None


class PrefixedView:
    """One sweep's view onto a view several sweeps share (a joint launch): its stages carry the sweep's name,
    and closing is left to whoever made the shared view."""

    def __init__(self, view: ProgressView, prefix: str) -> None:
        self.view, self.prefix = view, prefix

    def stage_started(self, stage: str, total: int, concurrency: int) -> None:
        self.view.stage_started(f"{self.prefix} {stage}", total, concurrency)

    def trial_started(self, stage: str, key: str) -> None:
        self.view.trial_started(f"{self.prefix} {stage}", key)

    def trial_reported(self, stage: str, key: str, metrics: dict[str, Any]) -> None:
        self.view.trial_reported(f"{self.prefix} {stage}", key, metrics)

    def trial_ended(self, stage: str, outcome: Outcome) -> None:
        self.view.trial_ended(f"{self.prefix} {stage}", outcome)

    def close(self) -> None:
        pass
