"""Alerts (smd.alerts): real runs fire them; a real HTTP server receives the webhook's
posts; a webhook to a blackholed or closed port never delays a startup.

Each trigger is driven by a real run: degraded (development, permissive),
failed, a bypass in production (the policy's and the forced override), the
conditional limit of consecutive degraded starts (staging), the learned
deadline growing past 2x (in-process, and from the history alone), and a
background recovery.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from smd import (
    Failure,
    FailureKind,
    Phase,
    PhaseContext,
    PhaseError,
    Report,
    Settings,
    Startup,
    StartupFailed,
    lifecycle,
    load_settings,
    run_startup,
)
from smd.alerts import ALERTS, Alert, AlertHook, Alerts, webhook
from smd.bypass import PermissivePolicy
from smd.clock import ManualClock
from smd.events import Event, Recovered
from smd.history import MemoryHistoryStore, TargetInfo
from smd.timeouts import AdaptiveTimeout, Sample, Series, policy_spec

PASSWORD = secrets.token_urlsafe(18)
DSN = f"postgresql://app:{PASSWORD}@127.0.0.1:5432/app"
T0 = 1_700_000_000.0  # ManualClock's default wall-clock start


# -- a real HTTP server receiving the posts ------------------------------------------------


class Receiver:
    """A ThreadingHTTPServer on a loopback port that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.got = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                body = json.loads(self.rfile.read(length))
                with outer.got:
                    outer.bodies.append(
                        {"body": body, "content_type": self.headers["content-type"]}
                    )
                    outer.got.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/smd"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def names(self) -> list[str]:
        with self.got:
            return [b["body"]["name"] for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A port whose kernel completes the handshake but nobody ever answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # never accept()ed: requests hang until the client's timeout
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


@pytest.fixture
def closed_port() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/hook"


# -- phases and runs -----------------------------------------------------------------------


async def ok(ctx: PhaseContext) -> str:
    return "ok"


def down(kind: FailureKind = FailureKind.INFRASTRUCTURE) -> Any:
    async def fn(ctx: PhaseContext) -> None:
        raise PhaseError(Failure(kind, f"cannot reach {DSN}", code="ECONNREFUSED"))

    return fn


class Recording:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.recovered = anyio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Recovered):
            self.recovered.set()


async def run(startup: Startup, alerts: Alerts, settings: Settings, **kw: Any) -> Report:
    kw.setdefault("store", MemoryHistoryStore())
    try:
        return await run_startup(startup, settings=settings, observers=[alerts], **kw)
    except StartupFailed as err:
        return err.report


def startup_of(*phases: Phase) -> Startup:
    s = Startup("svc")
    for p in phases:
        s.add(p)
    return s


