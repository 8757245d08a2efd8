"""The PostgreSQL check against real faults: a real cluster, a TCP fault proxy,
a standby with hot_standby=off, and a fake server for the rare SQLSTATEs.

Each fault asserts the failure kind, the SQLSTATE, the number of attempts and
that no password leaks. No assertion is about wall time: where the issue asks
for speed, the tests assert what the retry loop decided instead -- a
configuration fault is one attempt and no wait, a refusal ends its attempt
(not the timer), a blackhole gets budgets that fit the deadline and is cut by
its own attempt timeout, and a 57P03 standby is asked at ladder steps never
longer than the backoff cap until it is promoted.
"""

from __future__ import annotations

import errno
import json
import random
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pgbed.cluster import AppCredentials, PgCluster, StandbyFactory, free_port
from pgbed.fakepg import FakePgFactory, FakePostgres
from pgbed.proxy import FaultProxy
from waitbed import (
    ROUNDING,
    Recorder,
    assert_budgets_fit_the_deadline,
    assert_reported_at_once,
    wait,
)

from smd import Failure, FailureKind
from smd._exit import for_kind
from smd.checks._pg_classify import classify
from smd.checks.postgres import PostgresCheck, PostgresConfigError, PostgresOptions
from smd.clock import ManualClock
from smd.retry import Backoff, CheckResult, ProbeResult, retry_until_ready
from smd.retry import wait_ready as retry_wait_ready
from smd.timeouts import TimingHistory

SECRET = "s3cret-Pa55word!"


def _texts(result: CheckResult) -> list[str]:
    out = [result.render_text(), json.dumps(result.to_dict())]
    if result.failure is not None:
        out += [str(result.failure), repr(result.failure), *result.failure.causes]
        if result.failure.cause is not None:
            out.append(str(result.failure.cause))
    return out


def assert_no_secret(result: CheckResult, *secrets: str) -> None:
    for text in _texts(result):
        for secret in secrets:
            assert secret not in text, f"password leaked into: {text}"


def exit_code_for(result: CheckResult) -> int:
    """The exit code ``smd check postgres`` gives for this result (the one table)."""
    if result.ok:
        return 0
    assert result.failure is not None
    return for_kind(result.failure.kind)


async def check_command(dsn: str, timeout: float) -> CheckResult:  # noqa: ASYNC109
    """What ``smd check postgres DSN --timeout S`` runs: one bounded wait, through
    the registered check's factory, a single attempt allowed the whole timeout."""
    check = PostgresCheck.from_target(dsn)
    return await retry_wait_ready(check, deadline_seconds=timeout, attempt_seconds=timeout)


def assert_sqlstate(failure: Failure | None, sqlstate: str | None) -> None:
    """The SQLSTATE is the failure's generic code and in its details, or absent from both."""
    assert failure is not None
    assert failure.code == sqlstate
    assert failure.details.get("sqlstate") == sqlstate


def with_password(dsn: str, password: str) -> str:
    head, _, tail = dsn.partition("://")
    userinfo, _, hostpart = tail.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{head}://{user}:{password}@{hostpart}"


# --------------------------------------------------------------------------- imports


