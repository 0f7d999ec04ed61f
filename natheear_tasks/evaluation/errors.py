"""The exceptions of ``natheear-tasks evaluate``: what ends a run with exit code 2, and what
leaves one model unavailable or failed while the others go on."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad command-line input or task directories (exit code 2)."""


class ModelUnavailable(RuntimeError):
    """A model's weights cannot be had here (e.g. a Hub download while offline)."""


class ScoreUnavailable(RuntimeError):
    """A probe's test scores are undefined (a SELD task's test files without any event)."""