def alert_logs(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [e["event"] for e in logs if str(e["event"]).startswith("smd.alert.")]


# -- the triggers --------------------------------------------------------------------------


async def test_degraded_and_recovered_reach_a_real_webhook(receiver: Receiver) -> None:
    hook = webhook(receiver.url, timeout=5)
    kept: list[Alert] = []
    alerts = Alerts([hook, kept.append])
    seen = Recording()

    async def probe(ctx: PhaseContext) -> str:
        return "client"

    s = startup_of(Phase(name="db", run=ok), Phase(name="cache", run=down(), recovery=probe))
    with capture_logs() as logs:
        async with lifecycle(
            s,
            settings=load_settings(environment="development"),
            store=MemoryHistoryStore(),
            clock=ManualClock(),
            observers=[alerts, seen],
        ):
            with anyio.fail_after(10):
                await seen.recovered.wait()
        assert await anyio.to_thread.run_sync(hook.flush, 10)
    assert [a.name for a in kept] == ["degraded", "recovered"]
    assert receiver.names() == ["degraded", "recovered"]
    assert alert_logs(logs) == ["smd.alert.degraded", "smd.alert.recovered"]
    assert hook.sent == 2
    assert hook.failed == 0

    degraded, recovered = (b["body"] for b in receiver.bodies)
    assert receiver.bodies[0]["content_type"] == "application/json"
    assert degraded["fields"]["startup"] == "svc"
    assert degraded["fields"]["environment"] == "development"
    assert degraded["fields"]["phases"] == ["cache"]
    assert degraded["fields"]["reasons"][0].startswith("cache: infrastructure failure bypassed")
    assert "degraded in development" in degraded["message"]
    assert recovered["fields"]["phase"] == "cache"
    assert recovered["fields"]["probes"] >= 1
    assert recovered["fields"]["time_to_ready"] >= 0
    # The posted text and the kept alerts never carry the password of the DSN.
    assert PASSWORD not in json.dumps(receiver.bodies)
    assert PASSWORD not in repr(kept)
    # An alert is a frozen value.
    with pytest.raises(AttributeError):
        kept[0].name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        kept[0].fields["startup"] = "x"  # type: ignore[index]


async def test_failed_startup_fires_failed() -> None:
    kept: list[Alert] = []
    with capture_logs() as logs:
        report = await run(
            startup_of(Phase(name="db", run=down(FailureKind.CONFIGURATION))),
            Alerts([kept.append]),
            load_settings(environment="test"),
        )
    assert report.state.value == "failed"
    (alert,) = kept
    assert alert.name == "failed"
    assert alert.fields["phase"] == "db"
    assert alert.fields["kind"] == "configuration"
    assert alert.fields["exit_code"] == 78
    (line,) = [e for e in logs if e["event"] == "smd.alert.failed"]
    assert line["log_level"] == "error"


async def test_a_bypass_in_production_alerts_and_so_does_the_forced_override() -> None:
    # The policy lets it through in production.
    kept: list[Alert] = []
    report = await run(
        startup_of(Phase(name="db", run=ok), Phase(name="cache", run=down())),
        Alerts([kept.append]),
        load_settings(environment="production"),
        policy=PermissivePolicy(),
    )
    assert report.state.value == "degraded"
    assert [a.name for a in kept] == ["bypass_in_production", "degraded"]
    bypass = kept[0].fields
    assert (bypass["phase"], bypass["kind"], bypass["forced"]) == ("cache", "infrastructure", False)
    assert bypass["mode"] == "permissive"

    # The forced override, allowed in production.
    forced: list[Alert] = []
    settings = load_settings(
        environment="production",
        bypass={"force_continue": True, "allow_force_in_production": True},
    )
    report = await run(
        startup_of(Phase(name="cache", run=down())), Alerts([forced.append]), settings
    )
    assert report.state.value == "degraded"
    assert [a.name for a in forced] == ["bypass_in_production", "degraded"]
    assert forced[0].fields["forced"] is True
    assert "forced override" in forced[0].message

    # Refused in production (no allow_force_in_production): no bypass, so no
    # bypass alert; the startup failed.
    refused: list[Alert] = []
    settings = load_settings(environment="production", bypass={"force_continue": True})
    report = await run(
        startup_of(Phase(name="cache", run=down())), Alerts([refused.append]), settings
    )
    assert report.state.value == "failed"
    assert [a.name for a in refused] == ["failed"]

    # The same bypass outside production is no production alert.
    dev: list[Alert] = []
    await run(
        startup_of(Phase(name="cache", run=down())),
        Alerts([dev.append]),
        load_settings(environment="staging"),
        policy=PermissivePolicy(),
    )
    assert [a.name for a in dev] == ["degraded"]


async def test_consecutive_degraded_starts_reaching_the_conditional_limit() -> None:
    """Staging (conditional): bypassed while the streak is below the limit of 3."""
    clock = ManualClock()
    store = MemoryHistoryStore()
    key = "svc/phase:cache@staging"
    store.append(key, [Sample(Series.READY, T0 - 3600 + i, 0.05) for i in range(20)])
    settings = load_settings(environment="staging")
    assert settings.bypass.max_consecutive_degraded == 3
    kept: list[Alert] = []
    alerts = Alerts([kept.append])  # one observer over the starts, as a process-wide one is
    states = []
    for _ in range(4):
        report = await run(
            startup_of(Phase(name="cache", run=down())), alerts, settings, store=store, clock=clock
        )
        states.append(report.state.value)
        clock.advance(60)
    assert states == ["degraded", "degraded", "degraded", "failed"]
    assert [a.name for a in kept] == [
        "degraded",
        "degraded",
        "degraded",
        "degraded_streak",
        "failed",
    ]
    streak = kept[3]
    assert streak.fields["consecutive_degraded"] == 3
    assert streak.fields["limit"] == 3
    assert streak.fields["action"] == "fail"
    assert streak.fields["target"] == key
    assert "reached the limit of 3" in streak.message


def adaptive_store(env: str, fast: int, slow: float | None) -> tuple[MemoryHistoryStore, str]:
    """A history of ``fast`` 0.2 s starts (and then one slow one) for phase db's target."""
    policy = AdaptiveTimeout()
    key = f"svc/phase:db@{env}"
    store = MemoryHistoryStore()
    samples = [Sample(Series.READY, T0 - 7200 + 60 * i, 0.2) for i in range(fast)]
    if slow is not None:
        samples.append(Sample(Series.READY, T0 - 60, slow))
    info = TargetInfo(key, "svc", "phase:db", env, "db", policy_spec(policy))
    store.append_many({key: samples}, {key: info})
    return store, key


def db_startup() -> Startup:
    return startup_of(Phase(name="db", run=ok, timeout=AdaptiveTimeout()))


async def test_learned_timeout_growth_between_starts_of_one_process() -> None:
    settings = load_settings(environment="test")
    store, key = adaptive_store("test", 25, None)
    kept: list[Alert] = []
    alerts = Alerts([kept.append])
    clock = ManualClock()
    await run(db_startup(), alerts, settings, store=store, clock=clock)
    assert kept == []  # a first start has nothing to compare with
    # Meanwhile another replica's start took 10 s (a shared history).
    store.append(key, [Sample(Series.READY, clock.wall() + 1, 10.0)])
    clock.advance(60)
    with capture_logs() as logs:
        await run(db_startup(), alerts, settings, store=store, clock=clock)
    (alert,) = kept
    assert alert.name == "timeout_growth"
    assert alert.fields["target"] == key
    assert alert.fields["previous"] == 0.5  # the test environment's floor
    assert alert.fields["seconds"] == pytest.approx(10.0)
    assert alert.fields["ratio"] == pytest.approx(20.0)
    assert alert.fields["previous_from"] == "this process's previous start"
    assert alert_logs(logs) == ["smd.alert.timeout_growth"]
    # And a third start with no slower history does not alert again.
    clock.advance(60)
    await run(db_startup(), alerts, settings, store=store, clock=clock)
    assert len(kept) == 1


async def test_learned_timeout_growth_from_the_history_alone() -> None:
    """A new process: the previous start's deadline is replayed from the store."""
    settings = load_settings(environment="test")
    store, key = adaptive_store("test", 25, 10.0)
    kept: list[Alert] = []
    alerts = Alerts([kept.append], store=store, settings=settings)
    await run(db_startup(), alerts, settings, store=store, clock=ManualClock())
    await anyio.to_thread.run_sync(alerts.flush, 10)
    (alert,) = kept
    assert alert.name == "timeout_growth"
    assert alert.fields["previous_from"] == "the history"
    assert alert.fields["target"] == key
    assert alert.fields["previous"] == 0.5
    assert alert.fields["seconds"] == pytest.approx(10.0)

    # Steady history: no alert; and with growth=30 the same 20x jump is not enough.
    for store_, growth in [(adaptive_store("test", 26, None)[0], 2.0), (store, 30.0)]:
        quiet: list[Alert] = []
        alerts = Alerts([quiet.append], store=store_, settings=settings, growth=growth)
        await run(db_startup(), alerts, settings, store=store_, clock=ManualClock())
        await anyio.to_thread.run_sync(alerts.flush, 10)
        assert quiet == []


async def test_a_warm_up_default_is_not_growth() -> None:
    """From 3 samples (below min_samples: the default) to learned: nothing to compare."""
    settings = load_settings(environment="test")
    store, _key = adaptive_store("test", 3, None)
    kept: list[Alert] = []
    alerts = Alerts([kept.append], store=store, settings=settings)
    await run(db_startup(), alerts, settings, store=store, clock=ManualClock())
    await anyio.to_thread.run_sync(alerts.flush, 10)
    assert kept == []


# -- hooks that fail, servers that do not answer -------------------------------------------------


async def test_a_blackholed_or_closed_webhook_never_delays_startup(
    blackhole: str, closed_port: str
) -> None:
    slow = webhook(blackhole, timeout=3.0)
    refused = webhook(closed_port, timeout=3.0)
    kept: list[Alert] = []
    alerts = Alerts([slow, refused, kept.append])
    settings = load_settings(environment="development")
    with capture_logs() as logs:
        report = await run(
            startup_of(Phase(name="db", run=ok), Phase(name="cache", run=down())), alerts, settings
        )
        assert report.state.value == "degraded"
        # The startup returned with the degraded alert handed to every hook
        # (the one after the webhooks too), while the post to the blackhole
        # was still waiting for an answer in the poster's thread: it had
        # neither been answered nor given up. A startup that waited for its
        # posts would see the blackhole's post fail first.
        assert [a.name for a in kept] == ["degraded"]
        assert (slow.sent, slow.failed) == (0, 0)
        assert await anyio.to_thread.run_sync(refused.flush, 10)
        assert await anyio.to_thread.run_sync(slow.flush, 10)
    assert slow.failed == 1
    assert refused.failed == 1
    failures = [e for e in logs if e["event"] == "smd.alert.webhook_failed"]
    assert len(failures) == 2
    assert {e["alert"] for e in failures} == {"degraded"}
    assert any("timed out" in e["error"].lower() for e in failures)
    assert any("refused" in e["error"].lower() for e in failures)


async def test_a_hook_that_raises_is_logged_once_and_breaks_nothing() -> None:
    calls: list[str] = []

    def broken(alert: Alert) -> None:
        calls.append(alert.name)
        raise RuntimeError(f"pager down ({DSN})")

    kept: list[Alert] = []
    alerts = Alerts([broken, kept.append])
    settings = load_settings(environment="development")
    with capture_logs() as logs:
        for _ in range(2):
            report = await run(startup_of(Phase(name="cache", run=down())), alerts, settings)
            assert report.state.value == "degraded"
    assert calls == ["degraded", "degraded"]  # still called; reported once
    assert [a.name for a in kept] == ["degraded", "degraded"]
    (failed,) = [e for e in logs if e["event"] == "smd.alert.hook_failed"]
    assert failed["alert"] == "degraded"
    assert PASSWORD not in failed["error"]


def test_bad_arguments_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="http or https"):
        webhook("file:///etc/passwd")
    with pytest.raises(ValueError, match="positive"):
        webhook("http://127.0.0.1:1/", timeout=0)
    with pytest.raises(ValueError, match="above 1"):
        Alerts(growth=1.0)
    with pytest.raises(TypeError, match="callable"):
        Alerts(["not a hook"])  # type: ignore[list-item]
    assert isinstance(webhook("https://alerts.example/x"), AlertHook)
    assert set(ALERTS) == {
        "degraded",
        "failed",
        "bypass_in_production",
        "degraded_streak",
        "timeout_growth",
        "recovered",
    }
