"""Errors that carry their reason to the user and to the ledger.

`UserError` and its subclasses are bad input: the CLI prints them and exits with code 2. Everything else that
escapes is a runtime failure (exit 1).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a space file, a CSV, a corpus path): exit code 2, nothing written."""


class ConfigError(UserError):
    """A search space or trial spec that breaks a rule; the message names the field, the rule and the value."""


class DataError(UserError):
    """A corpus that cannot be reached or read, or data too small for what the space asks."""


class FitError(UserError):
    """Data a law cannot be fitted to (too few points, NaNs, non-positive losses)."""
