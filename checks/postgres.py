"""The PostgreSQL readiness check (asyncpg).

One *probe* opens a session, runs ``SELECT 1`` (and an optional readiness
query) and closes it, all bounded by one attempt timeout -- asyncpg's
``command_timeout`` does not cover connecting, so the whole probe runs under
an anyio deadline. :func:`wait_ready` repeats probes while the failure can
heal (infrastructure, timeout) and stops at once when it cannot
(configuration). Failures come back classified; this module never decides
policy.

asyncpg is imported only when a probe runs, so ``import checks.postgres``
costs nothing for a service that never talks to PostgreSQL.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import SecretStr

from checks._pg_classify import RedactedError, classify, server_answered
from checks._pg_options import PostgresConfigError, PostgresOptions
from checks._retry import (
    AttemptHook,
    AttemptRecorder,
    Backoff,
    CheckResult,
    ProbeResult,
    retry_until_ready,
)
from smd import Clock, Failure, FailureKind
from smd._redact import register_secret

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "Backoff",
    "CheckResult",
    "PostgresCheck",
    "PostgresConfigError",
    "PostgresOptions",
    "ProbeResult",
    "RedactedError",
    "check_command",
    "classify",
    "default_attempt_seconds",
    "exit_code_for",
    "probe",
    "wait_ready",
]

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
# Waiting longer than this for a polite close is pointless: readiness is known.
_CLOSE_TIMEOUT = 0.5
# SQLSTATEs of a readiness query that mean "the schema is not there yet":
# migrations have not run, which waiting (for the migration job) can cure.
_NOT_MIGRATED = frozenset({"42P01", "42703", "3F000", "42883"})

Options = PostgresOptions | str | SecretStr


def _options(value: Options) -> PostgresOptions:
    if isinstance(value, PostgresOptions):
        return value
    return PostgresOptions.from_dsn(value)


def default_attempt_seconds(deadline_seconds: float) -> float:
    """The per-attempt timeout when the timeout policy gives none.

    A quarter of the deadline, at least 2 s (a TLS + SCRAM handshake over a
    slow link), never more than the deadline: several attempts fit, so a
    server that was blackholed and comes back is still caught in time.
    """
    return min(deadline_seconds, max(2.0, deadline_seconds / 4))


async def _close(conn: asyncpg.Connection, graceful: bool) -> None:
    try:
        if graceful:
            with anyio.move_on_after(_CLOSE_TIMEOUT):
                await conn.close()
    except Exception:
        pass  # a failed polite close falls through to terminate
    finally:
        if not conn.is_closed():
            conn.terminate()


def _is_lost(exc: BaseException) -> bool:
    from asyncpg.exceptions import ConnectionDoesNotExistError

    if isinstance(exc, ConnectionDoesNotExistError):
        return True
    return type(exc) is ConnectionError  # asyncpg's "rejected SSL upgrade", "connection_lost()"


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
                sqlstate=exc.sqlstate,
                causes=failure.causes,
            )
        return Failure(
            failure.kind,
            f"readiness query failed: {failure.message}",
            cause=failure.cause,
            sqlstate=failure.sqlstate,
            causes=failure.causes,
        )
    if not value:
        return Failure(
            FailureKind.INFRASTRUCTURE,
            f"not ready ({target}): the readiness query returned {value!r}",
        )
    return None


async def _sniff(address: tuple[str, int], seconds: float) -> bytes | None:
    """Send a bare SSLRequest and return the first bytes of the answer.

    Every PostgreSQL server answers ``S`` or ``N`` (very old ones ``E``);
    anything else means the address is not PostgreSQL. ``None`` when nothing
    came back (closed, reset, refused, silent): no verdict.
    """
    with anyio.move_on_after(seconds):
        try:
            async with await anyio.connect_tcp(*address) as stream:
                await stream.send(_SSL_REQUEST)
                return await stream.receive(64)
        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    return None


async def _diagnose(
    failure: Failure, options: PostgresOptions, target: str, seconds: float
) -> Failure:
    """Sharpen a "connection lost" or "rejected SSL upgrade" failure.

    asyncpg cannot tell a PostgreSQL server that dropped the connection from
    a server that is not PostgreSQL at all (an HTTP server replies and
    closes). One bare SSLRequest tells them apart without guessing.
    """
    addresses = options.addresses()
    if len(addresses) != 1 or addresses[0][0].startswith("/") or seconds <= 0:
        return failure
    answer = await _sniff(addresses[0], seconds)
    if not answer:
        return failure
    if answer[:1] not in (b"S", b"N", b"E"):
        return replace(
            failure,
            kind=FailureKind.CONFIGURATION,
            message=f"not a PostgreSQL server ({target}): it answered the SSLRequest with "
            f"{answer[:16]!r}; check the host and port",
        )
    if answer[:1] == b"N" and failure.kind is FailureKind.CONFIGURATION:
        mode = options.sslmode() or "an SSL context"
        return replace(
            failure,
            message=f"TLS misconfiguration ({target}): the client requires TLS ({mode}) but "
            "the server does not offer it (ssl = off on the server?)",
        )
    return failure


async def probe(options: Options, *, attempt_seconds: float) -> ProbeResult:
    """One bounded attempt: connect, ``SELECT 1``, readiness query, close.

    Never raises for a connection problem: the result carries the classified
    failure. ``latency`` runs from the first byte sent to the last answer
    (the close is not counted).
    """
    options = _options(options)
    target = options.target_key()
    secrets = options.secrets()
    for secret in secrets:
        register_secret(secret)
    timeout = attempt_seconds
    start = anyio.current_time()
    try:
        kwargs = options.connect_arguments()
    except PostgresConfigError as exc:
        return ProbeResult(
            False, classify(exc, target=target, secrets=secrets), start=start, end=start
        )
    if not timeout > 0:
        late = Failure(FailureKind.TIMEOUT, f"no time left to try {target}")
        return ProbeResult(False, late, start=start, end=start)

    import asyncpg

    kwargs["timeout"] = timeout
    conn: asyncpg.Connection | None = None
    failure: Failure | None = None
    answered = False
    try:
        with anyio.move_on_after(timeout) as scope:
            try:
                conn = await asyncpg.connect(**kwargs)
                await conn.fetchval("SELECT 1")
                answered = True
                if options.readiness_query:
                    failure = await _readiness(conn, options, target)
            except Exception as exc:
                failure = classify(exc, target=target, secrets=secrets)
                answered = server_answered(exc)
                if conn is None and not answered and _is_lost(exc):
                    left = start + timeout - anyio.current_time()
                    failure = await _diagnose(failure, options, target, left)
        end = anyio.current_time()
        if scope.cancelled_caught:
            failure = Failure(
                FailureKind.TIMEOUT,
                f"no answer within the attempt timeout of {timeout:.3g}s ({target})",
            )
            answered = False
    finally:
        if conn is not None:
            await _close(conn, graceful=failure is None)
    latency = end - start
    if failure is None:
        return ProbeResult(True, None, latency, True, start=start, end=end)
    message = None
    if answered and failure.causes:
        message = failure.causes[0].partition(": ")[2] or failure.causes[0]
    return ProbeResult(
        False,
        failure,
        latency,
        answered,
        sqlstate=failure.sqlstate,
        server_message=message,
        start=start,
        end=end,
    )


async def wait_ready(
    options: Options,
    *,
    deadline_seconds: float,
    attempt_seconds: float | None = None,
    on_attempt: AttemptHook | None = None,
    history: AttemptRecorder | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    backoff: Backoff | None = None,
    min_attempt_seconds: float = 0.1,
) -> CheckResult:
    """Probe until PostgreSQL is ready or ``deadline_seconds`` have passed.

    Retries infrastructure and timeout failures with jittered exponential
    backoff (:class:`Backoff`); a configuration failure ends the wait after
    that one round trip. Each attempt's timeout is ``attempt_seconds``
    (default: :func:`default_attempt_seconds`), cut to the time left, and no
    attempt starts that could not finish before the deadline. The latency of
    every attempt the server answered goes to ``history.record_attempt``;
    ``on_attempt(start, end, ok, **detail)`` sees every attempt (use
    :meth:`smd.PhaseContext.record_attempt`). Time to ready is *not*
    recorded here: the sequencer does that for the phase.
    """
    opts = _options(options)
    if attempt_seconds is None:
        attempt_seconds = default_attempt_seconds(deadline_seconds) or deadline_seconds

    async def attempt(seconds: float) -> ProbeResult:
        return await probe(opts, attempt_seconds=seconds)

    return await retry_until_ready(
        attempt,
        target=opts.target_key(),
        deadline_seconds=deadline_seconds,
        attempt_seconds=attempt_seconds if attempt_seconds > 0 else None,
        backoff=backoff,
        min_attempt_seconds=min_attempt_seconds,
        on_attempt=on_attempt,
        history=history,
        now=clock.monotonic if clock is not None else None,
        rng=rng,
        sleep=sleep,
    )


async def check_command(dsn: str | SecretStr, timeout: float) -> CheckResult:  # noqa: ASYNC109
    """What ``smd check postgres DSN --timeout S`` runs: one bounded wait.

    Retries while the failure can heal, for at most ``timeout`` seconds; a
    single attempt may use the whole timeout.
    """
    return await wait_ready(
        PostgresOptions.from_dsn(dsn), deadline_seconds=timeout, attempt_seconds=timeout
    )


_EXIT_CODES = {
    FailureKind.INFRASTRUCTURE: 75,  # EX_TEMPFAIL
    FailureKind.TIMEOUT: 75,
    FailureKind.CONFIGURATION: 78,  # EX_CONFIG
    FailureKind.APPLICATION: 70,  # EX_SOFTWARE
    FailureKind.UNKNOWN: 69,  # EX_UNAVAILABLE
}


def exit_code_for(result: CheckResult) -> int:
    """sysexits code for a check: 0 ready, 75 infrastructure/timeout (try again
    later), 78 configuration, 69 unknown."""
    if result.ok:
        return 0
    assert result.failure is not None
    return _EXIT_CODES[result.failure.kind]


class PostgresCheck:
    """A reusable check bound to one set of options.

    ::

        check = PostgresCheck("postgresql://app:secret@db:5432/app")
        result = await check.wait_ready(deadline_seconds=30)
        print(result.render_text())
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

    @property
    def target(self) -> str:
        """``postgres://host:port/dbname``."""
        return self.options.target_key()

    async def probe(self, attempt_seconds: float) -> ProbeResult:
        """One attempt (see :func:`probe`)."""
        return await probe(self.options, attempt_seconds=attempt_seconds)

    async def wait_ready(self, *, deadline_seconds: float, **kwargs: Any) -> CheckResult:
        """Wait until ready (see :func:`wait_ready`)."""
        kwargs.setdefault("backoff", self.backoff)
        kwargs.setdefault("min_attempt_seconds", self.min_attempt_seconds)
        return await wait_ready(self.options, deadline_seconds=deadline_seconds, **kwargs)

    def __repr__(self) -> str:
        return f"PostgresCheck({self.options.redacted()!r})"