def test_importing_smd_phases_checks_does_not_load_asyncpg() -> None:
    code = (
        "import sys, smd, smd.phases, smd.checks, smd.checks.postgres, smd.phases.database; "
        "print('asyncpg' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- options


def test_target_key_and_redacted_never_hold_the_password() -> None:
    opts = PostgresOptions.from_dsn(
        f"postgresql://app:{SECRET}@db.example:6543/orders?sslmode=require"
    )
    assert opts.target_key() == "postgres://db.example:6543/orders"
    assert opts.redacted() == "postgres://app@db.example:6543/orders?sslmode=require"
    assert SECRET not in repr(opts)
    multi = PostgresOptions.from_dsn("postgresql://u@h1:5433,[::1]:5434/db")
    assert multi.target_key() == "postgres://h1:5433,[::1]:5434/db"
    parts = PostgresOptions(host="db", port=5440, user="u", password=SECRET, database="x")
    assert parts.target_key() == "postgres://db:5440/x"
    assert SECRET not in repr(parts)


@pytest.mark.parametrize(
    ("dsn", "fragment"),
    [
        (f"mysql://u:{SECRET}@h/db", "scheme"),
        (f"postgresql://u:{SECRET}@h:notaport/db", "port"),
        (f"postgresql://u:{SECRET}@h:99999/db", "port"),
        (f"host=h user=u password={SECRET}", "URI"),
        (f"postgresql://u:{SECRET}@h/db?sslmode=sometimes", "sslmode"),
        (f"postgresql://u:{SECRET}@h/db?target_session_attrs=whatever", "target_session_attrs"),
    ],
)
def test_invalid_options_say_what_is_wrong_without_the_password(dsn: str, fragment: str) -> None:
    with pytest.raises(PostgresConfigError) as info:
        PostgresOptions.from_dsn(dsn).validate()
    assert fragment in str(info.value)
    assert SECRET not in str(info.value)


async def test_invalid_dsn_is_one_configuration_attempt() -> None:
    result, rec, clock = await wait(f"postgresql://u:{SECRET}@h:notaport/db", deadline=5)
    assert not result.ok
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CONFIGURATION
    assert_reported_at_once(result, rec, clock)
    # Refused while reading the options: no connection was tried, nobody answered.
    assert rec.calls[0][3]["latency"] == 0
    assert rec.calls[0][3]["answered"] is False
    assert result.target == "postgres://invalid"
    assert_no_secret(result, SECRET)
    assert exit_code_for(result) == 78


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), FailureKind.TIMEOUT),
        (
            socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
            FailureKind.INFRASTRUCTURE,
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            FailureKind.CONFIGURATION,
        ),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), FailureKind.INFRASTRUCTURE),
        (ConnectionResetError(errno.ECONNRESET, "reset"), FailureKind.INFRASTRUCTURE),
        (OSError(errno.EHOSTUNREACH, "No route to host"), FailureKind.INFRASTRUCTURE),
        (OSError("Multiple exceptions: [Errno 111] a, [Errno 99] b"), FailureKind.INFRASTRUCTURE),
        (ssl.SSLCertVerificationError("certificate verify failed"), FailureKind.CONFIGURATION),
        (RuntimeError("boom"), FailureKind.UNKNOWN),
    ],
)
def test_os_level_errors_are_classified_most_specific_first(
    exc: BaseException, kind: FailureKind
) -> None:
    # TimeoutError, gaierror, SSLError and ConnectionError are all OSError:
    # each must get its own kind, not the generic OSError rule.
    assert classify(exc).kind is kind


def test_classify_scrubs_secrets_from_message_and_cause_chain() -> None:
    exc = ValueError(f"bad value in postgresql://u:{SECRET}@h/db")
    failure = classify(exc, secrets=[SECRET])
    assert failure.kind is FailureKind.CONFIGURATION
    for text in (failure.message, *failure.causes, str(failure.cause), repr(failure)):
        assert SECRET not in text
    assert failure.cause is not exc  # the original, with the secret, is not kept


# --------------------------------------------------------------------------- the loop, without sleeping


class WakeClock:
    """A :class:`smd.clock.Clock` reading a :class:`ManualClock` whose waits are
    scripted: ``sleep`` is the test's own (record the wait, wake late...)."""

    def __init__(self, clock: ManualClock, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._clock = clock
        self._sleep = sleep

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def wall(self) -> float:
        return self._clock.wall()

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds)


def _scripted(clock: ManualClock, script: list[tuple[FailureKind | None, float, bool]]) -> Any:
    """A probe that replays (kind or None for success, seconds taken, answered)."""
    timeouts: list[float] = []

    async def probe(seconds: float) -> ProbeResult:
        timeout = seconds
        timeouts.append(timeout)
        kind, took, answered = script[min(len(timeouts), len(script)) - 1]
        took = min(took, timeout)
        if kind is not FailureKind.TIMEOUT and took >= timeout:
            kind = FailureKind.TIMEOUT
        clock.advance(took)
        if kind is None:
            return ProbeResult(True, None, took, True)
        return ProbeResult(False, Failure(kind, f"{kind} failure"), took, answered)

    probe.timeouts = timeouts  # type: ignore[attr-defined]
    return probe


async def test_loop_never_overruns_the_deadline_and_the_last_attempt_gets_what_is_left() -> None:
    clock = ManualClock()
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)
        clock.advance(s)

    probe = _scripted(clock, [(FailureKind.TIMEOUT, 100.0, False)])
    result = await retry_until_ready(
        probe,
        target="t",
        deadline_seconds=10.0,
        attempt_seconds=3.0,
        clock=WakeClock(clock, sleep),
        rng=random.Random(1),
        min_attempt_seconds=0.1,
    )
    assert not result.ok
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TIMEOUT
    assert result.elapsed <= 10.0 + 1e-9
    assert result.failure.deadline_reached  # a censored wait, not a plain failure
    timeouts: list[float] = probe.timeouts
    # Full attempts while a full retry still fits after them; then, rather
    # than abandoning the attempt for a retry with less than 3 s, the last
    # one gets all that is left (a handshake in progress is not restarted).
    assert timeouts[:2] == [3.0, 3.0]
    assert len(timeouts) == 3
    assert 3.0 < timeouts[-1] <= 10.0 - 6.0
    assert sum(timeouts) + sum(sleeps) == pytest.approx(10.0)  # to the deadline, not past it
    assert result.attempts == len(timeouts) == result.failure.attempts


