"""Logs: dotted event names, JSON off a terminal, stdlib logging in the same
pipeline, and no secret in any line (the stream is captured and searched)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
import structlog

from smd import Phase, PhaseContext, StartupFailed, load_settings, run_startup
from smd._logging import configure_logging, get_logger
from smd.bypass import PermissivePolicy, StrictPolicy
from smd.clock import ManualClock
from smd.history import MemoryHistoryStore
from smd.secrets import register_secret

SECRET = "tok-9f8e7d6c5b4a"
URL_PASSWORD = "pw-in-the-url-31337"
DSN = f"postgresql://app:{URL_PASSWORD}@db.internal:5432/app"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for h in list(root.handlers):
        if h.get_name() == "smd":
            root.removeHandler(h)
    root.setLevel(level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    out = []
    for line in stream.getvalue().splitlines():
        out.append(json.loads(line))  # every line is one JSON object
    return out


def events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [e for e in lines(stream) if e.get("event") == name]


def startup_of(*phases: Phase) -> Any:
    from smd import Startup

    s = Startup("api")
    for p in phases:
        s.add(p)
    return s


async def ok(ctx: PhaseContext) -> int:
    ctx.log.info("app.cache.warmed", entries=3)
    return 1


def ok_after(seconds: float) -> Callable[[PhaseContext], Awaitable[int]]:
    """``ok`` that first waits ``seconds`` on the run's clock."""

    async def run(ctx: PhaseContext) -> int:
        await ctx.clock.sleep(seconds)
        return await ok(ctx)

    return run


async def test_json_lines_when_not_a_terminal() -> None:
    buf = io.StringIO()
    configure_logging("auto", "info", stream=buf)
    get_logger("smd", startup="api").info("smd.test.event", answer=42)
    (event,) = lines(buf)
    assert event["event"] == "smd.test.event"
    assert event["answer"] == 42
    assert event["startup"] == "api"
    assert event["level"] == "info"
    assert "timestamp" in event


async def test_console_rendering_on_a_terminal() -> None:
    buf = Tty()
    configure_logging("auto", "info", stream=buf)
    get_logger("smd").info("smd.test.event", answer=42)
    text = buf.getvalue()
    assert "smd.test.event" in text
    assert "answer=42" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


async def test_explicit_json_on_a_terminal() -> None:
    buf = Tty()
    configure_logging("json", "info", stream=buf)
    get_logger("smd").info("smd.test.event")
    assert lines(buf)[0]["event"] == "smd.test.event"


async def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", stream=first)
    configure_logging("json", "info", stream=second)
    get_logger("smd").info("smd.test.event")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1


async def test_startup_events_have_dotted_names_and_fields() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf)
    s = startup_of(
        Phase(name="config", run=ok_after(0.25)),
        Phase(name="db", run=ok_after(1.5), requires=("config",)),
    )
    await run_startup(
        s,
        settings=load_settings(environment="test"),
        store=MemoryHistoryStore(),
        policy=StrictPolicy(),
        clock=ManualClock(),  # durations are exact: only the phases' sleeps move it
    )
    all_events = lines(buf)
    names = [e["event"] for e in all_events]
    for name in names:
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", name), name

    (started,) = events(buf, "smd.startup.started")
    assert started["startup"] == "api"
    assert started["environment"] == "test"
    assert started["phases"] == 2

    phase_started = events(buf, "smd.phase.started")
    assert [e["phase"] for e in phase_started] == ["config", "db"]
    assert all("deadline" in e and "deadline_source" in e for e in phase_started)

    finished = events(buf, "smd.phase.finished")
    assert [e["phase"] for e in finished] == ["config", "db"]
    assert [(e["outcome"], e["duration"]) for e in finished] == [("ok", 0.25), ("ok", 1.5)]

    (done,) = events(buf, "smd.startup.finished")
    assert done["state"] == "ready"
    assert done["duration"] == 1.75  # one after the other
    assert names.index("smd.startup.started") == 0
    assert names[-1] == "smd.startup.finished"

    # The phase's own logger is bound to the startup and the phase.
    warmed = events(buf, "app.cache.warmed")
    assert [(e["phase"], e["startup"], e["entries"]) for e in warmed] == [
        ("config", "api", 3),
        ("db", "api", 3),
    ]


async def test_failure_and_decision_are_logged() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf)

    async def bad(ctx: PhaseContext) -> None:
        raise RuntimeError("boom")

    s = startup_of(Phase(name="cache", run=bad))
    await run_startup(
        s,
        settings=load_settings(environment="test"),
        store=MemoryHistoryStore(),
        policy=PermissivePolicy(),
    )
    (decided,) = events(buf, "smd.bypass.decided")
    assert decided["phase"] == "cache"
    assert decided["action"] == "continue"
    assert decided["kind"] == "application"
    assert "permissive" in decided["reason"]
    (finished,) = events(buf, "smd.phase.finished")
    assert finished["outcome"] == "bypassed"
    assert finished["kind"] == "application"
    assert events(buf, "smd.startup.finished")[0]["state"] == "degraded"


