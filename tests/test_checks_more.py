"""The TCP, HTTP and Redis checks, CheckPhase and a user-written check, against real servers.

Real parts only: Debian's ``redis-server`` (password auth, ACL users, TLS, a
replica without its master, a dataset loading slowly, a running Lua script,
``maxclients``), a threaded stdlib HTTP(S) server answering chosen statuses
with a self-signed certificate made by ``openssl``, a closed port, a listener
with a full accept queue (SYNs dropped), the TCP fault proxy (blackhole,
reset, refuse), a fake DNS server for the real CLI, and small scripted
servers for answers that real servers do not give on cue. Every
classification is asserted with its kind and code, exit codes go through the
real ``smd check`` command, and no password appears in any output.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from checkbed import (
    HttpBed,
    RedisServer,
    Scripted,
    SynBlackhole,
    held_connections,
    make_cert,
    redis_server_binary,
    resp,
)
from pgbed.cluster import free_port
from pgbed.dns import NXDOMAIN, SERVFAIL, DnsUnavailable, FakeDns, unshare_prefix
from pgbed.proxy import FaultProxy

from smd import (
    FailureKind,
    Outcome,
    PhaseContext,
    Report,
    Startup,
    StartupFailed,
    State,
    lifecycle,
    load_settings,
    run_startup,
)
from smd.checks.http import HttpCheck, classify_status
from smd.checks.redis import RedisCheck
from smd.checks.tcp import TcpCheck
from smd.events import AttemptMade, ReadinessChanged
from smd.history import MemoryHistoryStore
from smd.phases.check import CheckPhase
from smd.plugins import checks
from smd.retry import Check, CheckResult, ProbeResult, wait_ready
from smd.timeouts import AdaptiveTimeout, FixedTimeout

PASSWORD = "Redis-S3cret-pw"
APP_USER, APP_PASSWORD = "app", "App-S3cret-pw"
LIMITED_USER, LIMITED_PASSWORD = "limited", "Limited-S3cret-pw"
HTTP_USER, HTTP_PASSWORD = "web", "Http-S3cret-pw"
WRONG = "Not-The-Pw-42"
SECRETS = (PASSWORD, APP_PASSWORD, LIMITED_PASSWORD, HTTP_PASSWORD, WRONG)

SMD = str(Path(sys.executable).with_name("smd"))
EXAMPLES = Path(__file__).resolve().parent / "examples"
INFRA, CONFIG, TIMEOUT = FailureKind.INFRASTRUCTURE, FailureKind.CONFIGURATION, FailureKind.TIMEOUT


# -- helpers -------------------------------------------------------------------------------


def env_without_ssl_overrides() -> dict[str, str]:
    """The environment without ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (so system CAs apply)."""
    return {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}


def texts(result: ProbeResult | CheckResult) -> list[str]:
    """Everything a result can show: rendered, JSON, the failure and its cause chain."""
    out: list[str] = []
    if isinstance(result, CheckResult):
        out += [result.render_text(), json.dumps(result.to_dict())]
    f = result.failure
    if f is not None:
        out += [f.message, repr(f), json.dumps(f.to_dict()), *f.causes, str(f.cause)]
    if isinstance(result, ProbeResult) and result.server_message:
        out.append(result.server_message)
    return out


def assert_no_secret(result: ProbeResult | CheckResult) -> None:
    for text in texts(result):
        for secret in SECRETS:
            assert secret not in text, f"a password leaked into: {text}"


def assert_failed(
    result: ProbeResult | CheckResult, kind: FailureKind, code: str | None = None
) -> None:
    assert not result.ok, f"expected a {kind.value} failure, got ok: {result}"
    f = result.failure
    assert f is not None
    assert f.kind is kind, f"{f.kind.value} != {kind.value}: {f.message}"
    assert f.code == code, f"code {f.code!r} != {code!r}: {f.message}"
    assert_no_secret(result)


async def probe(check: Check, seconds: float = 5.0) -> ProbeResult:
    result = await check.probe(seconds)
    assert isinstance(result, ProbeResult)
    return result


async def wait(check: Check, deadline: float = 3.0, attempt: float | None = None) -> CheckResult:
    """What ``smd check`` does, with a deadline of our choosing."""
    return await wait_ready(check, deadline_seconds=deadline, attempt_seconds=attempt)


def smd_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command: ``.venv/bin/smd check ARGS``."""
    proc = subprocess.run(
        [SMD, "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env if env is not None else env_without_ssl_overrides(),
    )
    for secret in SECRETS:
        assert secret not in proc.stdout + proc.stderr, f"{secret!r} leaked: {proc.stdout}"
    return proc


async def run(startup: Startup, environment: str, **options: Any) -> Report:
    """Run and return the report, whether startup succeeded or not."""
    settings = load_settings(environment=environment, history_enabled=False)
    options.setdefault("store", MemoryHistoryStore())
    try:
        return await run_startup(startup, settings=settings, **options)
    except StartupFailed as failed:
        return failed.report


# -- servers -------------------------------------------------------------------------------


def _need_redis() -> None:
    if redis_server_binary() is None:
        pytest.fail(
            "redis-server not found: run tests/pgbed/ensure_server.sh as root "
            "(installs the Debian package redis-server)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1."""
    return make_cert(tmp_path_factory.mktemp("certs"), san="DNS:localhost,IP:127.0.0.1")


@pytest.fixture(scope="module")
def trust(certs: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts `certs` (and nothing else)."""
    return ssl.create_default_context(cafile=str(certs[0]))


@pytest.fixture(scope="module")
def http_bed() -> Iterator[HttpBed]:
    with HttpBed(credentials=(HTTP_USER, HTTP_PASSWORD)) as bed:
        yield bed


@pytest.fixture(scope="module")
def https_bed(certs: tuple[Path, Path]) -> Iterator[HttpBed]:
    with HttpBed(tls=certs) as bed:
        yield bed


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis with ``requirepass`` and two ACL users (one may not PING)."""
    _need_redis()
    with RedisServer(tmp_path_factory.mktemp("redis"), password=PASSWORD) as server:
        assert (
            server.command("ACL", "SETUSER", APP_USER, "on", f">{APP_PASSWORD}", "~*", "+@all")
            == "OK"
        )
        assert (
            server.command(
                "ACL", "SETUSER", LIMITED_USER, "on", f">{LIMITED_PASSWORD}", "~*", "+@all", "-ping"
            )
            == "OK"
        )
        yield server


@pytest.fixture(scope="module")
def redis_tls(
    tmp_path_factory: pytest.TempPathFactory, certs: tuple[Path, Path]
) -> Iterator[RedisServer]:
    _need_redis()
    with RedisServer(tmp_path_factory.mktemp("redis-tls"), password=PASSWORD, tls=certs) as server:
        yield server


@contextlib.contextmanager
def loading(workdir: Path, keys: int) -> Iterator[RedisServer]:
    """A real Redis loading a ``keys``-key dataset at one millisecond per key:
    ``LOADING`` for about ``keys`` ms, then ready."""
    _need_redis()
    args = ["--dbfilename", "dump.rdb"]
    with RedisServer(
        workdir, password=PASSWORD, args=[*args, "--enable-debug-command", "yes"]
    ) as seed:
        assert seed.command("DEBUG", "POPULATE", str(keys)) == "OK"
        assert seed.command("SAVE") == "OK"
    slow = ["--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024"]
    with RedisServer(workdir, password=PASSWORD, args=[*args, *slow], kill=True) as server:
        assert resp(server.port, "PING", password=PASSWORD).startswith("-LOADING"), (
            server.log_tail()
        )
        yield server


@pytest.fixture
def loading_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """`loading` 3000 keys: a few seconds of LOADING."""
    with loading(tmp_path, 3000) as server:
        yield server


# -- registration and bad targets --------------------------------------------------------


def test_every_check_is_registered_for_smd_check() -> None:
    registered = checks()
    for name, cls in (("tcp", TcpCheck), ("http", HttpCheck), ("redis", RedisCheck)):
        spec = registered[name]
        built = spec.factory({"tcp": "db:5432", "http": "http://db/", "redis": "redis://db"}[name])
        assert isinstance(built, cls)
        assert isinstance(built, Check)
        assert spec.help
        assert spec.target_help


@pytest.mark.parametrize(
    ("factory", "target", "expected"),
    [
        (TcpCheck.from_target, "db", "no port given"),
        (TcpCheck.from_target, "db:http", "invalid port 'http'"),
        (TcpCheck.from_target, "db:70000", "invalid port '70000'"),
        (TcpCheck.from_target, "udp://db:53", "unsupported scheme 'udp'"),
        (TcpCheck.from_target, "::1:80", "IPv6 address in brackets"),
        (TcpCheck.from_target, ":5432", "no host given"),
        (HttpCheck.from_target, "db:8000/health", "not a URL"),
        (HttpCheck.from_target, "ftp://db/", "unsupported scheme 'ftp'"),
        (HttpCheck.from_target, "http:///health", "no host given"),
        (HttpCheck.from_target, f"http://u:{HTTP_PASSWORD}@db:80x/", "invalid port (1-65535)"),
        (
            HttpCheck.from_target,
            f"http://u:{HTTP_PASSWORD[:4]}/{HTTP_PASSWORD[4:]}@db/",
            "percent-encode it",
        ),
        (RedisCheck.from_target, "cache:6379", "not a URL"),
        (RedisCheck.from_target, "memcached://cache", "unsupported scheme 'memcached'"),
        (RedisCheck.from_target, f"redis://:{PASSWORD}@cache/zero", "database number"),
        (RedisCheck.from_target, f"redis://:{PASSWORD}@cache:63x79", "invalid port (1-65535)"),
        (RedisCheck.from_target, f"redis://:{PASSWORD[:5]}/{PASSWORD[5:]}@cache", "percent-encode"),
        (RedisCheck.from_target, f"redis://:{PASSWORD[:5]}#{PASSWORD[5:]}@cache", "percent-encode"),
        (
            HttpCheck.from_target,
            f"http://u:{HTTP_PASSWORD[:4]}?{HTTP_PASSWORD[4:]}@db/",
            "percent-encode",
        ),
        (RedisCheck.from_target, f"redis://:{PASSWORD}@cache/0?timeout=1", "query parameters"),
        (RedisCheck.from_target, "redis://app@cache", "a user name without a password"),
    ],
)
def test_bad_targets_say_what_is_wrong_in_one_line_without_the_password(
    factory: Any, target: str, expected: str
) -> None:
    with pytest.raises(ValueError, match="accepted: ") as info:
        factory(target)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    for secret in SECRETS:
        for part in (secret, secret[:4], secret[4:], secret[:5], secret[5:]):
            assert part not in message, message


def test_targets_and_reprs_name_no_secret() -> None:
    http = HttpCheck(f"https://{HTTP_USER}:{HTTP_PASSWORD}@api.internal/health?token=t0ken-value")
    assert http.target == "https://api.internal/health"
    r = RedisCheck(f"rediss://{APP_USER}:{APP_PASSWORD}@cache.internal:6380/2")
    assert r.target == "rediss://cache.internal:6380/2"
    assert TcpCheck.from_target("tcp://[::1]:5672").target == "tcp://[::1]:5672"
    assert TcpCheck("[::1]", 5672).target == TcpCheck("::1", 5672).target == "tcp://[::1]:5672"
    for text in (http.target, repr(http), r.target, repr(r)):
        assert HTTP_PASSWORD not in text
        assert APP_PASSWORD not in text
        assert "t0ken" not in text
    with pytest.raises(ValueError, match="HTTP statuses"):
        HttpCheck("http://db/", statuses=[])
    with pytest.raises(ValueError, match="header"):
        HttpCheck("http://db/", headers={"X-Evil": "a\r\nInjected: 1"})


def test_status_classification_table() -> None:
    """Every status class lands where the module says (the HTTP servers below prove the wire)."""
    expected = {200: None, 204: None, 302: None, 399: None, 500: INFRA, 502: INFRA, 503: INFRA}
    expected |= {504: INFRA, 599: INFRA, 408: INFRA, 425: INFRA, 429: INFRA, 501: CONFIG}
    expected |= {505: CONFIG, 511: CONFIG, 400: CONFIG, 401: CONFIG, 403: CONFIG, 404: CONFIG}
    expected |= {405: CONFIG, 409: CONFIG, 451: CONFIG, 101: CONFIG, 400 + 99: CONFIG}
    for status, kind in expected.items():
        failure = classify_status(status, "Reason", target="http://x/")
        if kind is None:
            assert failure is None, status
        else:
            assert failure is not None, status
            assert failure.kind is kind, status
            assert failure.code == str(status)
            assert failure.details["status"] == str(status)
    only_200 = classify_status(204, "No Content", target="http://x/", statuses={200})
    assert only_200 is not None
    assert only_200.kind is CONFIG
    assert "expected 200" in only_200.message


# -- TCP -----------------------------------------------------------------------------------


async def test_tcp_port_that_accepts_is_ready(http_bed: HttpBed) -> None:
    result = await wait(TcpCheck("127.0.0.1", http_bed.port))
    assert result.ok
    assert result.attempts == 1
    assert result.last_probe is not None
    assert result.last_probe.answered
    assert "connection accepted" in result.render_text()


async def test_tcp_closed_port_is_refused_infrastructure_and_retried() -> None:
    result = await wait(TcpCheck("127.0.0.1", free_port()), deadline=0.5)
    assert_failed(result, INFRA, "ECONNREFUSED")
    assert result.attempts > 1  # may heal: retried until the deadline
    assert result.failure is not None
    assert result.failure.deadline_reached


async def test_tcp_dropped_syns_are_a_timeout() -> None:
    with SynBlackhole() as hole:
        result = await probe(TcpCheck("127.0.0.1", hole.port), 0.5)
    assert_failed(result, TIMEOUT)
    assert result.failure is not None
    assert result.failure.details["stage"] == "connect"
    assert not result.answered


async def test_a_port_that_accepts_but_never_answers_is_ready_for_tcp_only(
    http_bed: HttpBed, redis: RedisServer
) -> None:
    """The TCP check proves a listener; HTTP and Redis need an answer (a timeout)."""
    with FaultProxy(("127.0.0.1", redis.port), "blackhole") as hole:
        assert (await probe(TcpCheck("127.0.0.1", hole.port))).ok
        assert_failed(await probe(HttpCheck(f"http://127.0.0.1:{hole.port}/"), 0.5), TIMEOUT)
        assert_failed(
            await probe(RedisCheck(redis.url().replace(str(redis.port), str(hole.port))), 0.5),
            TIMEOUT,
        )


# -- HTTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/status/200", "/status/204", "/status/302", "/hints"])
async def test_http_status_in_the_default_set_is_ready(http_bed: HttpBed, path: str) -> None:
    result = await wait(HttpCheck(http_bed.url(path)))
    assert result.ok, result.render_text()
    assert result.attempts == 1
    last = result.last_probe
    assert last is not None
    assert last.answered
    assert last.summary.startswith("HTTP 200" if path in ("/", "/hints") else f"HTTP {path[-3:]}")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (503, INFRA),
        (502, INFRA),
        (500, INFRA),
        (504, INFRA),
        (429, INFRA),
        (404, CONFIG),
        (403, CONFIG),
        (400, CONFIG),
        (501, CONFIG),
    ],
)
async def test_http_status_outside_the_set_is_classified(
    http_bed: HttpBed, status: int, kind: FailureKind
) -> None:
    result = await wait(HttpCheck(http_bed.url(f"/status/{status}")), deadline=0.5)
    assert_failed(result, kind, str(status))
    assert result.failure is not None
    assert result.failure.details["status"] == str(status)
    assert result.status == "rejecting"  # the server answered
    # Infrastructure is retried until the deadline; configuration is final.
    assert (result.attempts > 1) is (kind is INFRA)


async def test_http_redirect_outside_a_custom_set_names_where_it_goes(http_bed: HttpBed) -> None:
    result = await wait(HttpCheck(http_bed.url("/status/302"), statuses={200}))
    assert_failed(result, CONFIG, "302")
    assert result.failure is not None
    assert "redirected to /elsewhere" in result.failure.message
    ok = await wait(HttpCheck(http_bed.url("/status/204"), statuses=[204]))
    assert ok.ok


async def test_http_503_while_starting_then_ready(http_bed: HttpBed) -> None:
    path = f"/starting/{3}?run={free_port()}"  # a fresh counter for this test
    attempts: list[dict[str, Any]] = []

    def on_attempt(start: float, end: float, ok: bool, /, **detail: Any) -> None:
        attempts.append({"ok": ok, **detail})

    result = await wait_ready(
        HttpCheck(http_bed.url(path)), deadline_seconds=30, attempt_seconds=5, on_attempt=on_attempt
    )
    assert result.ok, result.render_text()
    assert result.attempts == 4
    assert [a.get("code") for a in attempts] == ["503", "503", "503", None]
    assert [a.get("kind") for a in attempts[:3]] == ["infrastructure"] * 3


async def test_http_credentials_from_the_url_are_sent_and_never_shown(http_bed: HttpBed) -> None:
    good = HttpCheck(http_bed.url("/auth", userinfo=f"{HTTP_USER}:{HTTP_PASSWORD}"))
    assert (await wait(good)).ok
    assert http_bed.requests[-1][1].get("Authorization", "").startswith("Basic ")
    bad = await wait(HttpCheck(http_bed.url("/auth", userinfo=f"{HTTP_USER}:{WRONG}")))
    assert_failed(bad, CONFIG, "401")
    none = await wait(HttpCheck(http_bed.url("/auth")))
    assert_failed(none, CONFIG, "401")


async def test_https_with_a_trusted_certificate_is_ready(
    https_bed: HttpBed, trust: ssl.SSLContext
) -> None:
    result = await wait(HttpCheck(https_bed.url("/status/200"), ssl_context=trust))
    assert result.ok, result.render_text()


async def test_https_with_an_untrusted_certificate_is_configuration_not_retried(
    https_bed: HttpBed,
) -> None:
    result = await wait(HttpCheck(https_bed.url("/status/200")), deadline=2.0)
    assert_failed(result, CONFIG, "CERTIFICATE_VERIFY_FAILED")
    assert result.attempts == 1
    assert result.failure is not None
    assert "self-signed" in result.failure.message


async def test_https_with_a_certificate_for_another_name_is_configuration(
    tmp_path: Path,
) -> None:
    cert, key = make_cert(tmp_path, san="DNS:elsewhere.example")
    with HttpBed(tls=(cert, key)) as bed:
        trusting = ssl.create_default_context(cafile=str(cert))
        result = await wait(HttpCheck(bed.url("/"), ssl_context=trusting))
    assert_failed(result, CONFIG, "CERTIFICATE_VERIFY_FAILED")
    assert result.failure is not None
    assert "mismatch" in result.failure.message


async def test_https_to_a_plain_http_port_is_configuration(http_bed: HttpBed) -> None:
    result = await wait(HttpCheck(http_bed.url("/").replace("http://", "https://")))
    assert_failed(result, CONFIG, "WRONG_VERSION_NUMBER")
    assert result.attempts == 1


async def test_http_refused_reset_and_blackholed(http_bed: HttpBed) -> None:
    upstream = ("127.0.0.1", http_bed.port)
    with FaultProxy(upstream) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/status/200"
        assert (await wait(HttpCheck(url))).ok  # forwarding: the proxy itself is sound
        proxy.set_mode("reset")
        assert_failed(await probe(HttpCheck(url)), INFRA, "ECONNRESET")
        proxy.set_mode("blackhole")
        timed_out = await probe(HttpCheck(url), 0.5)
        assert_failed(timed_out, TIMEOUT)
        assert timed_out.failure is not None
        assert timed_out.failure.details["stage"] == "reply"
        proxy.set_mode("refuse")
        assert_failed(await probe(HttpCheck(url)), INFRA, "ECONNREFUSED")


async def test_http_answers_that_are_not_http_or_cut_short() -> None:
    with Scripted(b"SSH-2.0-OpenSSH_9.2\r\n") as ssh:
        result = await wait(HttpCheck(f"http://127.0.0.1:{ssh.port}/"))
    assert_failed(result, CONFIG)
    assert result.failure is not None
    assert "not an HTTP server" in result.failure.message
    assert result.attempts == 1
    with Scripted(b"HTTP/1.1 20") as cut:
        short = await probe(HttpCheck(f"http://127.0.0.1:{cut.port}/"))
        assert cut.received
        assert cut.received[0].startswith(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:")
    assert_failed(short, INFRA)
    assert short.failure is not None
    assert "in the middle of its answer" in short.failure.message


# -- Redis ---------------------------------------------------------------------------------


async def test_redis_ping_after_auth_is_ready(redis: RedisServer) -> None:
    for url in (
        redis.url(),
        redis.url(db=3),
        redis.url(user=APP_USER, password=APP_PASSWORD),
        redis.url(user="default"),
    ):
        result = await wait(RedisCheck(url))
        assert result.ok, result.render_text()
        assert result.last_probe is not None
        assert result.last_probe.summary == "PING answered PONG"


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        ({"password": ""}, "NOAUTH", "requires a password"),
        ({"password": WRONG}, "WRONGPASS", "rejected"),
        ({"user": APP_USER, "password": WRONG}, "WRONGPASS", "rejected"),
        ({"user": LIMITED_USER, "password": LIMITED_PASSWORD}, "NOPERM", "ACL"),
        ({"db": 99}, "ERR", "out of range"),
    ],
)
async def test_redis_configuration_failures_are_final(
    redis: RedisServer, kwargs: dict[str, Any], code: str, words: str
) -> None:
    result = await wait(RedisCheck(redis.url(**kwargs)), deadline=2.0)
    assert_failed(result, CONFIG, code)
    assert result.attempts == 1  # will not heal by waiting: not retried
    assert result.failure is not None
    assert words in result.failure.message
    assert result.status == "rejecting"


