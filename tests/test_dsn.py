"""DSNs as users write them: libpq's reading, any password, errors without secrets, real hosts.

- The parser reads what libpq reads: compared with libpq itself
  (``PQconninfoParse`` through psycopg) on a corpus and on generated URIs.
- A password holding any printable character, unencoded, in the userinfo or
  in ``?password=``, is read whole or refused as ambiguous; never is a piece
  of it taken for a host, a port, a database or a user.
- Errors name what is wrong without the userinfo or the query.
- libpq behaviour against the real cluster: ``connect_timeout`` (DSN and
  ``PGCONNECT_TIMEOUT``) bounds each host and is not sent to the server;
  ``host=`` / ``port=`` query parameters and IPv6 literals (a cluster on
  ``::1``); multi-host lists with a blackholed first host (the fault proxy);
  ``target_session_attrs``; the ``PG*`` variables.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pgbed.cluster import AppCredentials, PgBedError, PgCluster, free_port
from pgbed.fakepg import FakePgFactory
from pgbed.proxy import FaultProxy
from psycopg.conninfo import conninfo_to_dict
from waitbed import assert_budgets_fit_the_deadline, wait

from smd import FailureKind
from smd.checks._pg_dsn import LIBPQ_PARAMS, UNSUPPORTED_PARAMS, Dsn, parse_dsn
from smd.checks.postgres import PostgresConfigError, PostgresOptions
from smd.phases._settings import DatabaseSettings

ROOT = Path(__file__).resolve().parent.parent
RESERVED = "/&@:?#%+ '\"\\=,;[]{}<>|^`$!*()~"
MARKER = "Zq8x1Mk"  # a password piece that appears nowhere else


def _libpq(dsn: str) -> dict[str, str]:
    """What libpq reads from ``dsn`` (an empty port list normalised away)."""
    out = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    if not out.get("port", "x").strip(","):
        out.pop("port")
    return out


def _ours(dsn: Dsn) -> dict[str, str]:
    out = dict(dsn.params)
    for key, value in (("user", dsn.user), ("password", dsn.password), ("dbname", dsn.dbname)):
        if value is not None:
            out[key] = value
    if dsn.hosts is not None:
        out["host"] = ",".join(dsn.hosts)
    if dsn.ports is not None:
        out["port"] = ",".join(dsn.ports)
    return out


# --------------------------------------------------------------------------- libpq's reading

LIBPQ_CORPUS = [
    "postgresql://",
    "postgresql://localhost",
    "postgresql://localhost:5433",
    "postgresql://localhost/mydb",
    "postgresql://user@localhost",
    "postgresql://user:secret@localhost",
    "postgresql://other@localhost/otherdb?connect_timeout=10&application_name=myapp",
    "postgresql://host1:123,host2:456/somedb?target_session_attrs=any&application_name=myapp",
    "postgresql://[::1]:5433,h2/db",
    "postgresql:///db?host=::1&port=5433",
    "postgresql://u@h1,h2:5/db?port=1,2",
    "postgresql://u@h/db?host=a,b",
    "postgresql://u@%2Ftmp/db",
    "postgresql:///mydb?host=/var/run/postgresql",
    "postgresql://u:p%40ss%2Fw%3Ford@h/db",
    "postgresql://u:a#b@h/db",
    "postgresql://u:a?b@h/db",
    "postgresql://u@h/db?password=a+b",
    "postgresql://u@h/my@db",
    "postgresql://u@h/db?application_name=me@work",
    "postgresql://u@h:/db",
    "postgres://u@h/db?sslmode=require&sslrootcert=/etc/ca.pem",
    "postgresql://us%65r@h/d%62?options=-c%20search_path%3Dx",
]


@pytest.mark.parametrize("dsn", LIBPQ_CORPUS)
def test_reads_what_libpq_reads(dsn: str) -> None:
    assert _ours(parse_dsn(dsn)) == _libpq(dsn)


_HOSTS = st.sampled_from(["db", "db.example.com", "10.0.0.7", "[::1]", "[fe80::1]", "my_db-2", ""])
_PORTS = st.sampled_from(["", "5432", "6543", "1"])
_QUERY = st.dictionaries(
    st.sampled_from(["sslmode", "connect_timeout", "application_name", "target_session_attrs"]),
    st.text(string.ascii_letters + string.digits + "-_.@ /&=?", min_size=1, max_size=8),
    max_size=3,
)
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    user=_TEXT,
    password=st.none() | _TEXT,
    hosts=st.lists(st.tuples(_HOSTS, _PORTS), min_size=1, max_size=3),
    dbname=st.none() | _TEXT,
    query=_QUERY,
)
def test_encoded_uris_read_as_libpq_reads_them(
    user: str,
    password: str | None,
    hosts: list[tuple[str, str]],
    dbname: str | None,
    query: dict[str, str],
) -> None:
    """Whatever the values, percent-encoded as RFC 3986 says, both read the same."""
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    netloc = ",".join(h + (f":{p}" if p else "") for h, p in hosts)
    dsn = f"postgresql://{auth}@{netloc}"
    if dbname is not None:
        dsn += "/" + quote(dbname, safe="")
    if query:
        dsn += ("" if dbname is not None else "/") + "?"
        dsn += "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    assert _ours(parse_dsn(dsn)) == _libpq(dsn)


# --------------------------------------------------------------------------- unencoded passwords


def _pieces(dsn: Dsn) -> list[str]:
    """Every value a target, a log line or ``redacted()`` may show."""
    values = [dsn.user or "", dsn.dbname or "", *(dsn.hosts or ()), *(dsn.ports or ())]
    return values + [f"{k}={v}" for k, v in dsn.params.items()]


@pytest.mark.parametrize("char", list(RESERVED))
@pytest.mark.parametrize("where", ["userinfo", "query", "query-last"])
def test_each_reserved_character_stays_in_the_password(char: str, where: str) -> None:
    for password in (char, f"{MARKER}{char}", f"{char}{MARKER}", f"a{char}{MARKER}{char}b"):
        raw = password.replace("%", "%25")
        dsn = {
            "userinfo": f"postgresql://app:{raw}@db.example:6543/orders?sslmode=require",
            "query": f"postgresql://app@db.example:6543/orders?password={raw}&sslmode=require",
            "query-last": f"postgresql://app@db.example:6543/orders?sslmode=require&password={raw}",
        }[where]
        parsed = parse_dsn(dsn)
        # A DSN is stripped as a whole: a password it ends with loses its trailing spaces.
        expected = (password.rstrip() or None) if where == "query-last" else password
        assert parsed.password == expected, dsn
        assert parsed.hosts == ("db.example",)
        assert parsed.ports == ("6543",)
        assert parsed.dbname == "orders"
        assert dict(parsed.params) == {"sslmode": "require"}
        options = PostgresOptions.from_dsn(dsn)
        assert options.target_key() == "postgres://db.example:6543/orders"
        assert options.redacted() == "postgres://app@db.example:6543/orders?sslmode=require"


@pytest.mark.parametrize(
    ("dsn", "password", "target"),
    [
        # The cases: an unencoded '/', and '&' inside ?password=.
        ("postgresql://app:31337/abc@db:5432/app", "31337/abc", "postgres://db:5432/app"),
        ("postgresql://app@db:5432/app?password=a&b", "a&b", "postgres://db:5432/app"),
        (
            "postgresql://app@db/app?password=a&b=c&sslmode=disable",
            "a&b=c",
            "postgres://db:5432/app",
        ),
        ("postgresql://app:p@ss@db/app", "p@ss", "postgres://db:5432/app"),
        ("postgresql://app:ab@cd/ef@db/app", "ab@cd/ef", "postgres://db:5432/app"),
        ("postgresql://app@db/app?password=p@ss", "p@ss", "postgres://db:5432/app"),
        ("postgresql://db?password=p@ss", "p@ss", "postgres://db:5432/"),
        ("postgresql://app:a b'c\"d@db/app", "a b'c\"d", "postgres://db:5432/app"),
        ("postgresql://app:100%@db/app", "100%", "postgres://db:5432/app"),
        ("postgresql://myadmin@server:pw@db/app", "pw", "postgres://db:5432/app"),
    ],
)
def test_unencoded_passwords_are_read_whole(dsn: str, password: str, target: str) -> None:
    assert parse_dsn(dsn).password == password
    key = PostgresOptions.from_dsn(dsn, user="u").target_key()
    assert key == target or (target.endswith("/") and key == target + "u")


PRINTABLE = st.text(
    st.sampled_from(string.printable.replace("\n", "").replace("\r", "") + "éЖ中"), max_size=30
)


@settings(max_examples=500, deadline=None)
@given(before=PRINTABLE, after=PRINTABLE)
def test_no_reading_shows_a_piece_of_an_unencoded_password(before: str, after: str) -> None:
    """Read whole, or refused as ambiguous: never a guess that prints a piece of it."""
    password = f"{before}{MARKER}{after}"
    raw = re.sub(r"%(?=[0-9A-Fa-f]{2})", "%25", password)
    for dsn in (
        f"postgresql://app:{raw}@db:5432/app",
        f"postgresql://app@db:5432/app?password={raw}&sslmode=disable",
    ):
        try:
            parsed = parse_dsn(dsn)
        except PostgresConfigError as exc:
            error: PostgresConfigError | None = exc
        else:
            error = None
        if error is not None:
            assert error.part == "ambiguous", str(error)
            assert MARKER not in str(error)
            continue
        assert not any(MARKER in piece for piece in _pieces(parsed)), parsed
        if not any(f"&{k}=" in password for k in LIBPQ_PARAMS):
            assert parsed.password == password


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("dsn", "needles"),
    [
        (f"postgresql://u:{MARKER}@h:notaport/db", ("invalid port 'notaport'", "integer")),
        (f"postgresql://u:{MARKER}/x@h:notaport/db", ("invalid port", "host list")),
        (f"postgresql://u:{MARKER}@h:99999/db", ("invalid port",)),
        (f"postgresql://u:{MARKER}@db/app?application_name=me@work", ("ambiguous", "%40")),
        (
            f"postgresql://u:{MARKER}@db/app?keepalives=1",
            ("unsupported DSN parameter 'keepalives'",),
        ),
        (f"postgresql://u:{MARKER}@db/app?sslmode=sometimes", ("invalid sslmode",)),
        (
            f"postgresql://u:{MARKER}@db/app?connect_timeout=1.5",
            ("connect_timeout", "whole number"),
        ),
        (f"postgresql://u:{MARKER}@db/app?oops", ("query field has no '='",)),
        (f"postgresql://u:{MARKER}%00@db/app", ("%00",)),
        (f"mysql://u:{MARKER}@db/app", ("scheme", "'mysql'")),
        (f"host=db password={MARKER}", ("expected a URI like postgresql://",)),
        (f"postgresql://u@h1,h2/db?port=1,2,3&password={MARKER}", ("3 ports", "2 hosts")),
    ],
)
def test_errors_name_the_problem_never_the_userinfo_or_query(
    dsn: str, needles: tuple[str, ...]
) -> None:
    with pytest.raises(PostgresConfigError) as info:
        PostgresOptions.from_dsn(dsn).validate(environ={})
    text = str(info.value)
    for needle in needles:
        assert needle in text
    assert MARKER not in text
    assert PostgresOptions.from_dsn(dsn).target_key() == "postgres://invalid"
    assert MARKER not in repr(PostgresOptions.from_dsn(dsn))


def test_every_unsupported_libpq_parameter_is_named() -> None:
    for name in sorted(UNSUPPORTED_PARAMS):
        with pytest.raises(PostgresConfigError, match=f"unsupported DSN parameter '{name}'"):
            parse_dsn(f"postgresql://u@h/db?{name}=1")


# --------------------------------------------------------------------------- libpq semantics


@pytest.mark.parametrize(
    ("value", "seconds"), [("10", 10.0), ("1", 2.0), ("2", 2.0), ("0", None), ("-5", None)]
)
def test_connect_timeout_reads_as_libpq(value: str, seconds: float | None) -> None:
    dsn = PostgresOptions.from_dsn(f"postgresql://u@h/db?connect_timeout={value}")
    assert dsn.resolve(environ={}).connect_timeout == seconds
    env = PostgresOptions.from_dsn("postgresql://u@h/db")
    assert env.resolve(environ={"PGCONNECT_TIMEOUT": value}).connect_timeout == seconds
    # Never a server setting (sent as one, the server answers 42704).
    assert "connect_timeout" not in dsn.resolve(environ={}).server_settings
    assert "connect_timeout" not in dsn.connect_arguments().get("server_settings", {})


def test_precedence_explicit_then_dsn_then_environment_then_defaults() -> None:
    env = {
        "PGHOST": "envhost",
        "PGPORT": "6000",
        "PGUSER": "envuser",
        "PGPASSWORD": "envpass",
        "PGDATABASE": "envdb",
        "PGCONNECT_TIMEOUT": "7",
        "PGAPPNAME": "envapp",
    }
    only_env = PostgresOptions().resolve(environ=env)
    assert only_env.hosts == (("envhost", 6000),)
    assert (only_env.user, only_env.password, only_env.database) == ("envuser", "envpass", "envdb")
    assert only_env.connect_timeout == 7.0
    assert only_env.server_settings == {"application_name": "envapp"}
    dsn = PostgresOptions.from_dsn(
        "postgresql://dsnuser:dsnpass@dsnhost/dsndb?connect_timeout=3&application_name=dsnapp"
    ).resolve(environ=env)
    assert dsn.hosts == (("dsnhost", 6000),)  # the DSN names no port: PGPORT fills it
    assert (dsn.user, dsn.password, dsn.database) == ("dsnuser", "dsnpass", "dsndb")
    assert dsn.connect_timeout == 3.0
    assert dsn.server_settings == {"application_name": "dsnapp"}
    explicit = PostgresOptions.from_dsn(
        "postgresql://dsnuser@dsnhost:1/dsndb", host="a,b", port=7, user="x", database="y"
    ).resolve(environ=env)
    assert explicit.hosts == (("a", 7), ("b", 7))
    assert (explicit.user, explicit.database) == ("x", "y")
    defaults = PostgresOptions().resolve(environ={})
    assert defaults.hosts == (("localhost", 5432),)
    assert defaults.password is None
    assert defaults.database == defaults.user


def test_query_host_and_port_lists_pair_as_libpq() -> None:
    opts = PostgresOptions.from_dsn("postgresql://u@ignored:1/db?host=::1,h2,/tmp&port=5433")
    assert opts.addresses() == (("::1", 5433), ("h2", 5433), ("/tmp", 5433))
    assert opts.target_key() == "postgres://[::1]:5433,h2:5433,/tmp:5433/db"
    pairs = PostgresOptions.from_dsn("postgresql://u@/db?host=h1,h2&port=1,2")
    assert pairs.addresses() == (("h1", 1), ("h2", 2))
    inline = PostgresOptions.from_dsn("postgresql://u@[::1]:7,h2/db")
    assert inline.resolve(environ={}).hosts == (("::1", 7), ("h2", 5432))


def test_database_settings_fall_back_to_the_libpq_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SMD_DATABASE_URL", raising=False)
    assert DatabaseSettings().options() is None
    monkeypatch.setenv("PGHOST", "db.internal")
    monkeypatch.setenv("PGPORT", "6432")
    monkeypatch.setenv("PGDATABASE", "orders")
    options = DatabaseSettings().options()
    assert options is not None
    assert options.target_key() == "postgres://db.internal:6432/orders"
    url = DatabaseSettings(database_url="postgresql://u@other/app").options()
    assert url is not None
    assert url.target_key() == "postgres://other:6432/app"  # PGPORT fills the URL's gap


# --------------------------------------------------------------------------- the real cluster


def _cli(args: list[str], env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SMD_", "PG"))}
    full.update(SMD_HISTORY_PATH=str(tmp / "history.sqlite3"), SMD_LOG_FORMAT="json")
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "smd", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _creds(dsn: str) -> str:
    """``user:password@`` of a test-bed DSN (percent-encoded as the test bed writes it)."""
    return dsn.partition("://")[2].rpartition("@")[0] + "@"


@pytest.mark.postgres
async def test_connect_timeout_is_not_sent_to_the_server(
    pg_dsn: str, fake_pg: FakePgFactory
) -> None:
    result, _, _ = await wait(f"{pg_dsn}?connect_timeout=5&application_name=smd-t", deadline=5)
    assert result.ok, result.render_text()
    server = fake_pg("28P01", "password authentication failed")
    await wait(f"{server.dsn()}?connect_timeout=5&application_name=smd-t", deadline=1)
    assert server.startups, "the fake server saw no startup packet"
    assert server.startups[0].get("application_name") == "smd-t"
    assert "connect_timeout" not in server.startups[0]


@pytest.mark.postgres
def test_connect_timeout_from_dsn_and_environment_through_the_cli(
    pg_dsn: str, tmp_path: Path
) -> None:
    out = _cli(["check", "postgres", f"{pg_dsn}?connect_timeout=5"], {}, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    env = _cli(["check", "postgres", pg_dsn], {"PGCONNECT_TIMEOUT": "5"}, tmp_path)
    assert env.returncode == 0, env.stdout + env.stderr
    bad = _cli(["check", "postgres", pg_dsn], {"PGCONNECT_TIMEOUT": "soon"}, tmp_path)
    assert bad.returncode == 78, bad.stdout + bad.stderr
    assert "invalid PGCONNECT_TIMEOUT: expected a whole number of seconds" in bad.stderr


@pytest.mark.postgres
async def test_connect_timeout_bounds_each_attempt(fault_proxy: FaultProxy, pg_dsn: str) -> None:
    fault_proxy.set_mode("blackhole")
    result, rec, clock = await wait(
        f"{fault_proxy.dsn(pg_dsn)}?connect_timeout=2", deadline=5.5, attempt=5
    )
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TIMEOUT
    assert "no answer within" in result.failure.message
    # The loop allowed the first attempt all 5.5 s (a retry after 5 s would
    # have had less than a full attempt); libpq's connect_timeout cut it at 2 s.
    assert rec.calls[0][3]["timeout"] > 5  # more than attempt_seconds: all that was left
    assert len(rec.calls) >= 2  # cut short, so the deadline had room for a retry
    # Every attempt but the last (which the deadline may squeeze below 2 s)
    # was given more than 2 s and was ended by connect_timeout, not by its budget.
    for *_, detail in rec.calls[:-1]:
        assert detail["timeout"] > 2
        assert detail["kind"] == "timeout"
        assert detail["message"].startswith("no answer within connect_timeout=2s")
    assert_budgets_fit_the_deadline(rec, clock, 5.5)


@pytest.mark.postgres
async def test_a_silent_first_host_costs_its_share_then_the_next_answers(
    fault_proxy: FaultProxy, pg: PgCluster, pg_dsn: str, fake_pg: FakePgFactory
) -> None:
    fault_proxy.set_mode("blackhole")
    dsn = (
        f"postgresql://{_creds(pg_dsn)}{fault_proxy.host}:{fault_proxy.port},"
        f"{pg.host}:{pg.port}/{pg_dsn.rpartition('/')[2]}"
    )
    dialed = fault_proxy.accepted
    result, rec, _ = await wait(dsn, deadline=10, attempt=4)
    assert result.ok, result.render_text()
    assert result.attempts == 1  # within one attempt, not after the silent host ate it
    assert rec.calls[0][3]["timeout"] == 4
    assert fault_proxy.accepted == dialed + 1  # the silent host was tried first, once
    assert result.last_probe is not None
    assert result.last_probe.summary.endswith(f"by postgres://{pg.host}:{pg.port}/smd_app")
    assert result.target == (
        f"postgres://{fault_proxy.host}:{fault_proxy.port},{pg.host}:{pg.port}/smd_app"
    )
    # connect_timeout shortens the share, as libpq bounds each host.
    quick, _, _ = await wait(f"{dsn}?connect_timeout=2", deadline=10, attempt=8)
    assert quick.ok, quick.render_text()
    assert quick.attempts == 1
    assert fault_proxy.accepted == dialed + 2
    # The share each host got: with a second host that answers "no" (28P01),
    # the failure names what bounded the silent one -- 4 s / 2 hosts, or
    # connect_timeout when that is shorter.
    refusing = fake_pg("28P01", "password authentication failed")
    both = f"postgresql://u:pw@{fault_proxy.host}:{fault_proxy.port},{refusing.host}:{refusing.port}/db"
    shared, _, _ = await wait(both, deadline=10, attempt=4)
    assert shared.failure is not None
    assert shared.failure.kind is FailureKind.CONFIGURATION  # the second host answered
    assert shared.attempts == 1
    silent = f"postgres://{fault_proxy.host}:{fault_proxy.port}/db"
    assert f"no answer within its share of the attempt, 2s ({silent})" in shared.failure.message
    assert len(refusing.startups) == 1  # tried within the same attempt
    bounded, _, _ = await wait(f"{both}?connect_timeout=2", deadline=10, attempt=8)
    assert bounded.failure is not None
    assert f"no answer within connect_timeout=2s ({silent})" in bounded.failure.message


@pytest.mark.postgres
async def test_every_host_failing_names_each_host(fault_proxy: FaultProxy, pg_dsn: str) -> None:
    fault_proxy.set_mode("blackhole")
    dead = free_port()
    dsn = f"postgresql://{_creds(pg_dsn)}{fault_proxy.host}:{fault_proxy.port},127.0.0.1:{dead}/db"
    result, rec, _ = await wait(dsn, deadline=1.5, attempt=1)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INFRASTRUCTURE  # the refused one may heal
    assert f"postgres://{fault_proxy.host}:{fault_proxy.port}/db" in result.failure.message
    assert f"postgres://127.0.0.1:{dead}/db" in result.failure.message
    assert "no answer within" in result.failure.message
    assert "connection refused" in result.failure.message
    assert len(rec.calls) >= 2


@pytest.mark.postgres
async def test_a_host_that_refuses_the_credentials_ends_the_list(
    pg: PgCluster, pg_app: AppCredentials
) -> None:
    dead = free_port()
    dsn = f"postgresql://{pg_app.user}:wrong-{MARKER}@{pg.host}:{pg.port},127.0.0.1:{dead}/x"
    result, rec, clock = await wait(dsn, deadline=5)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CONFIGURATION
    assert result.failure.code == "28P01"
    assert f"postgres://{pg.host}:{pg.port}/x" in result.failure.message
    assert f":{dead}" not in result.failure.message  # libpq: not tried after 28P01
    assert MARKER not in result.render_text()
    # Reported at once: one answered attempt, no wait, not the deadline.
    assert result.attempts == len(rec.calls) == 1
    assert rec.calls[0][3]["answered"] is True
    assert clock.waits == []
    assert not result.failure.deadline_reached


@pytest.mark.postgres
async def test_target_session_attrs_across_hosts(
    fault_proxy: FaultProxy, pg: PgCluster, pg_dsn: str
) -> None:
    dsn = (
        f"postgresql://{_creds(pg_dsn)}{fault_proxy.host}:{fault_proxy.port},"
        f"{pg.host}:{pg.port}/smd_app"
    )
    standby, _, _ = await wait(f"{dsn}?target_session_attrs=standby", deadline=1.5)
    assert standby.failure is not None
    assert standby.failure.kind is FailureKind.INFRASTRUCTURE  # a failover may cure it
    assert standby.failure.message.count("it is a primary") == 2
    assert standby.attempts >= 2
    # prefer-standby falls back to the first host when none is a standby.
    fallback, _, _ = await wait(f"{dsn}?target_session_attrs=prefer-standby", deadline=5)
    assert fallback.ok, fallback.render_text()
    primary, _, _ = await wait(f"{dsn}?target_session_attrs=read-write", deadline=5)
    assert primary.ok, primary.render_text()
    assert primary.last_probe is not None
    assert f"by postgres://{fault_proxy.host}:{fault_proxy.port}/" in primary.last_probe.summary


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def pg6() -> Iterator[PgCluster]:
    """A cluster listening on ::1 (and 127.0.0.1, which the test bed's psql uses)."""
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    try:
        cluster = PgCluster.create(settings={"listen_addresses": "'127.0.0.1,::1'"})
    except PgBedError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cluster.ensure_app()
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.postgres
async def test_ipv6_hosts_in_the_query_and_in_brackets(pg6: PgCluster, tmp_path: Path) -> None:
    assert pg6.app is not None
    user, password = pg6.app.user, quote(pg6.app.password, safe="")
    creds, port = f"{user}:{password}@", pg6.port
    for dsn in (
        f"postgresql://{creds}/smd_app?host=::1&port={port}",
        f"postgresql://{creds}[::1]:{port}/smd_app",
        f"postgresql://{creds}/smd_app?host=%5B::1%5D&port={port}",
    ):
        result, _, _ = await wait(dsn, deadline=5)
        assert result.ok, result.render_text()
        assert result.target == f"postgres://[::1]:{port}/smd_app"
    # A refused IPv6 host first, then the IPv4 one.
    dead = free_port()
    listed = f"postgresql://{creds}/smd_app?host=::1,127.0.0.1&port={dead},{port}"
    result, _, _ = await wait(listed, deadline=5)
    assert result.ok, result.render_text()
    out = _cli(
        ["check", "postgres", f"postgresql://{creds}/smd_app?host=::1&port={port}"], {}, tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"postgres://[::1]:{port}/smd_app - accepting connections" in out.stdout


# --------------------------------------------------------------------------- PG* variables


def _pg_env(pg: PgCluster, app: AppCredentials, password: str | None = None) -> dict[str, str]:
    return {
        "PGHOST": pg.host,
        "PGPORT": str(pg.port),
        "PGUSER": app.user,
        "PGPASSWORD": app.password if password is None else password,
        "PGDATABASE": app.database,
    }


@pytest.mark.postgres
def test_libpq_variables_fill_what_the_dsn_leaves_out(
    pg: PgCluster, pg_app: AppCredentials, tmp_path: Path
) -> None:
    env = _pg_env(pg, pg_app)
    ok = _cli(["check", "postgres", "postgresql://"], env, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"postgres://{pg.host}:{pg.port}/{pg_app.database} - accepting" in ok.stdout
    # The DSN's own user wins over PGUSER.
    named = _cli(
        ["check", "postgres", f"postgresql://{pg_app.user}@"], {**env, "PGUSER": "nobody"}, tmp_path
    )
    assert named.returncode == 0, named.stdout + named.stderr
    wrong = _cli(
        ["check", "postgres", "postgresql://"], _pg_env(pg, pg_app, f"x{MARKER}"), tmp_path
    )
    assert wrong.returncode == 78, wrong.stdout + wrong.stderr
    assert "28P01" in wrong.stdout
    for out in (ok, named, wrong):
        assert pg_app.password not in out.stdout + out.stderr
        assert MARKER not in out.stdout + out.stderr


@pytest.mark.postgres
async def test_options_from_the_environment_reach_the_cluster(
    pg: PgCluster, pg_app: AppCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _pg_env(pg, pg_app).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SMD_DATABASE_URL", raising=False)
    options = DatabaseSettings().options()
    assert options is not None
    result, _, _ = await wait(options, deadline=5)
    assert result.ok, result.render_text()
    assert result.target == f"postgres://{pg.host}:{pg.port}/{pg_app.database}"


@pytest.mark.postgres
def test_database_phase_uses_the_libpq_variables_when_no_url_is_set(
    pg: PgCluster, pg_app: AppCredentials, tmp_path: Path
) -> None:
    out = _cli(["run", "tests/targets/sec_db.py:startup"], _pg_env(pg, pg_app), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert pg_app.password not in out.stdout + out.stderr


@pytest.mark.postgres
def test_unsupported_parameters_are_one_line_and_exit_78(pg_dsn: str, tmp_path: Path) -> None:
    check = _cli(["check", "postgres", f"{pg_dsn}?keepalives=1"], {}, tmp_path)
    assert check.returncode == 78
    assert check.stdout == ""
    assert check.stderr.strip().splitlines() == [
        "smd: invalid TARGET given to 'smd check postgres': unsupported DSN parameter "
        "'keepalives': smd connects with asyncpg, which cannot honour it; remove it from the DSN"
    ]
    url = _cli(
        ["plan", "tests/targets/sec_db.py:startup"],
        {"SMD_DATABASE_URL": f"{pg_dsn}?hostaddr=127.0.0.1"},
        tmp_path,
    )
    assert url.returncode == 78
    assert len(url.stderr.strip().splitlines()) == 1
    assert "SMD_DATABASE_URL" in url.stderr
    assert "unsupported DSN parameter 'hostaddr'" in url.stderr


@pytest.mark.postgres
def test_ambiguous_dsn_is_refused_before_anything_runs(tmp_path: Path) -> None:
    token = secrets.token_hex(6)
    dsn = f"postgresql://u:{token}@db/app?application_name=me@work"
    out = _cli(["check", "postgres", dsn], {}, tmp_path)
    assert out.returncode == 78
    assert "ambiguous DSN" in out.stderr
    assert token not in out.stdout + out.stderr
    assert not (tmp_path / "history.sqlite3").exists()
