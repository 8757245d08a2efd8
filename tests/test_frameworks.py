"""Litestar, Quart and Django ASGI under a real uvicorn, against the real PostgreSQL.

Each target (``tests/targets/fw_*.py``) serves the same startup (one
``database`` phase) and a ``/version`` route that reads the phase's value
with :func:`smd.asgi.phase_value`. The health endpoints must answer the same
statuses and bodies in every framework as :func:`smd.asgi.health_app` does
(FastAPI and Starlette: ``test_uvicorn_e2e.py``, ``test_asgi.py``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pgbed.proxy import FaultProxy
from test_uvicorn_e2e import PATIENCE, REPO, Server, Servers, password_of

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# FastAPI here through with_lifespan (its lifespan= way is test_uvicorn_e2e.py's).
FRAMEWORKS = ["litestar", "quart", "django", "fastapi"]
TARGETS = REPO / "tests" / "targets"
# The keys of each endpoint's body, as smd._health.evaluate writes them.
KEYS = {
    "startupz": {"check", "status", "state", "since", "reasons", "phases"},
    "readyz": {"check", "status", "state", "since", "reasons", "phases", "degraded_ready"},
    "livez": {"check", "status", "state", "since", "reasons"},
}
# Frameworks smd drives through with_lifespan: their failed start is one line.
WRAPPED = {"quart", "django", "fastapi"}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(framework, dsn, environment, **env)`` -> uvicorn serving ``fw_<framework>:app``."""
    servers = Servers(tmp_path)

    def start(framework: str, dsn: str, environment: str, **extra: str) -> Server:
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(TARGETS), f"fw_{framework}:app"]
        return servers.start(argv, dsn, environment, name=framework, **extra)

    yield start
    servers.close()


def health(server: Server, check: str) -> tuple[int, dict[str, Any]]:
    response = server.get(f"/{check}")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == KEYS[check], body
    assert body["check"] == check
    return response.status_code, body


def stop(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    code = server.wait_exit()
    out = server.output()
    assert code in (0, -signal.SIGTERM), out
    assert "Application shutdown complete." in out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ready_start_serves_health_and_the_phase_value(
    framework: str, serve: Any, pg_dsn: str
) -> None:
    server = serve(framework, pg_dsn, "production")
    assert server.wait_serving(), server.output()
    for check in ("startupz", "readyz", "livez"):
        status, body = health(server, check)
        assert status == 200, body
        assert (body["status"], body["state"]) == ("ok", "ready")
    assert health(server, "readyz")[1]["phases"]["database"]["outcome"] == "ok"
    head = server.client.head("/readyz")
    assert (head.status_code, head.content) == (200, b"")
    version = server.get("/version")
    assert version.status_code == 200, version.text
    assert version.json()["server_version"].startswith("15")
    assert version.json()["request_state"] is True
    if framework == "quart":
        assert version.json()["own_startup_ran"] is True  # its before_serving ran inside
    assert server.get("/no-such-page").status_code == 404  # the framework's own 404
    stop(server)
    out = server.output()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    teardowns = [(e["phase"], e["ok"]) for e in events if e["event"] == "smd.phase.teardown"]
    assert teardowns == [("database", True)], out
    assert password_of(pg_dsn) not in server.output()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_failed_strict_start_exits_non_zero_and_never_claims_ready(
    framework: str, serve: Any, pg_dsn: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set_mode("refuse")
    server = serve(
        framework, fault_proxy.dsn(pg_dsn), "production", SMD_TIMEOUTS__PRODUCTION__DEFAULT="1"
    )
    answers: list[int] = []
    end = time.monotonic() + PATIENCE
    while server.proc.poll() is None:
        assert time.monotonic() < end, server.output()
        with contextlib.suppress(httpx.TransportError):  # not listening (yet)
            answers.append(server.get("/readyz").status_code)
        time.sleep(0.05)
    assert 200 not in answers
    out = server.output()
    assert server.wait_exit() == 3, out  # uvicorn's "startup failed"
    assert "STARTUP FAILED: frameworks (production)" in out
    assert "  phase:    database" in out
    assert "Application startup failed. Exiting." in out
    # Wrapped or not, uvicorn logs one line for the start smd stopped, no traceback.
    assert "Traceback" not in out, out
    assert "smd: startup 'frameworks' did not start (exit code 75)" in out
    assert password_of(pg_dsn) not in out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_degraded_start_recovers_and_routes_see_the_recovered_value(
    framework: str, serve: Any, pg_dsn: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set_mode("refuse")
    server = serve(
        framework,
        fault_proxy.dsn(pg_dsn),
        "development",
        SMD_TIMEOUTS__DEVELOPMENT__DEFAULT="1",
    )
    assert server.wait_serving(), server.output()
    status, body = health(server, "readyz")
    assert (status, body["state"]) == (200, "degraded")  # degraded is ready by default
    assert body["phases"]["database"]["outcome"] == "bypassed"
    assert body["reasons"][0].startswith("database: infrastructure failure bypassed")
    assert health(server, "startupz")[0] == 200
    missing = server.get("/version")
    assert missing.status_code == 503, missing.text

    fault_proxy.set_mode("forward")
    end = time.monotonic() + PATIENCE
    while (state := health(server, "readyz")[1])["state"] != "ready":
        assert time.monotonic() < end, f"never recovered: {state}\n{server.output()}"
        time.sleep(0.1)
    assert state["phases"]["database"]["recovered"] is True
    version = server.get("/version")
    assert version.status_code == 200, version.text
    assert version.json()["server_version"].startswith("15")
    # A request that arrived after the recovery finds it in its state too.
    assert version.json()["request_state"] is True
    stop(server)