async def test_redis_password_given_to_a_server_without_one_is_configuration(
    tmp_path: Path,
) -> None:
    _need_redis()
    with RedisServer(tmp_path) as open_server:
        assert (await wait(RedisCheck(open_server.url()))).ok
        result = await wait(RedisCheck(open_server.url(password=WRONG)))
    assert_failed(result, CONFIG, "ERR")
    assert result.failure is not None
    assert "the server has none" in result.failure.message


async def test_redis_legacy_invalid_password_is_configuration() -> None:
    """Redis before 6 said ``-ERR invalid password``; a scripted server says it on cue."""
    with Scripted(b"-ERR invalid password\r\n") as old:
        result = await wait(RedisCheck(f"redis://:{WRONG}@127.0.0.1:{old.port}"))
        assert old.received == [f"*2\r\n$4\r\nAUTH\r\n${len(WRONG)}\r\n{WRONG}\r\n".encode()]
    assert_failed(result, CONFIG, "ERR")


async def test_redis_loading_is_infrastructure_then_ready(loading_redis: RedisServer) -> None:
    first = await probe(RedisCheck(loading_redis.url()))
    assert_failed(first, INFRA, "LOADING")
    assert first.answered
    codes: list[str | None] = []

    def on_attempt(start: float, end: float, ok: bool, /, **detail: Any) -> None:
        codes.append(detail.get("code"))

    result = await wait_ready(
        RedisCheck(loading_redis.url()),
        deadline_seconds=120,
        attempt_seconds=5,
        on_attempt=on_attempt,
    )
    assert result.ok, result.render_text()
    assert codes[0] == "LOADING"
    assert codes[-1] is None
    assert set(codes[:-1]) == {"LOADING"}


