"""The one exit-code table (sysexits), used by every command and the report."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from smd._failures import FailureKind

__all__ = ["EXIT_CODES", "for_kind", "for_signal"]

#: sysexits codes, as documented in the README.
EXIT_CODES: Mapping[str, int] = MappingProxyType(
    {
        "ready": 0,
        "degraded": 0,
        "usage": 64,  # EX_USAGE: bad arguments, TARGET not importable, CMD not found
        "unknown": 69,  # EX_UNAVAILABLE
        "application": 70,  # EX_SOFTWARE: a phase's own code failed
        "output": 74,  # EX_IOERR: an output file could not be written
        "infrastructure": 75,  # EX_TEMPFAIL: try again later
        "timeout": 75,
        "configuration": 78,  # EX_CONFIG
        "invalid_settings": 78,  # from a variable, a file, --env or smd check's TARGET
        "invalid_plan": 78,
        "sighup": 129,  # 128 + the signal number, as a shell reports it
        "sigint": 130,
        "sigterm": 143,
    }
)


def for_kind(kind: FailureKind) -> int:
    """The exit code of a startup (or a check) that failed with this kind of failure."""
    return EXIT_CODES[kind.value]


def for_signal(name: str) -> int:
    """The exit code after an interruption by ``sigterm``, ``sigint`` or ``sighup``."""
    return EXIT_CODES[name]