async def test_waiting_is_first_logged_one_interval_after_each_phase_started() -> None:
    """Issue 10 section 5: ``smd.phase.waiting`` counts from the phase's own start.

    ``late`` starts about 0.3 s into the run, between two multiples of the
    interval: a reporter ticking on the run's schedule would report it after
    about 0.1 s. No duration is asserted, only what each report says it waited.
    """
    interval = 0.2
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf)

    def sleeping(seconds: float) -> Any:
        async def fn(ctx: PhaseContext) -> None:
            await anyio.sleep(seconds)

        return fn

    s = startup_of(
        Phase(name="early", run=sleeping(0.7)),
        Phase(name="kick", run=sleeping(0.3)),
        Phase(name="late", run=sleeping(0.7), requires=("kick",)),
    )
    await run_startup(
        s,
        settings=load_settings(environment="test", progress_interval=interval),
        store=MemoryHistoryStore(),
        policy=StrictPolicy(),
    )
    names = [e["event"] for e in lines(buf)]
    waiting = events(buf, "smd.phase.waiting")
    by_phase: dict[str, list[float]] = {}
    for e in waiting:
        by_phase.setdefault(e["phase"], []).append(e["waited"])
    assert {"early", "late"} <= set(by_phase), waiting
    # The late phase is reported only once it started, never before.
    first_late = next(i for i, e in enumerate(lines(buf)) if e.get("phase") == "late")
    assert lines(buf)[first_late]["event"] == "smd.phase.started"
    assert names.index("smd.phase.waiting") > names.index("smd.phase.started")
    for phase, waited in by_phase.items():
        # The n-th report of a phase comes at least n intervals after it began
        # (the log rounds to milliseconds).
        assert waited[0] >= interval, (phase, waited)
        for n, seconds in enumerate(waited, start=1):
            assert seconds >= round(n * interval, 3), (phase, waited)
        assert waited == sorted(waited)


async def test_stdlib_logging_goes_through_the_same_pipeline() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf)
    logging.getLogger("myapp.db").warning("pool has %d connections", 5)
    (event,) = lines(buf)
    assert event["event"] == "pool has 5 connections"
    assert event["logger"] == "myapp.db"
    assert event["level"] == "warning"
    assert "timestamp" in event


async def test_stdlib_exception_is_rendered_into_the_json_line() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf)
    try:
        raise ValueError("bad thing")
    except ValueError:
        logging.getLogger("myapp").exception("it failed")
    (event,) = lines(buf)
    assert event["event"] == "it failed"
    assert "ValueError: bad thing" in event["exception"]


async def test_level_filters_both_pipelines() -> None:
    buf = io.StringIO()
    configure_logging("json", "warning", stream=buf)
    get_logger("smd").info("smd.quiet")
    logging.getLogger("myapp").info("quiet too")
    get_logger("smd").warning("smd.loud")
    logging.getLogger("myapp").error("loud too")
    assert [e["event"] for e in lines(buf)] == ["smd.loud", "loud too"]


async def test_secrets_never_reach_the_log_stream() -> None:
    register_secret(SECRET)
    buf = io.StringIO()
    configure_logging("json", "debug", stream=buf)

    async def leaky(ctx: PhaseContext) -> None:
        ctx.log.info("app.connecting", dsn=DSN, token=SECRET, nested={"url": DSN, "t": [SECRET]})
        logging.getLogger("myapp").warning("connecting to %s with %s", DSN, SECRET)
        raise ConnectionError(f"cannot reach {DSN} (token {SECRET})")

    async def close(value: object) -> None:
        raise OSError(f"close failed for {DSN} with {SECRET}")

    s = startup_of(
        Phase(name="first", run=ok, teardown=close),
        Phase(name="db", run=leaky, requires=("first",)),
    )
    with pytest.raises(StartupFailed) as info:
        await run_startup(
            s,
            settings=load_settings(environment="test"),
            store=MemoryHistoryStore(),
            policy=StrictPolicy(),
        )
    text = buf.getvalue()
    # The events were emitted (so the check below is not vacuous)...
    assert "app.connecting" in text
    assert "connecting to postgresql://app:" in text
    assert "smd.phase.teardown" in text
    assert "db.internal" in text
    # ...with the secrets masked.
    assert SECRET not in text
    assert URL_PASSWORD not in text
    assert "***" in text
    # And nowhere else either: the report, its JSON, the exception text.
    report_json = info.value.report.to_json()
    assert "db.internal" in report_json
    assert SECRET not in report_json
    assert URL_PASSWORD not in report_json
    assert SECRET not in str(info.value)
    assert URL_PASSWORD not in str(info.value)
    assert SECRET not in info.value.report.summary()
    assert URL_PASSWORD not in info.value.report.summary()


async def test_a_hosts_own_structlog_chain_gets_the_fields_masked() -> None:
    # smd's pipeline masks each rendered line whole, so the run hands it the
    # fields as they are; a chain of the host's own (here: one that keeps
    # the event dicts) must get every field masked before it sees them.
    register_secret(SECRET)
    seen: list[dict[str, Any]] = []

    def keep(_: Any, __: str, event_dict: Any) -> str:
        seen.append(dict(event_dict))
        return ""

    structlog.configure(processors=[keep], logger_factory=structlog.ReturnLoggerFactory())

    async def leaky(ctx: PhaseContext) -> None:
        raise ConnectionError(f"cannot reach {DSN} (token {SECRET})")

    with pytest.raises(StartupFailed):
        await run_startup(
            startup_of(Phase(name="db", run=leaky)),
            settings=load_settings(environment="test"),
            store=MemoryHistoryStore(),
            policy=StrictPolicy(),
        )
    (finished,) = (e for e in seen if e["event"] == "smd.phase.finished")
    assert "db.internal" in finished["error"]  # the message is there...
    assert SECRET not in repr(seen)  # ...masked in every field of every event
    assert URL_PASSWORD not in repr(seen)


async def test_console_rendering_also_redacts() -> None:
    register_secret(SECRET)
    buf = Tty()
    configure_logging("auto", "info", stream=buf)
    get_logger("smd").info("smd.test", dsn=DSN, token=SECRET)
    logging.getLogger("myapp").info("url %s", DSN)
    text = buf.getvalue()
    assert "smd.test" in text
    assert "url postgresql://app:" in text
    assert SECRET not in text
    assert URL_PASSWORD not in text
