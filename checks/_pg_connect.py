"""Open one session to the first usable host of a list, as libpq does, but bounded per host.

asyncpg can take a list of hosts, but one ``timeout`` covers them all: a
silent (blackholed) first host spends the whole attempt and the second is
never tried. Here each host gets its own bound -- its fair share of what is
left of the attempt (``left / hosts left``), and at most ``connect_timeout``
-- so a silent host costs its share and the next one is still tried within
the same attempt. Hosts are tried in order; the next one is tried after
anything but an answer that waiting cannot change (libpq: an authentication
failure ends the list). ``target_session_attrs`` is checked here on each
session, with libpq's meanings (``prefer-standby`` falls back to the first
usable non-standby). Every failure names the host it came from.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from smd import Failure, FailureKind
from smd.checks._pg_classify import classify, server_answered
from smd.checks._pg_options import PostgresOptions, Resolved

if TYPE_CHECKING:
    import asyncpg

__all__ = ["HostOutcome", "Session", "close", "combine", "open_session"]

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
# Waiting longer than this for a polite close is pointless: readiness is known.
_CLOSE_TIMEOUT = 0.5


@dataclass(frozen=True, slots=True)
class HostOutcome:
    """How one host of the list answered (or did not)."""

    address: tuple[str, int]
    target: str
    failure: Failure
    answered: bool


@dataclass(slots=True)
class Session:
    """The session opened (``conn``; ``None`` when no host was usable) and what each host did."""

    conn: asyncpg.Connection | None
    target: str
    outcomes: list[HostOutcome]


async def close(conn: asyncpg.Connection, graceful: bool, *, shield: bool = False) -> None:
    """Close politely (bounded) when ``graceful``, else abort; never raises.

    ``shield``: the polite close runs even when the caller is being cancelled
    (a session that holds a lock or a store's connection must say goodbye).
    """
    try:
        if graceful:
            with anyio.CancelScope(shield=shield), anyio.move_on_after(_CLOSE_TIMEOUT):
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
    failure: Failure, options: PostgresOptions, address: tuple[str, int], seconds: float
) -> Failure:
    """Sharpen a "connection lost" or "rejected SSL upgrade" failure of one host.

    asyncpg cannot tell a PostgreSQL server that dropped the connection from
    a server that is not PostgreSQL at all (an HTTP server replies and
    closes). One bare SSLRequest tells them apart without guessing.
    """
    if address[0].startswith("/") or seconds <= 0:
        return failure
    answer = await _sniff(address, seconds)
    if not answer:
        return failure
    target = options.host_key(*address)
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


async def _role(conn: asyncpg.Connection) -> tuple[bool, bool]:
    """(in hot standby, read-only by default), as libpq decides ``target_session_attrs``."""
    settings = conn.get_settings()
    hot = getattr(settings, "in_hot_standby", None)
    standby = (
        hot == "on"
        if hot is not None
        else bool(await conn.fetchval("SELECT pg_catalog.pg_is_in_recovery()"))
    )
    read_only = standby or getattr(settings, "default_transaction_read_only", "off") == "on"
    return standby, read_only


def _matches(attrs: str, standby: bool, read_only: bool) -> bool:
    return {
        "any": True,
        "primary": not standby,
        "standby": standby,
        "prefer-standby": standby,
        "read-write": not read_only,
        "read-only": read_only,
    }[attrs]


async def open_session(
    options: PostgresOptions,
    resolved: Resolved,
    *,
    seconds: float,
    secrets: tuple[str, ...],
) -> Session:
    """Connect to the first usable host within ``seconds`` (``SELECT 1`` answered)."""
    import asyncpg

    hosts = resolved.hosts
    deadline = anyio.current_time() + seconds
    outcomes: list[HostOutcome] = []
    fallback: Session | None = None
    for i, address in enumerate(hosts):
        left = deadline - anyio.current_time()
        if left <= 0:
            break
        bound = left / (len(hosts) - i)
        within = (
            f"its share of the attempt, {bound:.3g}s"
            if len(hosts) > 1
            else f"the attempt timeout of {bound:.3g}s"
        )
        if resolved.connect_timeout is not None and resolved.connect_timeout < bound:
            bound = resolved.connect_timeout
            within = f"connect_timeout={bound:.3g}s"
        target = options.host_key(*address)
        kwargs: dict[str, Any] = options.host_arguments(resolved, *address)
        conn: asyncpg.Connection | None = None
        failure: Failure | None = None
        answered = mismatch = False
        with anyio.move_on_after(bound) as scope:
            try:
                conn = await asyncpg.connect(**kwargs, timeout=bound)
                answered = True
                standby, read_only = await _role(conn)
                await conn.fetchval("SELECT 1")
                if not _matches(resolved.target_session_attrs, standby, read_only):
                    mismatch = True
                    what = "a standby" if standby else "a primary"
                    what += " (read-only)" if read_only and not standby else ""
                    failure = Failure(
                        FailureKind.INFRASTRUCTURE,
                        f"no server matches target_session_attrs="
                        f"{resolved.target_session_attrs} ({target}): it is {what}",
                    )
            except Exception as exc:
                failure = classify(exc, target=target, secrets=secrets)
                answered = answered or server_answered(exc)
                if conn is None and not answered and _is_lost(exc):
                    spare = bound - (anyio.current_time() - (deadline - left))
                    failure = await _diagnose(failure, options, address, spare)
        if scope.cancelled_caught:
            failure = Failure(FailureKind.TIMEOUT, f"no answer within {within} ({target})")
        if failure is None and conn is not None:
            return Session(conn, target, outcomes)
        assert failure is not None
        if conn is not None:
            keep = mismatch and not scope.cancelled_caught and fallback is None
            if keep and resolved.target_session_attrs == "prefer-standby":
                fallback = Session(conn, target, [])
            else:
                await close(conn, graceful=False)
        outcomes.append(HostOutcome(address, target, failure, answered))
        if answered and not failure.kind.may_heal and conn is None:
            break  # the server refused these credentials or this database: libpq stops
    if fallback is not None:
        fallback.outcomes = outcomes
        return fallback
    return Session(None, options.target_key(), outcomes)


def combine(outcomes: list[HostOutcome], target: str) -> tuple[Failure, bool]:
    """One failure for an attempt in which no host was usable, and whether any host answered.

    Its kind, code and cause are those of the most telling host (one that
    refused for good, else one that may heal); its message names every host.
    """
    if len(outcomes) == 1:
        return outcomes[0].failure, outcomes[0].answered

    def rank(o: HostOutcome) -> int:
        kind = o.failure.kind
        if o.answered and not kind.may_heal:
            return 0
        if kind is FailureKind.INFRASTRUCTURE:
            return 1
        return 2 if kind is FailureKind.TIMEOUT else 3

    primary = min(outcomes, key=rank)
    message = f"no host of {target} was usable: " + "; ".join(o.failure.message for o in outcomes)
    return replace(primary.failure, message=message), any(o.answered for o in outcomes)
