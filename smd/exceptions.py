"""Every exception smd raises, in one module, under one base class.

``except smd.exceptions.SmdError`` catches anything smd raised on purpose.
Each class also derives from the built-in exception a caller would expect
(``InvalidPlan`` and ``SettingsError`` are ``ValueError``s), so existing
``except ValueError`` code keeps working.

Messages never contain a secret: they pass :func:`smd.secrets.redact`
wherever they may quote user input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smd._failures import Failure
    from smd._report import Report

__all__ = [
    "InvalidPlan",
    "InvalidTransition",
    "OutputError",
    "PhaseError",
    "SettingsError",
    "SmdError",
    "StartupFailed",
    "StartupInterrupted",
    "StoreUnavailable",
    "TargetError",
    "UsageError",
]


class SmdError(Exception):
    """The base class of every exception smd raises on purpose."""


class InvalidPlan(SmdError, ValueError):
    """The declared phases do not form a valid plan; the message names the culprit."""


class SettingsError(SmdError, ValueError):
    """An invalid setting; the message is one line naming it and what it accepts."""


class TargetError(SmdError):
    """A CLI TARGET cannot be loaded; the message says why and what is accepted."""


class OutputError(SmdError, OSError):
    """A file smd was asked to write could not be written (a full disk, an I/O error).

    The message names the file and the reason; the CLI exits 74 (EX_IOERR).
    Nothing half-written is left in the file's place.
    """


class UsageError(SmdError):
    """Bad command-line arguments (exit 64)."""


class StoreUnavailable(SmdError):
    """A shared history store cannot be reached or used right now.

    Raised by stores other than the embedded one; smd then uses the embedded
    (SQLite) store instead, with one warning. The message never holds a secret.
    """


class InvalidTransition(SmdError, RuntimeError):
    """A readiness transition the state machine does not allow."""


class PhaseError(SmdError):
    """Raised by a phase to report an already-classified failure.

    Checks classify what went wrong (a refused connection is
    ``infrastructure``, a bad password ``configuration``); a phase that uses
    a check raises ``PhaseError(failure)`` so the runner keeps that kind
    instead of calling it ``application``.
    """

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _what(report: Report) -> str:
    failed = report.failed_phase
    if failed is not None and failed.failure is not None:
        f = failed.failure
        return f"phase {failed.name!r} failed ({f.kind.value}): {f.message}"
    if report.interrupted:
        return f"interrupted by {report.interrupted.upper()}"
    return "startup failed"


class StartupFailed(ExceptionGroup[Exception], SmdError):
    """Startup stopped. ``report`` says why; teardown errors are raised with it.

    ``exceptions`` holds the failing phase's error first, then every teardown
    error, so ``except StartupFailed`` and ``except*`` both work.
    """

    report: Report

    def __new__(cls, report: Report, errors: Sequence[Exception]) -> StartupFailed:
        from smd._redact import redact

        errors = list(errors) or [SmdError(_what(report))]
        self = super().__new__(cls, redact(f"startup {report.startup!r}: {_what(report)}"), errors)
        self.report = report
        return self

    def __init__(self, report: Report, errors: Sequence[Exception]) -> None:
        super().__init__(self.message, list(self.exceptions))

    def derive(self, excs: Any) -> Any:
        return ExceptionGroup(self.message, list(excs))


class StartupInterrupted(SmdError):
    """A signal (SIGTERM, SIGINT, SIGHUP) arrived while the phases ran.

    What had started was torn down. ``report`` is the (failed, interrupted)
    report, ``signum`` the signal number.
    """

    def __init__(self, report: Report, signum: int) -> None:
        import signal

        self.report = report
        self.signum = signum
        super().__init__(
            f"startup {report.startup!r} interrupted by {signal.Signals(signum).name} after "
            f"{report.duration:.3f}s; teardown ran"
        )