async def test_redis_replica_without_its_master_is_masterdown_infrastructure(
    tmp_path: Path,
) -> None:
    _need_redis()
    args = ["--replicaof", "127.0.0.1", str(free_port()), "--replica-serve-stale-data", "no"]
    with RedisServer(tmp_path, password=PASSWORD, args=args) as replica:
        result = await wait(RedisCheck(replica.url()), deadline=0.5)
    assert_failed(result, INFRA, "MASTERDOWN")
    assert result.attempts > 1


async def test_redis_busy_with_a_script_is_infrastructure(tmp_path: Path) -> None:
    _need_redis()
    args = ["--busy-reply-threshold", "100"]
    with (
        RedisServer(tmp_path, password=PASSWORD, args=args) as server,
        held_connections(server.port, 1, password=PASSWORD) as (runner,),
    ):
        runner.sendall(b"*3\r\n$4\r\nEVAL\r\n$17\r\nwhile true do end\r\n$1\r\n0\r\n")
        # Another client sees BUSY once the script runs past the threshold.
        assert resp(server.port, "PING", password=PASSWORD).startswith("-BUSY")
        busy = await probe(RedisCheck(server.url()))
        assert resp(server.port, "SCRIPT", "KILL", password=PASSWORD) == "OK"
    assert_failed(busy, INFRA, "BUSY")


