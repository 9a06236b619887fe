"""How every command ends on an error: one home for the exit codes and the message format.

Exit codes: 0 success, 1 runtime failure (e.g. some trials FAILED), 2 bad input (nothing written), 130
interrupted. An error is printed on stderr as one line per problem, `error: <where>: <rule>`; a `UserError`
whose message lists several problems (one per line, as `config.load_space` raises them) prints one `error:`
line for each, so a config error reads the same from `validate`, `launch`, `analyze` or `data prepare`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from sweep_engine.errors import UserError

OK, FAILURE, BAD_INPUT, INTERRUPTED = 0, 1, 2, 130


def error_lines(message: str) -> list[str]:
    """`message` as the lines printed: one `error: ...` line per non-empty line of it."""
    return [f"error: {line.strip()}" for line in message.splitlines() if line.strip()]


def fail(message: str, code: int = BAD_INPUT) -> typer.Exit:
    """Print `message` on stderr (one `error:` line per line) and return the Exit to raise.

    Args:
        message: One problem per line, each naming the field (or file) and the rule.
        code: BAD_INPUT (2) or FAILURE (1).
    """
    for line in error_lines(message):
        typer.echo(line, err=True)  # plain text: rich would wrap long paths mid-message
    return typer.Exit(code)


@contextmanager
def on_bad_input(code: int = BAD_INPUT) -> Iterator[None]:
    """Turn a `UserError` raised inside the block into its message on stderr and exit `code` (2 by default)."""
    try:
        yield
    except UserError as exc:
        raise fail(str(exc), code) from None
