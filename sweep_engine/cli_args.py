"""The command-line arguments every command that reads a space shares: the file and its overrides.

`sweep-engine launch space.yaml transfer.lr=[1e-3] resources.max_concurrent_trials=1` sets dotted keys of the
space as Hydra / OmegaConf users expect (the value read as YAML); they are validated with the file, so a bad
one exits 2 with the same one-line-per-error message as a bad file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sweep_engine.exits import on_bad_input

if TYPE_CHECKING:
    from sweep_engine.config import Space

SpaceArg = Annotated[Path, typer.Argument(metavar="SPACE", help="A search-space YAML file.")]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[KEY=VALUE]...",
        help="Override settings of the space by dotted key, e.g. transfer.lr=[1e-3] "
        "resources.max_concurrent_trials=1 (values are YAML).",
        show_default=False,
    ),
]


def load_space_or_exit(path: Path, overrides: list[str] | None = None) -> Space:
    """The validated space with its overrides; bad input prints its errors and exits 2."""
    from sweep_engine.config import load_space

    with on_bad_input():
        return load_space(path, overrides or ())