async def test_a_cut_short_last_attempt_does_not_hide_the_real_failure() -> None:
    """Every full attempt saw 57P03-like infrastructure; the last one, squeezed
    by the deadline, timed out. The report keeps the telling kind."""
    clock = ManualClock()

    async def oversleep(s: float) -> None:
        clock.advance(s * 3)  # a busy machine wakes us late

    # Each attempt takes 0.9 s and fails with infrastructure unless cut short.
    probe = _scripted(clock, [(FailureKind.INFRASTRUCTURE, 0.9, True)])
    result = await retry_until_ready(
        probe,
        target="t",
        deadline_seconds=2.5,
        attempt_seconds=1.0,
        clock=WakeClock(clock, oversleep),
        rng=random.Random(3),
        min_attempt_seconds=0.1,
    )
    timeouts: list[float] = probe.timeouts
    assert timeouts[-1] < 0.9  # the last attempt was squeezed and timed out
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INFRASTRUCTURE
    assert result.elapsed <= 2.5 + 1e-9


async def test_no_attempt_starts_after_a_late_wake_up_leaves_too_little() -> None:
    clock = ManualClock()

    async def oversleep(s: float) -> None:
        clock.advance(5.0)  # woke far past the deadline

    probe = _scripted(clock, [(FailureKind.INFRASTRUCTURE, 0.01, True)])
    result = await retry_until_ready(
        probe,
        target="t",
        deadline_seconds=1.0,
        clock=WakeClock(clock, oversleep),
        min_attempt_seconds=0.1,
    )
    assert result.attempts == 1
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INFRASTRUCTURE


async def test_loop_stops_at_once_on_configuration_without_waiting() -> None:
    clock = ManualClock()
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    probe = _scripted(clock, [(FailureKind.CONFIGURATION, 0.01, True)])
    result = await retry_until_ready(
        probe, target="t", deadline_seconds=30.0, clock=WakeClock(clock, sleep)
    )
    assert result.attempts == 1
    assert sleeps == []
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CONFIGURATION
    assert not result.failure.deadline_reached  # it stopped long before the deadline


async def test_loop_retries_infrastructure_and_records_only_answered_latencies() -> None:
    clock = ManualClock()
    history = TimingHistory(clock=clock)
    delays: list[float] = []

    async def sleep(s: float) -> None:
        delays.append(s)
        clock.advance(s)

    script: list[tuple[FailureKind | None, float, bool]] = [
        (FailureKind.INFRASTRUCTURE, 0.001, False),  # refused: no answer
        (FailureKind.INFRASTRUCTURE, 0.002, True),  # 57P03: answered
        (FailureKind.INFRASTRUCTURE, 0.002, True),
        (None, 0.004, True),
    ]
    result = await retry_until_ready(
        _scripted(clock, script),
        target="t",
        deadline_seconds=5.0,
        history=history,
        clock=WakeClock(clock, sleep),
        rng=random.Random(7),
    )
    assert result.ok
    assert result.attempts == 4
    assert [s.seconds for s in history.attempts] == [0.002, 0.002, 0.004]
    backoff = Backoff()
    for n, d in enumerate(delays):
        full = min(backoff.cap, backoff.initial * backoff.multiplier**n)
        assert full / 2 <= d <= full
    assert result.time_to_ready == pytest.approx(sum(delays) + 0.009)


def test_backoff_grows_then_caps_and_is_jittered() -> None:
    backoff = Backoff(initial=0.05, multiplier=2.0, cap=0.5)
    rng = random.Random(3)
    late = [backoff.delay(20, rng) for _ in range(200)]
    assert all(0.25 <= d <= 0.5 for d in late)
    assert len({round(d, 6) for d in late}) > 150  # not a fixed interval
    assert backoff.delay(0, rng) <= 0.05


# --------------------------------------------------------------------------- real server: success


@pytest.mark.postgres
async def test_ready_database_is_accepting_after_one_attempt(
    pg_dsn: str, pg_app: AppCredentials
) -> None:
    result, rec, _ = await wait(pg_dsn, deadline=5)
    assert result.ok, result.render_text()
    assert result.attempts == 1
    assert result.failure is None
    assert result.time_to_ready is not None
    assert result.time_to_ready > 0
    assert result.status == "accepting"
    assert "accepting connections" in result.render_text()
    assert len(rec.history.attempts) == 1
    assert rec.calls[0][2] is True
    assert_no_secret(result, pg_app.password)
    assert exit_code_for(result) == 0


