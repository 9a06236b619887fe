"""What produced a run: the code's git commit and the versions of the packages that shape its numbers.

Recorded on every trial's MLflow run (tracking.py: the run's source and `versions.*` tags), so a model found in
the tracker can be traced to the code and the libraries that trained it. Read once per launch.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

# The libraries whose versions change what a trial computes or how its model loads.
PACKAGES = ("sweep-engine", "torch", "transformers", "tokenizers", "ray", "mlflow", "numpy", "optuna")
UNKNOWN = "unknown"


@functools.cache
def git_commit() -> str:
    """The commit of the source tree this package runs from, `-dirty` when it has uncommitted changes;
    `unknown` outside a git checkout (an installed wheel, a tree copied without .git)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        if not commit:
            return UNKNOWN
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "sweep_engine")
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return commit + ("-dirty" if dirty else "")


@functools.cache
def package_versions() -> dict[str, str]:
    """Installed versions of PACKAGES (`unknown` for one not installed) and Python's."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = UNKNOWN
    return out
