"""Why a trial failed, and the fault-injection test hook (no Ray, no torch: importable anywhere).

Failure reasons (docs/cluster.md, "Design choices"): `config` (a UserError: bad spec, unreadable data), `oom`,
`diverged` and `crash` (anything else). Only `crash` is retried, because a lost worker or node, or a flaky
filesystem, may not happen again; the other three would fail the same way on every attempt.

Test hook: the environment variable SWEEP_ENGINE_FAULTS, read by the launcher and handed to every trial, makes
chosen trials fail on purpose at their first evaluation report. Entries are separated by commas, each
`SELECTOR:MODE`. SELECTOR is a trial_key (or a prefix of one of at least 6 characters), or `field=value` pairs
joined by `&` over stage, language, init, size, d_f, lr, seed (e.g. `language=es&init=finetune&d_f=1000`).
MODE is one of:

- `once`: raise a RuntimeError on the first attempt only (a marker file in the trial's workdir remembers it), so
  the retry resumes from the checkpoint and finishes;
- `always`: raise a RuntimeError on every attempt (ends FAILED with reason `crash` after the retries);
- `kill`: end the trial process abruptly once (`os._exit`), as a lost worker would;
- `segv`: print a fatal message and crash the trial process with a segmentation fault on every attempt, as a
  native library does (Intel oneMKL's "Cannot load ...", a CUDA error): no Python exception, only the trial log
  says why;
- `oom`, `config`: raise a MemoryError / ConfigError (not retried; reasons `oom` / `config`).
"""

from __future__ import annotations

import faulthandler
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep_engine.errors import ConfigError, UserError
from sweep_engine.spec import TrialSpec

FAULTS_ENV = "SWEEP_ENGINE_FAULTS"
DETERMINISTIC = ("config", "oom", "diverged")  # not retried
MODES = ("once", "always", "kill", "segv", "oom", "config")
_FIELDS = ("stage", "language", "init", "size", "d_f", "lr", "seed")


class InjectedFault(RuntimeError):
    """Raised by the fault-injection hook (a `crash`, so it is retried)."""


def failure_reason(exc: BaseException) -> str:
    """Classify an exception (and the exceptions it wraps) as `config`, `oom`, `diverged` or `crash`.

    Errors that crossed a process boundary (Ray Train's TrainingFailedError, a RayTaskError) only carry the
    original as text, so the text is searched too.
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {type(e).__name__ for e in chain}
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    if any(isinstance(e, UserError) for e in chain) or _mentions(
        text, ("ConfigError", "DataError", "UserError")
    ):
        return "config"
    if (
        any(isinstance(e, MemoryError) for e in chain)
        or "OutOfMemoryError" in names
        or _mentions(text, ("OutOfMemoryError", "out of memory", "MemoryError", "can't allocate memory"))
    ):
        return "oom"
    if any(isinstance(e, FloatingPointError) for e in chain) or "diverge" in text.lower():
        return "diverged"
    return "crash"


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    return any(w in text for w in words)


def error_message(exc: BaseException, limit: int = 2000) -> str:
    """A one-paragraph message: the exception's type and text (the last lines of a remote traceback)."""
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 6:
        text = "\n".join(lines[-6:])
    return f"{type(exc).__name__}: {text}"[:limit]


@dataclass(frozen=True)
class Fault:
    selector: str
    mode: str

    def matches(self, spec: TrialSpec) -> bool:
        if "=" not in self.selector:
            return len(self.selector) >= 6 and spec.key().startswith(self.selector)
        values: dict[str, Any] = {
            "stage": spec.stage,
            "language": spec.language,
            "init": spec.init,
            "size": spec.model.name,
            "d_f": spec.data.d_f,
            "lr": spec.lr,
            "seed": spec.seed,
        }
        for pair in self.selector.split("&"):
            name, _, want = pair.partition("=")
            have = values[name]
            if isinstance(have, (int, float)) and not isinstance(have, bool):
                if float(want) != float(have):
                    return False
            elif str(have) != want:
                return False
        return True

    def fire(self, workdir: Path, tag: str = "") -> None:
        """Fail as the mode says (called at the trial's first report). `tag` tells DDP ranks apart."""
        marker = Path(workdir) / f".fault-{self.mode}{tag}"
        if self.mode in ("once", "kill"):
            if marker.exists():
                return
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            if self.mode == "kill":
                os._exit(17)  # no cleanup, no exception: what a lost worker looks like to Ray
            raise InjectedFault(f"injected fault ({self.selector}:once)")
        if self.mode == "segv":
            os.write(2, f"injected native crash ({self.selector}:segv): FATAL ERROR\n".encode())
            faulthandler._sigsegv()  # type: ignore[attr-defined]  # CPython's test hook for a real SIGSEGV
        if self.mode == "always":
            raise InjectedFault(f"injected fault ({self.selector}:always)")
        if self.mode == "oom":
            raise MemoryError(f"injected out of memory ({self.selector})")
        if self.mode == "config":
            raise ConfigError(f"injected config error ({self.selector})")


def parse_faults(text: str | None) -> list[Fault]:
    """Parse SWEEP_ENGINE_FAULTS (see the module docstring).

    Raises:
        ConfigError: an entry without `:MODE`, an unknown mode or an unknown selector field.
    """
    faults = []
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        selector, sep, mode = entry.rpartition(":")
        if not sep or mode not in MODES:
            raise ConfigError(
                f"{FAULTS_ENV}: entries must be SELECTOR:MODE with MODE in {MODES}, got {entry!r}"
            )
        for pair in selector.split("&") if "=" in selector else ():
            if pair.partition("=")[0] not in _FIELDS:
                raise ConfigError(f"{FAULTS_ENV}: selector fields must be in {_FIELDS}, got {pair!r}")
        faults.append(Fault(selector, mode))
    return faults


def fault_for(spec: TrialSpec, faults: list[Fault]) -> Fault | None:
    return next((f for f in faults if f.matches(spec)), None)