@pytest.mark.postgres
async def test_check_command_runs_one_bounded_wait(pg_dsn: str) -> None:
    ok = await check_command(pg_dsn, 5.0)
    assert ok.ok
    assert exit_code_for(ok) == 0
    bad = await check_command(with_password(pg_dsn, SECRET), 5.0)
    assert exit_code_for(bad) == 78
    assert "accepting" not in bad.render_text()
    assert_no_secret(bad, SECRET)


@pytest.mark.postgres
async def test_readiness_query_must_be_truthy(pg: PgCluster, pg_dsn: str) -> None:
    not_ready, _, _ = await wait(pg_dsn, deadline=0.6, readiness_query="SELECT false")
    assert not_ready.failure is not None
    assert not_ready.failure.kind is FailureKind.INFRASTRUCTURE
    assert not_ready.attempts >= 2  # retried: a migration job may still be running

    missing, _, _ = await wait(
        pg_dsn, deadline=0.6, readiness_query="SELECT 1 FROM smd_no_such_table"
    )
    assert missing.failure is not None
    assert missing.failure.kind is FailureKind.INFRASTRUCTURE
    assert_sqlstate(missing.failure, "42P01")

    broken, _, _ = await wait(pg_dsn, deadline=5, readiness_query="SELEC 1")
    assert broken.failure is not None
    assert broken.failure.kind is FailureKind.CONFIGURATION
    assert_sqlstate(broken.failure, "42601")
    assert broken.attempts == 1

    ok, _, _ = await wait(pg_dsn, deadline=5, readiness_query="SELECT 2 > 1")
    assert ok.ok


# --------------------------------------------------------------------------- real server: configuration


@pytest.mark.postgres
@pytest.mark.parametrize("case", ["wrong_password", "missing_database"])
async def test_configuration_faults_are_reported_at_once(
    pg: PgCluster, pg_app: AppCredentials, case: str
) -> None:
    if case == "wrong_password":
        dsn, sqlstate = pg.dsn(pg_app.user, SECRET, pg_app.database), "28P01"
    else:
        dsn, sqlstate = pg.dsn(pg_app.user, pg_app.password, "smd_no_such_db"), "3D000"
    result, rec, clock = await wait(dsn, deadline=10)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CONFIGURATION
    assert_sqlstate(result.failure, sqlstate)
    # The issue: configuration faults are reported at once -- the server's
    # answer ended the one attempt, and nothing was waited after it.
    assert_reported_at_once(result, rec, clock)
    assert rec.calls[0][3]["answered"] is True
    assert rec.calls[0][3]["code"] == sqlstate
    assert result.status == "rejecting"
    assert "accepting" not in result.render_text()
    assert len(rec.history.attempts) == 1  # the server answered: a latency sample
    assert_no_secret(result, SECRET, pg_app.password)


@pytest.mark.postgres
async def test_tls_required_but_not_offered(pg_dsn: str, pg_app: AppCredentials) -> None:
    result, rec, clock = await wait(pg_dsn, deadline=10, ssl="require")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CONFIGURATION
    assert "TLS" in result.failure.message
    assert_reported_at_once(result, rec, clock)
    assert_no_secret(result, pg_app.password)


# --------------------------------------------------------------------------- TLS files

