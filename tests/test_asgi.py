"""The ASGI way in: health verdicts, the lifespan (state, composition, teardown), failures.

No server here: the lifespan protocol is driven by hand (like uvicorn does,
with a ``state`` dict) and requests go through ``httpx.ASGITransport``. The
real uvicorn + PostgreSQL runs are in ``test_uvicorn_e2e.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, assert_type

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from smd import (
    Failure,
    FailureKind,
    PhaseContext,
    PhaseError,
    Startup,
    StartupFailed,
    load_settings,
    run_startup,
)
from smd._health import evaluate
from smd.asgi import (
    StartupInterrupted,
    health_app,
    health_router,
    phase_value,
    smd_lifespan,
    with_lifespan,
)
from smd.bypass import PermissivePolicy, StrictPolicy
from smd.events import Event, PhaseStarted, ReadinessChanged
from smd.history import MemoryHistoryStore
from smd.readiness import Readiness

ASGI = Callable[..., Any]


# -- driving the lifespan by hand, as a server does ------------------------------------


@asynccontextmanager
async def served(app: ASGI) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    """Start ``app``'s lifespan, yield a client whose requests see the lifespan state.

    Raises ``LifespanFailed`` (with the app's message and exception) when the
    app answers ``lifespan.startup.failed``.
    """
    state: dict[str, Any] = {}
    to_app_send, to_app_recv = anyio.create_memory_object_stream[dict[str, Any]](10)
    from_app_send, from_app_recv = anyio.create_memory_object_stream[dict[str, Any]](10)
    errors: list[BaseException] = []

    async def run() -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
        try:
            await app(scope, to_app_recv.receive, from_app_send.send)
        except BaseException as exc:
            errors.append(exc)
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise

    async def with_state(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    failed: dict[str, Any] | None = None
    async with (
        to_app_send,
        to_app_recv,
        from_app_send,
        from_app_recv,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(run)
        await to_app_send.send({"type": "lifespan.startup"})
        answer = await from_app_recv.receive()
        if answer["type"] == "lifespan.startup.complete":
            transport = httpx.ASGITransport(app=with_state)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client, state
            await to_app_send.send({"type": "lifespan.shutdown"})
            answer = await from_app_recv.receive()
            if answer["type"] != "lifespan.shutdown.complete":
                failed = answer
        else:
            failed = answer
    if failed is not None:
        raise LifespanFailed(failed, errors)


class LifespanFailed(Exception):
    def __init__(self, message: dict[str, Any], errors: list[BaseException]) -> None:
        super().__init__(message.get("message", message["type"]))
        self.message = message
        self.errors = errors


def settings(env: str = "test") -> Any:
    return load_settings(environment=env, history_enabled=False, progress_interval=60)


def lifespan_for(startup: Startup, **kwargs: Any) -> Any:
    kwargs.setdefault("settings", settings())
    kwargs.setdefault("store", MemoryHistoryStore())
    return smd_lifespan(startup, **kwargs)


def infra_error(message: str = "dependency refused") -> PhaseError:
    return PhaseError(Failure(FailureKind.INFRASTRUCTURE, message))


# -- verdicts --------------------------------------------------------------------------


DB_BYPASSED = (
    "db: infrastructure failure bypassed: permissive mode: startup continues degraded "
    "(infrastructure failure in phase 'db')"
)


async def readiness_in(state: str) -> Readiness:
    """A readiness fed the events of a real run of one phase, ``db``, ending in ``state``.

    For ``starting`` it has seen the run up to ``db`` starting (the run is
    then cancelled, after the copy stopped listening).
    """
    startup = Startup("verdicts", bypass=PermissivePolicy() if state == "degraded" else None)
    running = anyio.Event()

    @startup.phase(timeout=60)
    async def db(ctx: PhaseContext) -> None:
        if state == "starting":
            running.set()
            await anyio.sleep_forever()
        if state in ("degraded", "failed"):
            raise infra_error("db refused")

    mirror = Readiness("verdicts")
    listening = [True]

    def forward(event: Event) -> None:
        if listening[0]:
            mirror(event)
        if state == "starting" and isinstance(event, PhaseStarted):
            listening[0] = False

    options: dict[str, Any] = {
        "settings": settings(),
        "store": MemoryHistoryStore(),
        "observers": [forward],
    }
    if state == "starting":
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_startup(startup, **options))
            await running.wait()
            tg.cancel_scope.cancel()
    else:
        try:
            await run_startup(startup, **options)
        except StartupFailed:
            assert state == "failed"
    assert mirror.state.value == state
    return mirror


@pytest.mark.parametrize(
    ("state", "startupz", "readyz", "readyz_strict", "livez"),
    [
        ("starting", 503, 503, 503, 200),
        ("ready", 200, 200, 200, 200),
        ("degraded", 200, 200, 503, 200),
        ("failed", 503, 503, 503, 200),
    ],
)
async def test_verdicts_per_state(
    state: str, startupz: int, readyz: int, readyz_strict: int, livez: int
) -> None:
    r = await readiness_in(state)
    assert evaluate("startupz", r).status == startupz
    assert evaluate("readyz", r).status == readyz
    assert evaluate("readyz", r, degraded_ready=False).status == readyz_strict
    assert evaluate("livez", r).status == livez
    body = evaluate("readyz", r).body
    assert body["state"] == state
    expected = {"starting": "running", "ready": "ok", "degraded": "bypassed", "failed": "failed"}
    assert body["phases"]["db"]["outcome"] == expected[state]
    # ``since``: the last change of state, as ISO-8601 UTC text.
    assert isinstance(body["since"], str)
    assert body["since"].endswith("Z")
    since = datetime.fromisoformat(body["since"])
    assert since.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - since).total_seconds()) < 3600


def test_verdict_without_any_startup_is_starting_but_alive() -> None:
    assert evaluate("startupz", None).status == 503
    assert evaluate("readyz", None).body["state"] == "starting"
    assert evaluate("livez", None).status == 200


async def test_degraded_body_carries_reasons() -> None:
    body = evaluate("readyz", await readiness_in("degraded")).body
    assert body["status"] == "ok"
    assert body["reasons"] == [DB_BYPASSED]
    assert body["degraded_ready"] is True


def test_unknown_check_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown check 'healthz'"):
        evaluate("healthz", None)


# -- the pure ASGI health app ------------------------------------------------------------


async def test_health_app_mounted_under_a_prefix() -> None:
    r = await readiness_in("degraded")
    app = Starlette(routes=[Mount("/health", app=health_app(r, degraded_ready=False))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        ready = await client.get("/health/readyz")
        assert ready.status_code == 503
        assert ready.json()["state"] == "degraded"
        assert ready.headers["cache-control"] == "no-store"
        assert (await client.get("/health/startupz")).status_code == 200
        live = await client.get("/health/livez")
        assert live.status_code == 200
        assert "phases" not in live.json()
        head = await client.head("/health/startupz")
        assert head.status_code == 200
        assert head.content == b""
        missing = await client.get("/health/healthz")
        assert missing.status_code == 404
        assert "/readyz" in missing.json()["endpoints"]
        post = await client.post("/health/readyz")
        assert post.status_code == 405
        assert post.headers["allow"] == "GET, HEAD"


async def test_health_app_follows_a_callable_source() -> None:
    current: list[Readiness | None] = [None]
    app = health_app(lambda: current[0])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert (await client.get("/readyz")).status_code == 503
        current[0] = await readiness_in("ready")
        assert (await client.get("/readyz")).status_code == 200


# -- the lifespan ------------------------------------------------------------------------


def make_startup(events: list[str], *, fail: str | None = None, bypass: Any = None) -> Startup:
    startup = Startup("asgi-test", bypass=bypass or StrictPolicy())

    async def down_config(value: Any) -> None:
        events.append("teardown config")

    async def down_pool(value: Any) -> None:
        events.append("teardown pool")

    @startup.phase(teardown=down_config)
    async def config(ctx: PhaseContext) -> dict[str, str]:
        events.append("phase config")
        return {"greeting": "hello"}

    @startup.phase(requires=["config"], teardown=down_pool)
    async def pool(ctx: PhaseContext) -> str:
        events.append("phase pool")
        if fail == "pool":
            raise infra_error("pool server refused")
        return f"{ctx['config']['greeting']} pool"

    return startup


def app_with(startup: Startup, events: list[str], **kwargs: Any) -> Starlette:
    @asynccontextmanager
    async def own(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append(f"app enter (pool={app.state.pool!r})")
        yield {"own": "mine"}
        events.append("app exit")

    async def hello(request: StarletteRequest) -> JSONResponse:
        return JSONResponse(
            {
                "pool": request.state.pool,
                "greeting": request.state.config["greeting"],
                "own": request.state.own,
                "state": request.state.smd.report.state.value,
                "readiness": request.state.readiness.state.value,
            }
        )

    return Starlette(
        routes=[Route("/hello", hello), Mount("/", app=health_app())],
        lifespan=lifespan_for(startup, lifespan=own, **kwargs),
    )


async def test_lifespan_state_composition_and_reverse_teardown() -> None:
    events: list[str] = []
    app = app_with(make_startup(events), events)
    async with served(app) as (client, state):
        hello = await client.get("/hello")
        assert hello.status_code == 200, hello.text
        assert hello.json() == {
            "pool": "hello pool",
            "greeting": "hello",
            "own": "mine",
            "state": "ready",
            "readiness": "ready",
        }
        assert app.state.pool == "hello pool"
        assert state["smd"].values["config"] == {"greeting": "hello"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["phases"]["pool"]["outcome"] == "ok"
        assert (await client.get("/startupz")).status_code == 200
        assert events == ["phase config", "phase pool", "app enter (pool='hello pool')"]
    assert events[3:] == ["app exit", "teardown pool", "teardown config"]


async def test_fastapi_router_reads_the_lifespan_state() -> None:
    events: list[str] = []
    startup = make_startup(events, fail="pool", bypass=PermissivePolicy())
    app = FastAPI(lifespan=lifespan_for(startup, degraded_ready=False))
    app.include_router(health_router(prefix="/health"))

    @app.get("/greeting")
    async def greeting(request: Request) -> dict[str, Any]:
        return {
            "greeting": request.state.config["greeting"],
            "has_pool": hasattr(request.state, "pool"),
        }

    async with served(app) as (client, _):
        ready = await client.get("/health/readyz")
        assert ready.status_code == 503  # degraded, and this app said degraded is not ready
        body = ready.json()
        assert body["state"] == "degraded"
        assert body["degraded_ready"] is False
        assert body["reasons"] == [
            "pool: infrastructure failure bypassed: permissive mode: startup continues degraded "
            "(infrastructure failure in phase 'pool')"
        ]
        assert body["phases"]["pool"]["outcome"] == "bypassed"
        assert (await client.get("/health/startupz")).status_code == 200
        assert (await client.get("/health/livez")).status_code == 200
        head = await client.head("/health/readyz")
        assert head.status_code == 503
        assert (await client.get("/greeting")).json() == {"greeting": "hello", "has_pool": False}
        paths = app.openapi()["paths"]
        assert {"/health/startupz", "/health/readyz", "/health/livez"} <= set(paths)
    # Only the phase that completed is torn down.
    assert events == ["phase config", "phase pool", "teardown config"]


async def test_degraded_then_recovered_in_the_background() -> None:
    probes: list[int] = []

    async def recover(ctx: PhaseContext) -> bool:
        probes.append(len(probes) + 1)
        if len(probes) < 2:  # the first probe still fails, the second answers
            raise infra_error("still refused")
        return True

    startup = Startup("heals", bypass=PermissivePolicy())

    @startup.phase(recovery=recover)
    async def cache(ctx: PhaseContext) -> None:
        raise infra_error("cache refused")

    healed_event = anyio.Event()

    def on_change(event: Event) -> None:  # an observer, like any user's
        if isinstance(event, ReadinessChanged) and event.snapshot.state.value == "ready":
            assert event.previous.value == "degraded"
            healed_event.set()

    app = Starlette(
        routes=[Mount("/", app=health_app())],
        lifespan=lifespan_for(startup, observers=[on_change]),
    )
    async with served(app) as (client, state):
        first = (await client.get("/readyz")).json()
        assert first["state"] == "degraded"
        assert first["reasons"][0].startswith("cache: infrastructure failure bypassed")
        with anyio.fail_after(30):  # backoff starts at <= 0.5 s; 30 s means "never"
            await healed_event.wait()
        healed = (await client.get("/readyz")).json()
        assert healed["reasons"] == []
        assert healed["phases"]["cache"]["recovered"] is True
        assert healed["phases"]["cache"]["outcome"] == "bypassed"
        assert probes == [1, 2]
        assert state["readiness"].state.value == "ready"


class Cache:
    """What the ``cache`` phase's recovery probe returns: a client, typed."""

    def __init__(self, probes: int) -> None:
        self.probes = probes


async def test_recovered_value_reaches_new_requests_and_the_accessor() -> None:
    probes: list[int] = []
    go = anyio.Event()

    async def recover(ctx: PhaseContext) -> Cache:
        probes.append(len(probes) + 1)
        await go.wait()  # the test says when the dependency answers
        return Cache(len(probes))

    startup = Startup("heals-with-a-value", bypass=PermissivePolicy())

    @startup.phase(recovery=recover)
    async def cache(ctx: PhaseContext) -> Cache:
        raise infra_error("cache refused")

    @startup.phase()
    async def config(ctx: PhaseContext) -> str:
        return "conf"

    healed = anyio.Event()

    def on_change(event: Event) -> None:
        if isinstance(event, ReadinessChanged) and event.snapshot.state.value == "ready":
            healed.set()

    async def look(request: StarletteRequest) -> JSONResponse:
        try:
            got: Cache | None = phase_value(request, "cache", Cache)
        except LookupError as exc:
            got, error = None, str(exc)
        else:
            error = ""
        return JSONResponse(
            {
                "state": getattr(request.state, "cache", None) is not None,
                "app_state": getattr(request.app.state, "cache", None) is not None,
                "accessor": got.probes if got is not None else None,
                "default": phase_value(request.scope, "cache", default="none") == "none",
                "error": error,
            }
        )

    app = Starlette(
        routes=[Route("/look", look), Mount("/", app=health_app())],
        lifespan=lifespan_for(startup, observers=[on_change]),
    )
    async with served(app) as (client, state):
        before = (await client.get("/look")).json()
        assert before == {
            "state": False,
            "app_state": False,
            "accessor": None,
            "default": True,
            "error": "phase 'cache' has no value: it ended bypassed and has not recovered "
            "[cache: infrastructure failure bypassed: permissive mode: startup continues "
            "degraded (infrastructure failure in phase 'cache')]; the startup is degraded",
        }
        go.set()
        with anyio.fail_after(30):  # 30 s means "never": the probe answers at once
            await healed.wait()
        after = (await client.get("/look")).json()
        assert after == {
            "state": True,  # a request that arrived after the recovery
            "app_state": True,
            "accessor": 1,
            "default": False,
            "error": "",
        }
        assert isinstance(state["smd"].values["cache"], Cache)
        assert state["smd"] is state["smd.run"]  # smd's own keys are left alone
        # The typed accessor checks what it hands out.
        scope = {"type": "http", "state": dict(state)}
        with pytest.raises(TypeError, match="phase 'config' returned a str, not a Cache"):
            phase_value(scope, "config", Cache)
        assert phase_value(scope, "config", str) == "conf"
        # Typed for the checker (mypy runs over the tests): a class gives that type.
        assert_type(phase_value(scope, "config", str), str)
        assert_type(phase_value(scope, "cache", Cache, default=None), Cache | None)
        with pytest.raises(LookupError, match="has no phase 'cahce'; its phases: cache, config"):
            phase_value(scope, "cahce", default=None)
        with pytest.raises(LookupError, match="no smd run serves this request"):
            phase_value({"type": "http"}, "cache")
        with pytest.raises(TypeError, match="needs an ASGI scope or a request"):
            phase_value(object(), "cache")


async def test_failed_startup_raises_with_summary_and_rolls_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    events: list[str] = []
    app = app_with(make_startup(events, fail="pool"), events)
    with pytest.raises(LifespanFailed) as info:
        async with served(app):
            pytest.fail("the app must not serve after a failed startup")
    # The server hears "startup failed" with the traceback of StartupFailed ...
    assert "StartupFailed" in info.value.message["message"]
    assert any(isinstance(e, StartupFailed) for e in info.value.errors)
    # ... the completed phase was torn down, the app's own lifespan never ran ...
    assert events == ["phase config", "phase pool", "teardown config"]
    # ... and the operator reads the summary on stderr.
    err = capsys.readouterr().err
    assert "STARTUP FAILED: asgi-test (test)" in err
    assert "phase:    pool" in err
    assert "kind:     infrastructure" in err
    assert app.state.readiness.state.value == "failed"


async def test_readiness_is_on_app_state_before_the_phases_run() -> None:
    """A health app served apart (reading ``app.state``) sees ``starting``, then the verdict."""
    app = Starlette()
    seen: list[tuple[str, int]] = []
    startup = Startup("early")

    @startup.phase()
    async def look(ctx: PhaseContext) -> None:
        readiness = app.state.readiness
        seen.append((readiness.state.value, evaluate("startupz", readiness).status))

    async with lifespan_for(startup)(app):
        assert app.state.readiness.state.value == "ready"
        assert evaluate("startupz", app.state.readiness).status == 200
    assert seen == [("starting", 503)]


async def test_failed_startup_raises_startup_failed_from_the_context() -> None:
    events: list[str] = []
    startup = make_startup(events, fail="pool")
    factory = lifespan_for(startup)
    with pytest.raises(StartupFailed) as info:
        async with factory(Starlette()):
            pytest.fail("must not yield")
    assert info.value.report.failed_phase is not None
    assert info.value.report.failed_phase.name == "pool"
    assert info.value.report.exit_code() == 75


async def test_app_own_lifespan_error_is_raised_as_is_and_phases_torn_down() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def broken(app: Any) -> AsyncIterator[None]:
        raise RuntimeError("the app's own startup broke")
        yield

    factory = lifespan_for(make_startup(events), lifespan=broken)
    with pytest.raises(RuntimeError, match="the app's own startup broke"):
        async with factory(Starlette()):
            pytest.fail("must not yield")
    assert events == ["phase config", "phase pool", "teardown pool", "teardown config"]


async def test_generator_style_app_lifespan_composes() -> None:
    events: list[str] = []

    async def own(app: Any) -> AsyncIterator[None]:
        events.append("app enter")
        yield
        events.append("app exit")

    factory = lifespan_for(make_startup(events), lifespan=own)
    async with factory(Starlette()) as state:
        assert state["pool"] == "hello pool"
        assert set(state) >= {"smd", "readiness", "config", "pool"}
    assert events == [
        "phase config",
        "phase pool",
        "app enter",
        "app exit",
        "teardown pool",
        "teardown config",
    ]


def test_invalid_plan_fails_when_the_lifespan_is_built() -> None:
    startup = Startup("bad")

    @startup.phase(requires=["nowhere"])
    async def a(ctx: PhaseContext) -> None:
        return None

    with pytest.raises(ValueError, match="nowhere"):
        smd_lifespan(startup)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_sigterm_while_phases_run_cancels_tears_down_and_chains_the_server_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    events: list[str] = []
    heard: list[int] = []
    started = anyio.Event()
    startup = Startup("stuck", bypass=StrictPolicy())

    async def down(value: Any) -> None:
        events.append("teardown config")

    @startup.phase(teardown=down)
    async def config(ctx: PhaseContext) -> int:
        return 1

    @startup.phase(requires=["config"], timeout=60)
    async def blackholed(ctx: PhaseContext) -> None:
        started.set()
        await anyio.sleep_forever()

    def server_handler(signum: int, frame: Any) -> None:  # stands in for uvicorn's
        heard.append(signum)

    previous = signal.signal(signal.SIGTERM, server_handler)
    try:
        factory = lifespan_for(startup)

        async def send_sigterm() -> None:
            await started.wait()
            os.kill(os.getpid(), signal.SIGTERM)

        with anyio.fail_after(30):  # the phase's own deadline is 60 s
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_sigterm)
                with pytest.raises(StartupInterrupted) as info:
                    async with factory(Starlette()):
                        pytest.fail("must not yield")
        assert signal.getsignal(signal.SIGTERM) is server_handler  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert heard == [signal.SIGTERM]
    assert events == ["teardown config"]
    report = info.value.report
    assert report.interrupted == "sigterm"
    assert report.exit_code() == 143
    assert report.phase("blackholed").outcome.value == "cancelled"
    assert "interrupted by SIGTERM; teardown ran" in capsys.readouterr().err


