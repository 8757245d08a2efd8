"""The PostgreSQL readiness check (asyncpg).

One *probe* opens a session, runs ``SELECT 1`` (and an optional readiness
query) and closes it, all bounded by one attempt timeout -- asyncpg's
``command_timeout`` does not cover connecting, so the whole probe runs under
an anyio deadline. :class:`PostgresCheck` is a :class:`smd.retry.Check`:
:meth:`PostgresCheck.wait_ready` (:func:`smd.retry.wait_ready`) repeats
probes while the failure can heal (infrastructure, timeout) and stops at once
when it cannot (configuration). Failures come back classified, the SQLSTATE
as the failure's ``code`` and ``details["sqlstate"]``; this module never
decides policy. A DSN may list several hosts (``h1:5432,h2:5432`` or
``?host=h1,h2&port=...``): each attempt tries them in order, each within its
share of the attempt and at most ``connect_timeout`` (see
:mod:`smd.checks._pg_connect`), and every failure names its host.

asyncpg is imported only when a probe runs, so ``import smd.checks.postgres``
costs nothing for a service that never talks to PostgreSQL. The module's
:data:`plugin` contributes ``smd check postgres DSN``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import SecretStr

from smd import Failure, FailureKind
from smd.checks._pg_classify import RedactedError, classify
from smd.checks._pg_connect import close, combine, open_session
from smd.checks._pg_options import PostgresConfigError, PostgresOptions
from smd.retry import Backoff, CheckResult, ProbeResult, wait_ready
from smd.secrets import register_secret

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "PostgresCheck",
    "PostgresConfigError",
    "PostgresOptions",
    "RedactedError",
    "classify",
    "probe",
]

_SUMMARY = "SELECT 1 answered"
# SQLSTATEs of a readiness query that mean "the schema is not there yet":
# migrations have not run, which waiting (for the migration job) can cure.
_NOT_MIGRATED = frozenset({"42P01", "42703", "3F000", "42883"})

Options = PostgresOptions | str | SecretStr


def _options(value: Options) -> PostgresOptions:
    if isinstance(value, PostgresOptions):
        return value
    return PostgresOptions.from_dsn(value)


async def _readiness(
    conn: asyncpg.Connection, options: PostgresOptions, target: str
) -> Failure | None:
    from asyncpg.exceptions import PostgresError

    assert options.readiness_query is not None
    try:
        value = await conn.fetchval(options.readiness_query)
    except PostgresError as exc:
        failure = classify(exc, target=target, secrets=options.secrets())
        if exc.sqlstate in _NOT_MIGRATED:
            return Failure(
                FailureKind.INFRASTRUCTURE,
                f"readiness query failed ({target}): the schema is not there yet "
                f"(migrations not applied?): {failure.message}",
                cause=failure.cause,
                code=exc.sqlstate,
                details={"sqlstate": exc.sqlstate},
                causes=failure.causes,
            )
        return replace(failure, message=f"readiness query failed: {failure.message}")
    if not value:
        return Failure(
            FailureKind.INFRASTRUCTURE,
            f"not ready ({target}): the readiness query returned {value!r}",
        )
    return None


async def probe(options: Options, *, attempt_seconds: float) -> ProbeResult:
    """One bounded attempt: connect (each host in turn), ``SELECT 1``, readiness query, close.

    Never raises for a connection problem: the result carries the classified
    failure, naming the host it came from. ``latency`` runs from the first
    byte sent to the last answer (the close is not counted).
    """
    options = _options(options)
    target = options.target_key()
    secrets = options.secrets()
    for secret in secrets:
        register_secret(secret)
    timeout = attempt_seconds
    start = anyio.current_time()
    try:
        resolved = options.ready_to_connect()
    except PostgresConfigError as exc:
        return ProbeResult(
            False, classify(exc, target=target, secrets=secrets), start=start, end=start
        )
    if not timeout > 0:
        late = Failure(FailureKind.TIMEOUT, f"no time left to try {target}")
        return ProbeResult(False, late, start=start, end=start)

    session = None
    failure: Failure | None = None
    answered = False
    try:
        with anyio.move_on_after(timeout) as scope:
            session = await open_session(options, resolved, seconds=timeout, secrets=secrets)
            if session.conn is None:
                failure, answered = combine(session.outcomes, target)
            else:
                answered = True
                if options.readiness_query:
                    failure = await _readiness(session.conn, options, session.target)
        end = anyio.current_time()
        if scope.cancelled_caught:
            failure = Failure(
                FailureKind.TIMEOUT,
                f"no answer within the attempt timeout of {timeout:.3g}s ({target})",
            )
            answered = False
    finally:
        if session is not None and session.conn is not None:
            await close(session.conn, graceful=failure is None)
    latency = end - start
    if failure is None:
        assert session is not None
        summary = _SUMMARY if len(resolved.hosts) == 1 else f"{_SUMMARY} by {session.target}"
        return ProbeResult(True, None, latency, True, summary=summary, start=start, end=end)
    message = None
    if answered and failure.causes:
        message = failure.causes[0].partition(": ")[2] or failure.causes[0]
    return ProbeResult(
        False, failure, latency, answered, server_message=message, start=start, end=end
    )


class PostgresCheck:
    """The PostgreSQL readiness check, a :class:`smd.retry.Check`.

    ::

        check = PostgresCheck("postgresql://app:secret@db:5432/app")
        result = await wait_ready(check, deadline_seconds=30)   # smd.retry.wait_ready
        print(result.render_text())

    :meth:`wait_ready` is the same with this check's backoff.
    """

    def __init__(
        self,
        options: Options,
        *,
        backoff: Backoff | None = None,
        min_attempt_seconds: float = 0.1,
    ) -> None:
        self.options = _options(options)
        self.backoff = backoff or Backoff()
        self.min_attempt_seconds = min_attempt_seconds

    @classmethod
    def from_target(cls, target: str) -> PostgresCheck:
        """The check ``smd check postgres DSN`` runs; ``ValueError`` for an invalid DSN."""
        check = cls(target)
        check.options.validate()
        return check

    @property
    def target(self) -> str:
        """``postgres://host:port/dbname`` (never the user or password)."""
        return self.options.target_key()

    async def probe(self, attempt_seconds: float) -> ProbeResult:
        """One attempt (see :func:`probe`)."""
        return await probe(self.options, attempt_seconds=attempt_seconds)

    async def wait_ready(self, *, deadline_seconds: float, **kwargs: Any) -> CheckResult:
        """Wait until ready (:func:`smd.retry.wait_ready` with this check's backoff)."""
        kwargs.setdefault("backoff", self.backoff)
        kwargs.setdefault("min_attempt_seconds", self.min_attempt_seconds)
        return await wait_ready(self, deadline_seconds=deadline_seconds, **kwargs)

    def __repr__(self) -> str:
        return f"PostgresCheck({self.options.redacted()!r})"