# The passphrase of the encrypted client key, and a wrong one: neither may be echoed.
TLS_KEY_PASSPHRASE = "k3y-Passphrase!"
WRONG_PASSPHRASE = "wr0ng-Passphrase!"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Client TLS files: a certificate and its key, another key, an encrypted key,
    a file that is not PEM, a directory and a path that does not exist."""
    from checkbed import make_cert

    base = tmp_path_factory.mktemp("tls")
    cert, key = make_cert(base / "client")
    _, other_key = make_cert(base / "other")
    junk = base / "junk.pem"
    junk.write_text("not a certificate\n")
    encrypted = base / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-aes256", "-out", str(encrypted),
         "-passout", f"pass:{TLS_KEY_PASSPHRASE}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return {
        "cert": str(cert),
        "key": str(key),
        "other_key": str(other_key),
        "encrypted": str(encrypted),
        "junk": str(junk),
        "dir": str(base),
        "missing": str(base / "missing.pem"),
    }


def with_query(dsn: str, query: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


# (the DSN's TLS parameters, the parameter and the file the failure must name)
_BAD_TLS_FILES = {
    "sslcert-missing": ("sslcert={missing}", "sslcert", "missing"),
    "sslcert-a-directory": ("sslcert={dir}", "sslcert", "dir"),
    "sslkey-missing": ("sslcert={cert}&sslkey={missing}", "sslkey", "missing"),
    "sslrootcert-missing": ("sslmode=require&sslrootcert={missing}", "sslrootcert", "missing"),
    "sslrootcert-missing-verify-full": (
        "sslmode=verify-full&sslrootcert={missing}",
        "sslrootcert",
        "missing",
    ),
    "sslcrl-missing": ("sslmode=require&sslcrl={missing}", "sslcrl", "missing"),
    "sslcert-not-a-certificate": ("sslcert={junk}&sslkey={key}", "sslcert", "junk"),
    "sslkey-not-a-key": ("sslcert={cert}&sslkey={junk}", "sslkey", "junk"),
    "sslkey-of-another-certificate": ("sslcert={cert}&sslkey={other_key}", "sslkey", "other_key"),
    "sslkey-wrong-sslpassword": (
        f"sslcert={{cert}}&sslkey={{encrypted}}&sslpassword={WRONG_PASSPHRASE}",
        "sslkey",
        "encrypted",
    ),
    "sslkey-encrypted-no-sslpassword": ("sslcert={cert}&sslkey={encrypted}", "sslkey", "encrypted"),
    "sslrootcert-not-a-certificate": ("sslmode=require&sslrootcert={junk}", "sslrootcert", "junk"),
    "sslcrl-not-a-crl": ("sslmode=require&sslcrl={junk}", "sslcrl", "junk"),
}


def assert_names_the_file(result: CheckResult, param: str, path: str) -> None:
    """A TLS file that cannot be used is configuration: one attempt, exit 78, and
    one line of the message names the parameter and the file."""
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CONFIGURATION, result.failure.message
    assert exit_code_for(result) == 78
    assert any(param in line and path in line for line in result.failure.message.splitlines()), (
        result.failure.message
    )


@pytest.mark.postgres
@pytest.mark.parametrize("case", list(_BAD_TLS_FILES), ids=list(_BAD_TLS_FILES))
async def test_an_unusable_tls_file_is_configuration_naming_the_file(
    pg_dsn: str, pg_app: AppCredentials, tls_files: dict[str, str], case: str
) -> None:
    query, param, which = _BAD_TLS_FILES[case]
    result, rec, clock = await wait(with_query(pg_dsn, query.format(**tls_files)), deadline=10)
    assert_names_the_file(result, param, tls_files[which])
    assert_reported_at_once(result, rec, clock)
    assert_no_secret(result, pg_app.password, WRONG_PASSPHRASE)


@pytest.mark.postgres
@pytest.mark.parametrize("variable", ["PGSSLCERT", "PGSSLROOTCERT"])
async def test_an_unusable_tls_file_from_libpq_variables_is_configuration(
    pg_dsn: str, tls_files: dict[str, str], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, tls_files["missing"])
    dsn = with_query(pg_dsn, "sslmode=require") if variable == "PGSSLROOTCERT" else pg_dsn
    result, rec, clock = await wait(dsn, deadline=10)
    assert_names_the_file(result, variable, tls_files["missing"])
    assert_reported_at_once(result, rec, clock)


@pytest.mark.postgres
async def test_verify_full_without_a_root_certificate_names_the_default_file(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sibling asyncpg itself reports: no sslrootcert, no ~/.postgresql/root.crt."""
    monkeypatch.setenv("HOME", str(tmp_path))
    result, rec, clock = await wait(with_query(pg_dsn, "sslmode=verify-full"), deadline=10)
    assert_names_the_file(result, "root certificate", str(tmp_path / ".postgresql" / "root.crt"))
    assert_reported_at_once(result, rec, clock)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query",
    [
        "sslcert={cert}&sslkey={key}",
        f"sslcert={{cert}}&sslkey={{encrypted}}&sslpassword={TLS_KEY_PASSPHRASE}",
        # asyncpg reads sslrootcert and sslcrl only from sslmode=require on:
        "sslmode=prefer&sslrootcert={missing}&sslcrl={missing}",
    ],
    ids=["key", "encrypted-key", "unused-root-and-crl"],
)
async def test_usable_tls_files_are_not_refused(
    pg_dsn: str, tls_files: dict[str, str], query: str
) -> None:
    """The test cluster has ssl off: sslmode=prefer falls back to plain TCP, once
    asyncpg has loaded the client's files."""
    result, _, _ = await wait(with_query(pg_dsn, query.format(**tls_files)), deadline=10)
    assert result.ok, result.render_text()