# -- the container examples agree with smd ---------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _dockerfile_instruction(text: str, name: str) -> list[str]:
    match = re.search(rf"^{name}\s+(\[.*\])\s*$", text, re.M)
    assert match is not None, f"no exec-form {name} in examples/Dockerfile"
    value: list[str] = json.loads(match.group(1))
    return value


def _probe(text: str, name: str) -> dict[str, str]:
    match = re.search(rf"^( *){name}:\n((?:\1 +.*\n)+)", text, re.M)
    assert match is not None, f"no {name} in examples/kubernetes.yaml"
    return dict(
        re.findall(
            r"^ *(path|port|periodSeconds|failureThreshold|timeoutSeconds): *(\S+)",
            match.group(2),
            re.M,
        )
    )


def _env_value(text: str, name: str) -> str:
    match = re.search(rf"- name: {name}\n +value: \"?([^\"\n]+)\"?", text)
    assert match is not None, f"{name} is not set in examples/kubernetes.yaml"
    return match.group(1)


async def test_kubernetes_probes_hit_smd_endpoints_within_smd_deadlines() -> None:
    text = (REPO / "examples" / "kubernetes.yaml").read_text()
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:  # PyYAML is not a dependency; the text checks below suffice
        pass
    else:
        docs = [d for d in yaml.safe_load_all(text) if d]
        container = docs[0]["spec"]["template"]["spec"]["containers"][0]
        assert container["startupProbe"]["httpGet"]["path"] == "/startupz"
    startup, ready, live = (
        _probe(text, p) for p in ("startupProbe", "readinessProbe", "livenessProbe")
    )
    assert (startup["path"], ready["path"], live["path"]) == ("/startupz", "/readyz", "/livez")
    # Every probe path is answered by smd's endpoints (a 404 would be a typo).
    app = health_app(await readiness_in("ready"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for probe in (startup, ready, live):
            assert (await c.get(probe["path"])).status_code == 200
    # The startup window covers the gate and the lifespan, each capped by the budget.
    budget = float(_env_value(text, "SMD_STARTUP_BUDGET"))
    window = int(startup["periodSeconds"]) * int(startup["failureThreshold"])
    assert window >= 2 * budget
    assert window >= load_settings().startup_budget  # also when the override is dropped
    grace = int(re.search(r"terminationGracePeriodSeconds: *(\d+)", text).group(1))  # type: ignore[union-attr]
    assert grace > float(_env_value(text, "SMD_PHASE_TIMEOUT"))
    # The container port is the one uvicorn listens on in the Dockerfile.
    cmd = _dockerfile_instruction((REPO / "examples" / "Dockerfile").read_text(), "CMD")
    assert re.search(r"containerPort: *" + cmd[cmd.index("--port") + 1], text)


def test_dockerfile_cmd_names_a_loadable_startup_and_the_app() -> None:
    text = (REPO / "examples" / "Dockerfile").read_text()
    # An exact Python version (pinned), and no gate: the app's lifespan runs
    # the phases once per container (issue 15).
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+( AS \w+)?$", text, re.M)
    assert not re.search(r"^ENTRYPOINT ", text, re.M)
    cmd = _dockerfile_instruction(text, "CMD")
    assert cmd[0] == "uvicorn"
    module, _, attr = cmd[1].partition(":")
    assert (REPO / (module.replace(".", "/") + ".py")).is_file()
    assert attr == "app"
    for source in re.findall(r"^COPY (?:--\S+ )*(\S+(?: \S+)*) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"COPY source {path} missing"
    # The app's startup plans (dry run: no network) from the build context.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    plan = subprocess.run(
        [
            sys.executable,
            "-m",
            "smd",
            "plan",
            f"{module.replace('.', '/')}.py:startup",
            "--format",
            "json",
        ],
        cwd=REPO,
        env={**env, "SMD_ENVIRONMENT": "production", "SMD_HISTORY_ENABLED": "false"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["startup"] == "fastapi-example"


def test_importing_smd_asgi_does_not_import_a_web_framework() -> None:
    probe = (
        "import sys, smd, smd.asgi\n"
        "web = ('starlette', 'fastapi', 'litestar', 'quart', 'django')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in web)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


# -- with_lifespan: any ASGI app, driven ----------------------------------------------


def plain_app(calls: list[str], *, lifespan: str = "refuse") -> ASGI:
    """A framework-less ASGI app: echoes the phase values it finds in ``scope["state"]``.

    ``lifespan``: ``refuse`` (raises, as Django's handler does), ``fail``
    (answers ``startup.failed``) or ``ok`` (a protocol-speaking app, like Quart).
    """

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            if lifespan == "refuse":
                raise ValueError("this app can only handle HTTP")
            message = await receive()
            assert message["type"] == "lifespan.startup"
            calls.append(f"own startup (pool={scope['state'].get('pool')!r})")
            if lifespan == "fail":
                await send({"type": "lifespan.startup.failed", "message": "own hook broke"})
                return
            scope["state"]["own"] = "mine"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            calls.append("own shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        state = scope.get("state", {})
        body = json.dumps(
            {
                "path": scope["path"],
                "pool": phase_value(scope, "pool", str),
                "state_pool": state.get("pool"),
                "own": state.get("own"),
            }
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.mark.parametrize("inner", ["refuse", "ok"])
async def test_with_lifespan_drives_an_app_serves_health_and_fills_the_state(inner: str) -> None:
    events: list[str] = []
    app = with_lifespan(
        plain_app(events, lifespan=inner),
        lifespan=lifespan_for(make_startup(events)),
        health_prefix="/health",
    )
    async with served(app) as (client, _):
        ready = await client.get("/health/readyz")
        assert ready.status_code == 200
        assert ready.json()["phases"]["pool"]["outcome"] == "ok"
        assert (await client.get("/health/livez")).json()["check"] == "livez"
        got = (await client.get("/readyz")).json()  # not a health path: the app's
        own = "mine" if inner == "ok" else None
        assert got == {
            "path": "/readyz",
            "pool": "hello pool",
            "state_pool": "hello pool",
            "own": own,
        }
    expected = ["phase config", "phase pool"]
    if inner == "ok":  # its own lifespan inside: after the phases, shut down before teardown
        expected += ["own startup (pool='hello pool')", "own shutdown"]
    assert events == [*expected, "teardown pool", "teardown config"]


async def test_with_lifespan_app_that_must_answer_or_fails_its_start() -> None:
    for inner, mode, message in [
        ("refuse", "on", "the app did not answer the lifespan startup: ValueError"),
        ("fail", "auto", "the app's own lifespan failed: own hook broke"),
    ]:
        events: list[str] = []
        app = with_lifespan(
            plain_app(events, lifespan=inner),
            lifespan=lifespan_for(make_startup(events)),
            inner_lifespan=mode,  # type: ignore[arg-type]
        )
        with pytest.raises(LifespanFailed) as info:
            async with served(app):
                pytest.fail("must not start")
        assert info.value.message["type"] == "lifespan.startup.failed"
        assert info.value.message["message"].startswith(message)
        assert info.value.errors == []  # answered, not raised: no traceback under uvicorn
        assert events[-2:] == ["teardown pool", "teardown config"]


async def test_with_lifespan_failed_startup_answers_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    events: list[str] = []
    startup = make_startup(events, fail="pool")
    app = with_lifespan(plain_app(events), lifespan=lifespan_for(startup))
    with pytest.raises(LifespanFailed) as info:
        async with served(app):
            pytest.fail("must not start")
    assert info.value.message["message"] == (
        "smd: startup 'asgi-test' did not start (exit code 75); see the summary above"
    )
    assert info.value.errors == []
    assert "STARTUP FAILED: asgi-test" in capsys.readouterr().err
    assert events == ["phase config", "phase pool", "teardown config"]


def test_with_lifespan_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError, match="needs lifespan=smd_lifespan"):
        with_lifespan(plain_app([]), lifespan=None)
    with pytest.raises(ValueError, match="inner_lifespan must be 'auto', 'on' or 'off'"):
        with_lifespan(plain_app([]), lifespan=lifespan_for(make_startup([])), inner_lifespan="yes")  # type: ignore[arg-type]


async def test_with_lifespan_teardown_error_is_a_failed_shutdown_with_its_traceback() -> None:
    startup = Startup("breaks-at-exit")

    async def close(value: Any) -> None:
        raise RuntimeError("the pool would not close")

    @startup.phase(teardown=close)
    async def pool(ctx: PhaseContext) -> str:
        return "hello pool"

    app = with_lifespan(plain_app([]), lifespan=lifespan_for(startup))
    with pytest.raises(LifespanFailed) as info:
        async with served(app) as (client, _):
            assert (await client.get("/readyz")).status_code == 200
    assert info.value.message["type"] == "lifespan.shutdown.failed"
    assert "RuntimeError: the pool would not close" in info.value.message["message"]