async def test_redis_without_a_free_connection_slot_is_infrastructure(tmp_path: Path) -> None:
    _need_redis()
    with RedisServer(tmp_path, password=PASSWORD, args=["--maxclients", "2"]) as server:
        with held_connections(server.port, 2, password=PASSWORD):
            full = await wait(RedisCheck(server.url()), deadline=0.5)
        assert (await wait(RedisCheck(server.url()))).ok  # a slot is free again
    assert_failed(full, INFRA, "ERR")
    assert full.attempts > 1
    assert full.failure is not None
    assert "connection slot" in full.failure.message


async def test_redis_refused_reset_and_not_redis(redis: RedisServer, http_bed: HttpBed) -> None:
    refused = await wait(RedisCheck(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}"), deadline=0.5)
    assert_failed(refused, INFRA, "ECONNREFUSED")
    assert refused.attempts > 1
    with FaultProxy(("127.0.0.1", redis.port), "reset") as proxy:
        reset = await probe(RedisCheck(f"redis://:{PASSWORD}@127.0.0.1:{proxy.port}"))
    assert_failed(reset, INFRA, "ECONNRESET")
    not_redis = await wait(RedisCheck(f"redis://127.0.0.1:{http_bed.port}"))
    assert_failed(not_redis, CONFIG)
    assert not_redis.failure is not None
    assert "not a Redis server" in not_redis.failure.message


async def test_rediss_with_trusted_and_untrusted_certificates(
    redis_tls: RedisServer, trust: ssl.SSLContext
) -> None:
    assert (await wait(RedisCheck(redis_tls.url(), ssl_context=trust))).ok
    untrusted = await wait(RedisCheck(redis_tls.url()))
    assert_failed(untrusted, CONFIG, "CERTIFICATE_VERIFY_FAILED")
    plain_to_tls = await probe(RedisCheck(redis_tls.url(scheme="redis")), 1.0)
    # A TLS port hangs up on RESP in clear, before answering: that alone cannot
    # tell a misconfiguration from a server going away, so it may heal.
    assert plain_to_tls.failure is not None
    assert plain_to_tls.failure.kind is INFRA
    assert plain_to_tls.failure.details["stage"] == "reply"
    assert plain_to_tls.failure.code in (None, "ECONNRESET")  # closed, or reset on unread data


# -- the real CLI: same exit codes as smd check postgres --------------------------------------


def test_cli_exit_codes_for_every_kind(
    http_bed: HttpBed, https_bed: HttpBed, redis: RedisServer, certs: tuple[Path, Path]
) -> None:
    closed = free_port()
    cases: list[tuple[list[str], int, str]] = [
        (["tcp", f"127.0.0.1:{http_bed.port}"], 0, "accepting connections"),
        (["tcp", f"tcp://127.0.0.1:{closed}", "--timeout", "0.5"], 75, "[ECONNREFUSED]"),
        (["http", http_bed.url("/status/200")], 0, "HTTP 200"),
        (["http", http_bed.url("/status/404")], 78, "configuration failure [404]"),
        (
            ["http", http_bed.url("/status/503"), "--timeout", "0.5"],
            75,
            "infrastructure failure [503]",
        ),
        (["http", https_bed.url("/")], 78, "[CERTIFICATE_VERIFY_FAILED]"),
        (["http", http_bed.url("/auth", userinfo=f"{HTTP_USER}:{HTTP_PASSWORD}")], 0, "HTTP 200"),
        (["redis", redis.url()], 0, "PING answered PONG"),
        (["redis", redis.url(password=WRONG)], 78, "[WRONGPASS]"),
        (["redis", redis.url(password="")], 78, "[NOAUTH]"),
        (
            ["redis", f"redis://:{PASSWORD}@127.0.0.1:{closed}", "--timeout", "0.5"],
            75,
            "[ECONNREFUSED]",
        ),
        (
            ["redis", f"redis://:{PASSWORD}@cache:xx"],
            78,
            "invalid TARGET given to 'smd check redis'",
        ),
        (["http", "gopher://x/"], 78, "unsupported scheme 'gopher'"),
    ]
    for args, code, words in cases:
        proc = smd_check(*args)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        assert words in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
    # SSL_CERT_FILE makes the self-signed certificate trusted, as for any OpenSSL client.
    env = {**env_without_ssl_overrides(), "SSL_CERT_FILE": str(certs[0])}
    assert smd_check("http", https_bed.url("/"), env=env).returncode == 0


def test_cli_blackhole_is_a_timeout_and_json_carries_the_code(redis: RedisServer) -> None:
    with FaultProxy(("127.0.0.1", redis.port), "blackhole") as hole:
        url = f"redis://:{PASSWORD}@127.0.0.1:{hole.port}"
        proc = smd_check("redis", url, "--timeout", "0.5", "--format", "json")
    assert proc.returncode == 75, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert doc["status"] == "no response"
    assert doc["failure"]["kind"] == "timeout"
    assert doc["target"] == f"redis://127.0.0.1:{hole.port}/0"
    wrong = json.loads(smd_check("redis", redis.url(password=WRONG), "--format", "json").stdout)
    assert wrong["failure"]["code"] == "WRONGPASS"
    assert wrong["failure"]["details"]["prefix"] == "WRONGPASS"


def test_cli_loading_redis_exits_75(tmp_path: Path) -> None:
    # 60000 keys at 1 ms each: still loading when the command's 0.3 s are up.
    with loading(tmp_path, 60000) as server:
        proc = smd_check("redis", server.url(), "--timeout", "0.3")
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "[LOADING]" in proc.stdout


@pytest.mark.parametrize(
    ("rcode", "code", "exit_code"), [(NXDOMAIN, "EAI_NONAME", 78), (SERVFAIL, "EAI_AGAIN", 75)]
)
def test_cli_unknown_and_failing_host_names(
    tmp_path: Path, rcode: int, code: str, exit_code: int
) -> None:
    """A private resolv.conf names a fake DNS server: no packet reaches the real resolver."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to give smd a private resolv.conf")
    try:
        dns = FakeDns(rcode)
        dns.start()
    except DnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        resolv = dns.write_resolv_conf(tmp_path / "resolv.conf")
        proc = subprocess.run(
            [
                *unshare_prefix(resolv),
                SMD,
                "check",
                "tcp",
                "db.example.internal:5432",
                "--timeout",
                "0.5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        dns.close()
    if proc.returncode != exit_code and "mount" in proc.stderr:
        pytest.skip(f"cannot bind-mount a private resolv.conf: {proc.stderr.strip()}")
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    assert f"[{code}]" in proc.stdout
    assert dns.queries > 0


# -- CheckPhase inside a real run ---------------------------------------------------------------


def test_check_phase_is_a_phase_with_the_adaptive_timeout_and_the_check_target() -> None:
    cp = CheckPhase(
        RedisCheck(f"redis://:{PASSWORD}@cache:6379/1"), name="cache", requires=["config"]
    )
    phase = cp.to_phase()
    assert phase.name == "cache"
    assert phase.requires == ("config",)
    assert isinstance(phase.timeout, AdaptiveTimeout)
    assert phase.target == "redis://cache:6379/1"
    assert phase.recovery is not None
    assert not phase.essential
    assert PASSWORD not in repr(cp)
    assert CheckPhase(TcpCheck("db", 1), name="db", timeout=3).to_phase().timeout == 3.0
    with pytest.raises(TypeError, match="not a check"):
        CheckPhase("redis://cache", name="cache")  # type: ignore[arg-type]


async def test_check_phases_ready_publish_their_result_and_learn(
    http_bed: HttpBed, redis: RedisServer
) -> None:
    startup = Startup("svc")
    startup.add(CheckPhase(HttpCheck(http_bed.url("/status/200")), name="api"))
    startup.add(CheckPhase(RedisCheck(redis.url()), name="cache"))
    seen: dict[str, Any] = {}

    @startup.phase(requires=["api", "cache"])
    async def use(ctx: PhaseContext) -> None:
        seen["api"] = ctx.get("api", CheckResult)
        seen["cache"] = ctx.get("cache", CheckResult)

    store = MemoryHistoryStore()
    report = await run(startup, "test", store=store)
    assert report.state is State.READY, report.summary()
    for name, target in (
        ("api", f"http://127.0.0.1:{http_bed.port}/status/200"),
        ("cache", redis.url(password="") + "/0"),
    ):
        rep = report.phase(name)
        assert rep.outcome is Outcome.OK
        assert rep.target == f"svc/{target}@test"
        assert len(rep.attempts) == 1
        assert rep.attempts[0].ok
        assert seen[name].ok
        assert seen[name].target == target
        # The answered attempt's latency is learned under this target.
        assert store.load(rep.target), f"nothing learned for {rep.target}"


async def test_wrong_redis_password_stops_a_strict_startup_with_exit_78(redis: RedisServer) -> None:
    startup = Startup("svc")
    startup.add(CheckPhase(RedisCheck(redis.url(password=WRONG)), name="cache", timeout=10))
    report = await run(startup, "production")
    assert report.state is State.FAILED
    rep = report.phase("cache")
    assert rep.outcome is Outcome.FAILED
    assert rep.failure is not None
    assert rep.failure.kind is CONFIG
    assert rep.failure.code == "WRONGPASS"
    assert len(rep.attempts) == 1
    assert report.exit_code() == 78
    assert "(code WRONGPASS)" in report.summary()
    for secret in SECRETS:
        assert secret not in report.to_json()
        assert secret not in report.summary()


async def test_refused_dependency_is_bypassed_in_development() -> None:
    startup = Startup("svc")
    startup.add(CheckPhase(TcpCheck("127.0.0.1", free_port()), name="queue", timeout=0.6))
    report = await run(startup, "development")
    assert report.state is State.DEGRADED
    rep = report.phase("queue")
    assert rep.outcome is Outcome.BYPASSED
    assert rep.failure is not None
    assert rep.failure.kind is INFRA
    assert rep.failure.code == "ECONNREFUSED"
    assert len(rep.attempts) > 1


async def test_blackholed_dependency_fails_with_a_timeout_at_the_deadline(
    redis: RedisServer,
) -> None:
    with FaultProxy(("127.0.0.1", redis.port), "blackhole") as hole:
        startup = Startup("svc")
        url = f"redis://:{PASSWORD}@127.0.0.1:{hole.port}"
        startup.add(CheckPhase(RedisCheck(url), name="cache", timeout=FixedTimeout(1.0)))
        report = await run(startup, "production")
    rep = report.phase("cache")
    assert rep.outcome is Outcome.FAILED
    assert rep.failure is not None
    assert rep.failure.kind is TIMEOUT
    assert rep.failure.deadline_reached
    assert report.exit_code() == 75


async def test_loading_redis_phase_waits_until_ready(loading_redis: RedisServer) -> None:
    startup = Startup("svc")
    startup.add(CheckPhase(RedisCheck(loading_redis.url()), name="cache", timeout=120))
    report = await run(startup, "production")
    assert report.state is State.READY, report.summary()
    attempts = report.phase("cache").attempts
    assert len(attempts) > 1
    assert attempts[0].detail["code"] == "LOADING"
    assert not attempts[0].ok
    assert attempts[-1].ok


async def test_bypassed_redis_recovers_in_the_background(tmp_path: Path) -> None:
    """MASTERDOWN is bypassed in development; once the master is up the replica
    syncs, a recovery probe succeeds and readiness moves from degraded to ready."""
    _need_redis()
    master_port = free_port()
    args = ["--replicaof", "127.0.0.1", str(master_port), "--replica-serve-stale-data", "no"]
    args += ["--masterauth", PASSWORD]
    ready = anyio.Event()

    def observer(event: object) -> None:
        if isinstance(event, ReadinessChanged) and event.snapshot.state is State.READY:
            ready.set()

    with RedisServer(tmp_path / "replica", password=PASSWORD, args=args) as replica:
        startup = Startup("svc")
        startup.add(CheckPhase(RedisCheck(replica.url()), name="cache", timeout=0.6))
        settings = load_settings(environment="development", history_enabled=False)
        store = MemoryHistoryStore()
        async with lifecycle(startup, settings=settings, store=store, observers=[observer]) as run_:
            assert run_.readiness.state is State.DEGRADED
            assert run_.report is not None
            failure = run_.report.phase("cache").failure
            assert failure is not None
            assert failure.code == "MASTERDOWN"
            master = RedisServer(
                tmp_path / "master",
                password=PASSWORD,
                args=["--repl-diskless-sync-delay", "0"],
                port=master_port,
            )
            with master, anyio.fail_after(90):
                await ready.wait()
            assert run_.readiness.snapshot().state is State.READY
            recovered = run_.values["cache"]
    assert isinstance(recovered, CheckResult)
    assert recovered.ok
    assert recovered.target == replica.url(password="") + "/0"


# -- a check of your own (the README example) --------------------------------------------------


def _own_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("own_check", EXAMPLES / "own_check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_check_example_is_under_25_lines() -> None:
    source = (EXAMPLES / "own_check.py").read_text()
    body = source.split('"""', 2)[2]  # the code after the module docstring
    lines = [line for line in body.splitlines() if line.strip()]
    assert len(lines) < 25, f"{len(lines)} lines"
    assert "import smd._" not in source
    assert "from smd._" not in source
    assert isinstance(_own_check().FileCheck("/x"), Check)


def test_own_check_through_smd_check_via_an_entry_point(tmp_path: Path) -> None:
    """Installed the way a package ships a check: a distribution whose entry point
    ``smd.plugins`` names the module's ``plugin``."""
    dist = tmp_path / "site" / "own_check_example-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: own-check-example\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[smd.plugins]\nfile = own_check:plugin\n")
    env = {
        **env_without_ssl_overrides(),
        "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{EXAMPLES}",
    }
    marker = tmp_path / "ready"
    marker.write_text("ok\n")
    ok = smd_check("file", str(marker), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"file://{marker} - accepting connections (3 bytes there" in ok.stdout
    missing = smd_check("file", str(tmp_path / "not-yet"), "--timeout", "0.3", env=env)
    assert missing.returncode == 75, missing.stdout + missing.stderr
    assert "not there yet" in missing.stdout
    assert "infrastructure" in missing.stdout
    under_a_file = smd_check("file", str(marker / "x"), env=env)
    assert under_a_file.returncode == 78, under_a_file.stdout + under_a_file.stderr
    assert "Not a directory" in under_a_file.stdout
    directory = smd_check("file", str(tmp_path), env=env)
    assert directory.returncode == 78
    assert "not a regular file" in directory.stdout


async def test_own_check_as_a_phase_waits_for_the_file(tmp_path: Path) -> None:
    own = _own_check()
    marker = tmp_path / "secrets" / "db.json"
    failed_once = anyio.Event()

    def observer(event: object) -> None:
        if isinstance(event, AttemptMade) and event.phase == "secrets" and not event.attempt.ok:
            failed_once.set()

    startup = Startup("own")
    startup.add(CheckPhase(own.FileCheck(str(marker)), name="secrets", timeout=60))

    @startup.phase
    async def sidecar(ctx: PhaseContext) -> None:
        await failed_once.wait()  # the check has seen the file missing
        marker.parent.mkdir()
        marker.write_text("{}")

    report = await run(startup, "production", observers=[observer])
    assert report.state is State.READY, report.summary()
    attempts = report.phase("secrets").attempts
    assert len(attempts) >= 2
    assert attempts[0].detail["kind"] == "infrastructure"
    assert attempts[-1].ok
    assert report.phase("secrets").target == f"own/file://{marker}@production"