@pytest.mark.postgres
@pytest.mark.parametrize("ssl", [False, "context"], ids=["ssl-false", "an-sslcontext"])
async def test_tls_files_asyncpg_will_not_load_are_not_checked(
    pg_dsn: str, tls_files: dict[str, str], ssl: object
) -> None:
    """``connect_kwargs`` reach asyncpg last: with its ``ssl`` off, or a context of
    the caller's making, asyncpg loads no file, so a missing one is no failure."""
    import ssl as ssl_module

    given = ssl_module.create_default_context() if ssl == "context" else ssl
    if isinstance(given, ssl_module.SSLContext):
        given.check_hostname = False
        given.verify_mode = ssl_module.CERT_NONE
    missing = tls_files["missing"]
    options = PostgresOptions.from_dsn(
        with_query(pg_dsn, f"sslmode=require&sslcert={missing}&sslrootcert={missing}"),
        connect_kwargs={"ssl": given},
    )
    result, _, _ = await wait(options, deadline=10)
    if ssl is False:
        assert result.ok, result.render_text()
    else:  # the test cluster has TLS off: the context is used, and the server refuses it
        assert result.failure is not None
        assert missing not in result.failure.message, result.failure.message


@pytest.mark.postgres
def test_smd_check_postgres_with_a_missing_sslcert_exits_78_at_once(
    pg_dsn: str, pg_app: AppCredentials, tls_files: dict[str, str]
) -> None:
    missing = tls_files["missing"]
    out = subprocess.run(
        [sys.executable, "-m", "smd", "check", "postgres", with_query(pg_dsn, f"sslcert={missing}"),
         "--timeout", "5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 78, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert any("sslcert" in line and missing in line for line in text.splitlines()), text
    assert "infrastructure" not in text
    assert "(1 attempt in " in text  # not retried for the whole timeout
    assert pg_app.password not in text


@pytest.mark.postgres
async def test_unknown_host_name_is_configuration() -> None:
    result, rec, clock = await wait(
        f"postgresql://u:{SECRET}@smd-no-such-host.invalid:5432/db", deadline=10
    )
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CONFIGURATION
    assert "unknown host" in result.failure.message
    assert_reported_at_once(result, rec, clock)
    assert_no_secret(result, SECRET)


# --------------------------------------------------------------------------- real server: infrastructure


@pytest.mark.postgres
async def test_closed_port_is_refused_retried_and_reported_fast() -> None:
    dsn = f"postgresql://u:{SECRET}@127.0.0.1:{free_port()}/db"
    result, rec, clock = await wait(dsn, deadline=1.0)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INFRASTRUCTURE
    assert "refused" in result.failure.message
    assert result.failure.deadline_reached  # retried until the deadline ended the wait
    assert result.attempts >= 3
    assert result.failure.attempts == result.attempts == len(rec.calls)
    # The issue: refused is reported at once -- the refusal, not the attempt
    # timer, ended every attempt, each of which was allowed all that was left.
    for _, _, ok, detail in rec.calls:
        assert not ok
        assert detail["kind"] == "infrastructure"
        assert "refused" in detail["message"]
        assert detail["answered"] is False
    # Not past the deadline: every budget and wait fits in the 1 s.
    assert_budgets_fit_the_deadline(rec, clock, 1.0)
    assert rec.history.attempts == ()  # nobody answered: nothing to learn
    assert_no_secret(result, SECRET)
    assert exit_code_for(result) == 75


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("mode", "kwargs", "words"),
    [
        ("refuse", {}, "refused"),
        ("reset", {}, "reset"),
        ("close_after", {"n_bytes": 8}, "connection lost"),
        ("close_after", {"n_bytes": 200}, "connection lost"),
    ],
)
async def test_proxy_faults_are_infrastructure_and_retried(
    fault_proxy: FaultProxy, pg_dsn: str, mode: str, kwargs: dict[str, Any], words: str
) -> None:
    fault_proxy.set_mode(mode, **kwargs)
    result, rec, _ = await wait(fault_proxy.dsn(pg_dsn), deadline=0.6)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INFRASTRUCTURE, result.render_text()
    assert words in result.failure.message
    assert_sqlstate(result.failure, None)
    assert result.attempts >= 2
    assert all(not ok for _, _, ok, _ in rec.calls)


@pytest.mark.postgres
async def test_refused_then_forwarding_becomes_ready(fault_proxy: FaultProxy, pg_dsn: str) -> None:
    """Refused for as long as the proxy refuses (three attempts here), ready at
    the first attempt after it forwards: not before, and not a retry later."""
    fault_proxy.set_mode("refuse")

    def forward_after_three_refusals(rec: Recorder) -> None:
        if len(rec.calls) == 3:
            fault_proxy.set_mode("forward")  # returns once the proxy listens again

    result, rec, clock = await wait(
        fault_proxy.dsn(pg_dsn), deadline=5, on_attempt=forward_after_three_refusals
    )
    assert result.ok, result.render_text()
    assert [ok for _, _, ok, _ in rec.calls] == [False, False, False, True]
    assert result.attempts == 4
    for _, _, _, detail in rec.calls[:3]:
        assert detail["kind"] == "infrastructure"
        assert "refused" in detail["message"]
    assert len(clock.waits) == 3  # one wait after each refusal, none after success
    assert result.time_to_ready is not None


@pytest.mark.postgres
async def test_blackhole_is_cut_off_at_the_deadline(fault_proxy: FaultProxy, pg_dsn: str) -> None:
    fault_proxy.set_mode("blackhole")
    deadline = 1.3
    result, rec, clock = await wait(fault_proxy.dsn(pg_dsn), deadline=deadline, attempt=0.5)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TIMEOUT
    assert result.failure.deadline_reached
    assert result.status == "no response"
    assert "(deadline 1.3s)" in result.failure.message
    timeouts = [d["timeout"] for _, _, _, d in rec.calls]
    # 0.5 s, then all that was left (~0.8 s): a retry after a second 0.5 s
    # attempt would have had less than a full attempt.
    assert timeouts[0] == 0.5
    assert result.attempts == len(timeouts) == 2
    assert timeouts[1] > 0.5
    # Cut off at the deadline: the second attempt's budget is exactly what
    # the loop's clock said was left of the 1.3 s when it started -- no
    # more (it cannot run past the deadline), no less (no time given away).
    assert clock.started is not None
    second_start = rec.calls[1][0]
    assert timeouts[1] >= clock.started + deadline - second_start - ROUNDING
    assert_budgets_fit_the_deadline(rec, clock, deadline)
    # Each attempt was ended by its own budget, and no wait came after the last.
    assert len(clock.waits) == 1
    messages = [d["message"] for _, _, _, d in rec.calls]
    assert messages[0].startswith("no answer within the attempt timeout of 0.5s")
    assert messages[1].startswith("no answer within the attempt timeout of ")
    assert all(d["kind"] == "timeout" for _, _, _, d in rec.calls)
    assert rec.history.attempts == ()


@pytest.mark.postgres
async def test_latency_below_the_deadline_is_ready_and_measured(
    fault_proxy: FaultProxy, pg_dsn: str
) -> None:
    delayed: list[float] = []  # when the proxy delayed the dial or a chunk (monotonic)

    def latency() -> float:
        delayed.append(time.monotonic())  # the event loops' clock, on the proxy's thread
        return 0.05

    fault_proxy.set_mode("forward", latency=latency)
    result, rec, _ = await wait(fault_proxy.dsn(pg_dsn), deadline=5)
    assert result.ok
    assert result.attempts == 1
    probe = result.last_probe
    assert probe is not None
    # The latency is the probe's whole span, and that span holds the delayed
    # dial and at least two delayed round-trip chunks (the close comes after it).
    assert probe.latency == probe.end - probe.start
    assert probe.start <= delayed[0]
    assert sum(probe.start <= t <= probe.end for t in delayed) >= 3
    assert rec.history.attempts[0].seconds == pytest.approx(probe.latency)
    assert rec.calls[0][3]["latency"] == round(probe.latency, 6)


@pytest.mark.postgres
async def test_too_many_connections_is_retried_infrastructure(pg_limited_dsn: str) -> None:
    result, rec, _ = await wait(pg_limited_dsn, deadline=0.6)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INFRASTRUCTURE
    assert_sqlstate(result.failure, "53300")
    # A lasting storm of 53300 is a wait the deadline ended: a censored
    # sample, however early in its deadline the last answer came.
    assert result.failure.deadline_reached
    assert result.attempts >= 2
    assert len(rec.history.attempts) == result.attempts  # every 53300 was an answer
    assert result.last_probe is not None
    assert result.last_probe.server_message
    assert "too many connections" in result.last_probe.server_message


@pytest.mark.postgres
@pytest.mark.slow
async def test_standby_57p03_lasts_until_promoted_then_ready_within_capped_waits(
    standby: StandbyFactory,
) -> None:
    """A standby with hot_standby=off answers 57P03 for as long as it is one.
    The loop keeps asking, its waits climbing the ladder to the cap (0.5 s) and
    never beyond it, so the promotion is noticed at the next capped ask; the
    first ready answer comes only after the promotion was started."""
    sb = standby(hot_standby=False)
    lasting, rec, _ = await wait(sb.dsn(), deadline=0.8)
    assert lasting.failure is not None
    assert lasting.failure.kind is FailureKind.INFRASTRUCTURE
    assert_sqlstate(lasting.failure, "57P03")
    assert "hot standby" in lasting.failure.message
    assert lasting.attempts >= 2
    assert len(rec.history.attempts) == lasting.attempts
    assert all(d["code"] == "57P03" and d["answered"] for _, _, _, d in rec.calls)

    # Promote once the loop has waited at the cap: every answered 57P03 climbs
    # one step, so the wait after attempt n + 1 is at step n.
    backoff = Backoff()
    first_capped = next(n for n in range(64) if backoff.ceiling(n) >= backoff.cap)
    promote_at = first_capped + 2  # attempts: the one after the first capped wait

    def promote_when_at_the_cap(rec: Recorder) -> None:
        if len(rec.calls) == promote_at:
            sb.promote_after(0.0)  # pg_ctl promote on a timer thread: the loop goes on

    ready, rec, clock = await wait(sb.dsn(), deadline=10, on_attempt=promote_when_at_the_cap)
    assert ready.ok, ready.render_text()
    # The sequence: 57P03 answered while it is a standby (and while the
    # promotion finishes), then ready -- never before the promotion started.
    outcomes = [(ok, d.get("code")) for _, _, ok, d in rec.calls]
    assert outcomes[-1] == (True, None)
    assert all(out == (False, "57P03") for out in outcomes[:-1]), outcomes
    assert ready.attempts == len(outcomes) > promote_at
    assert all(d["answered"] for _, _, _, d in rec.calls)
    # Each wait is its ladder step's (equal jitter: half to all of the step's
    # ceiling), the ceilings climbing to the cap and staying there.
    assert len(clock.waits) == ready.attempts - 1
    for n, pause in enumerate(clock.waits):
        ceiling = backoff.ceiling(n)
        assert max(backoff.floor, ceiling / 2) <= pause <= ceiling, (n, pause)
    assert max(clock.waits) <= backoff.cap
    assert backoff.ceiling(len(clock.waits) - 1) == backoff.cap  # it did wait at the cap


# --------------------------------------------------------------------------- fake server


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sqlstate", "message", "kind", "retried"),
    [
        (
            "57P01",
            "terminating connection due to administrator command",
            FailureKind.INFRASTRUCTURE,
            True,
        ),
        (
            "57P02",
            "terminating connection because of crash of another server process",
            FailureKind.INFRASTRUCTURE,
            True,
        ),
        ("57P03", "the database system is starting up", FailureKind.INFRASTRUCTURE, True),
        ("08P01", "invalid startup packet layout", FailureKind.CONFIGURATION, False),
        ("28000", "no pg_hba.conf entry for host", FailureKind.CONFIGURATION, False),
        ("57P04", "database dropped", FailureKind.CONFIGURATION, False),
        ("XX000", "internal error", FailureKind.UNKNOWN, False),
    ],
)
async def test_fake_server_sqlstates(
    fake_pg: FakePgFactory, sqlstate: str, message: str, kind: FailureKind, retried: bool
) -> None:
    server = fake_pg(sqlstate, message)
    result, rec, clock = await wait(server.dsn(password=SECRET), deadline=0.6)
    assert result.failure is not None
    assert result.failure.kind is kind
    assert_sqlstate(result.failure, sqlstate)
    assert message in result.failure.message
    if retried:
        assert result.attempts >= 2
        assert result.failure.deadline_reached
    else:
        assert_reported_at_once(result, rec, clock)
    assert len(rec.history.attempts) == result.attempts
    assert_no_secret(result, SECRET)


@pytest.mark.postgres
@pytest.mark.parametrize("sslmode", [None, "disable"])
async def test_non_postgresql_server_is_configuration(sslmode: str | None) -> None:
    with FakePostgres.garbage() as server:
        result, rec, clock = await wait(server.dsn(password=SECRET), deadline=5, ssl=sslmode)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CONFIGURATION, result.render_text()
    assert "not a PostgreSQL server" in result.failure.message
    assert_reported_at_once(result, rec, clock)
    assert_no_secret(result, SECRET)


@pytest.mark.postgres
async def test_fake_xx000_maps_to_exit_69(fake_pg: FakePgFactory) -> None:
    server = fake_pg("XX000", "internal error")
    result = await check_command(server.dsn(), 2.0)
    assert exit_code_for(result) == 69


@pytest.mark.postgres
async def test_server_settings_and_target_session_attrs(pg_dsn: str) -> None:
    tagged, _, _ = await wait(
        pg_dsn,
        deadline=5,
        server_settings={"application_name": "smd-check"},
        readiness_query="SELECT current_setting('application_name') = 'smd-check'",
        target_session_attrs="read-write",
    )
    assert tagged.ok, tagged.render_text()

    unknown, _, _ = await wait(pg_dsn, deadline=5, server_settings={"smd_no_such_guc": "1"})
    assert unknown.failure is not None
    assert unknown.failure.kind is FailureKind.CONFIGURATION
    assert unknown.attempts == 1

    # Asking for a standby from a primary: a failover could change that, so
    # it is retried as infrastructure until the deadline.
    standby_wanted, _, _ = await wait(pg_dsn, deadline=0.5, target_session_attrs="standby")
    assert standby_wanted.failure is not None
    assert standby_wanted.failure.kind is FailureKind.INFRASTRUCTURE
    assert standby_wanted.attempts >= 2
