"""uvicorn as a real server (a subprocess on a loopback port) running
``examples/fastapi_app.py`` against the real PostgreSQL of the test bed.

Ready, degraded then healed, failed, SIGTERM during a blackholed startup,
and the Dockerfile's ``smd run ... -- uvicorn ...`` gate with exec.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pgbed.proxy import FaultProxy

from smd.clock import SystemClock
from smd.history import open_store
from smd.timeouts import Series

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
APP = "examples.fastapi_app:app"
# Generous waits for a process to get somewhere; none is a timing claim.
PATIENCE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One server subprocess; its output goes to a file (a full pipe would block it)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.port = port
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=self._out, stderr=subprocess.STDOUT
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def wait_serving(self) -> bool:
        """True once ``/livez`` answers; False if the process exited first."""
        end = time.monotonic() + PATIENCE
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            try:
                if self.get("/livez").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server neither served nor exited:\n{self.output()}")

    def wait_output(self, needle: str) -> None:
        end = time.monotonic() + PATIENCE
        while needle not in self.output():
            if time.monotonic() > end or self.proc.poll() is not None:
                raise AssertionError(f"{needle!r} never logged:\n{self.output()}")
            time.sleep(0.05)

    def wait_exit(self, timeout: float = PATIENCE) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server did not exit:\n{self.output()}") from None

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


class Servers:
    """Servers started for one test (each on a free port, its output in ``tmp_path``), closed together.

    Every server gets the test bed's database, an environment, a history
    file of the test's own, JSON logs and no other ``SMD_*`` setting of the
    caller's environment.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Server] = []

    def start(
        self, argv: list[str], dsn: str, environment: str, *, name: str = "server", **extra: str
    ) -> Server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
        env.update(
            {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "SMD_DATABASE_URL": dsn,
                "SMD_ENVIRONMENT": environment,
                "SMD_HISTORY_PATH": str(self.tmp_path / "history.sqlite3"),
                "SMD_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
                **extra,
            }
        )
        argv = [*argv, "--host", "127.0.0.1", "--port", str(port)]
        server = Server(argv, env, self.tmp_path / f"{name}-{len(self.started)}.log", port)
        self.started.append(server)
        return server

    def close(self) -> None:
        for server in self.started:
            server.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(dsn, env, *, argv=None, **settings)`` -> a started uvicorn `Server` (the FastAPI example)."""
    servers = Servers(tmp_path)

    def start(dsn: str, environment: str, *, argv: list[str] | None = None, **extra: str) -> Server:
        return servers.start(
            argv or [sys.executable, "-m", "uvicorn", APP], dsn, environment, **extra
        )

    yield start
    servers.close()


def stop_gracefully(server: Server) -> None:
    """SIGTERM while serving: uvicorn drains, the lifespan tears down, and
    uvicorn then re-delivers the signal to itself (exit status 143 in a shell)."""
    server.proc.send_signal(signal.SIGTERM)
    code = server.wait_exit()
    out = server.output()
    assert code == -signal.SIGTERM, out
    assert "Application shutdown complete." in out


def password_of(dsn: str) -> str:
    return dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


def test_ready_serves_values_and_tears_down_on_sigterm(serve: Any, pg_dsn: str) -> None:
    server = serve(pg_dsn, "production")
    assert server.wait_serving(), server.output()
    ready = server.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["state"] == "ready"
    assert body["phases"]["database"]["outcome"] == "ok"
    assert server.get("/startupz").status_code == 200
    version = server.get("/version")
    assert version.status_code == 200
    assert version.json()["server_version"].startswith("15")
    index = server.get("/").json()
    assert index["phases"] == ["cache", "database"]
    assert server.get("/square/12").json() == {"n": 12, "square": 144}
    stop_gracefully(server)
    out = server.output()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    teardowns = [(e["phase"], e["ok"]) for e in events if e["event"] == "smd.phase.teardown"]
    assert teardowns == [("cache", True), ("database", True)]  # reverse plan order
    assert password_of(pg_dsn) not in out


def test_degraded_then_healed_when_the_database_comes_back(
    serve: Any, pg_dsn: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set_mode("refuse")
    # No history yet: the database phase gets the environment's default deadline.
    server = serve(fault_proxy.dsn(pg_dsn), "development", SMD_TIMEOUTS__DEVELOPMENT__DEFAULT="1")
    assert server.wait_serving(), server.output()
    degraded = server.get("/readyz")
    assert degraded.status_code == 200  # degraded is ready by default
    body = degraded.json()
    assert body["state"] == "degraded"
    assert body["reasons"][0].startswith("database: infrastructure failure bypassed")
    assert body["phases"]["database"]["outcome"] == "bypassed"
    assert server.get("/startupz").status_code == 200
    unavailable = server.get("/version")
    assert unavailable.status_code == 503
    assert unavailable.json()["state"] == "degraded"

    fault_proxy.set_mode("forward")
    end = time.monotonic() + PATIENCE
    while (state := server.get("/readyz").json())["state"] != "ready":
        assert time.monotonic() < end, f"never healed: {state}\n{server.output()}"
        time.sleep(0.1)
    assert state["reasons"] == []
    assert state["phases"]["database"]["recovered"] is True
    assert state["phases"]["database"]["time_to_ready"] > 0
    assert '"event": "smd.readiness.recovered"' in server.output()
    stop_gracefully(server)


def test_healed_database_is_usable_by_the_routes(
    serve: Any, pg_dsn: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set_mode("refuse")
    server = serve(fault_proxy.dsn(pg_dsn), "development", SMD_TIMEOUTS__DEVELOPMENT__DEFAULT="1")
    assert server.wait_serving(), server.output()
    fault_proxy.set_mode("forward")
    end = time.monotonic() + PATIENCE
    while server.get("/readyz").json()["state"] != "ready":
        assert time.monotonic() < end, server.output()
        time.sleep(0.1)
    assert server.get("/version").status_code == 200


def test_failed_startup_makes_uvicorn_exit_non_zero_with_the_summary(
    serve: Any, pg_dsn: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set_mode("refuse")
    server = serve(fault_proxy.dsn(pg_dsn), "production", SMD_TIMEOUTS__PRODUCTION__DEFAULT="1")
    assert not server.wait_serving()
    code = server.wait_exit()
    out = server.output()
    assert code == 3, out  # uvicorn's "startup failed" exit status
    assert "STARTUP FAILED: fastapi-example (production)" in out
    assert "  phase:    database" in out
    assert "  kind:     infrastructure" in out
    assert "  decision: fail: " in out
    assert '"event": "smd.startup.failed"' in out
    assert "Application startup failed. Exiting." in out
    assert password_of(pg_dsn) not in out
    # Starlette hands uvicorn the exception's traceback to log; smd has it log
    # one line instead (the summary above says it all).
    assert "Traceback" not in out, out
    assert "smd: startup 'fastapi-example' did not start (exit code 75)" in out, out


def test_at_debug_level_the_failed_startup_keeps_its_traceback(
    serve: Any, pg_dsn: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set_mode("refuse")
    server = serve(
        fault_proxy.dsn(pg_dsn),
        "production",
        SMD_TIMEOUTS__PRODUCTION__DEFAULT="1",
        SMD_LOG_LEVEL="debug",
    )
    assert not server.wait_serving()
    assert server.wait_exit() == 3
    out = server.output()
    assert "STARTUP FAILED: fastapi-example (production)" in out
    assert "Traceback" in out, out
    assert "smd.exceptions.StartupFailed" in out, out
    assert "did not start (exit code" not in out
    assert password_of(pg_dsn) not in out


def test_sigterm_during_a_blackholed_startup_tears_down_and_exits(
    serve: Any, pg_dsn: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set_mode("blackhole")
    # The database's deadline (60 s) is far beyond the wait below: exiting
    # proves the signal cancelled the startup, not the deadline.
    server = serve(
        fault_proxy.dsn(pg_dsn),
        "production",
        SMD_TIMEOUTS__PRODUCTION__DEFAULT="60",
        SMD_PHASE_TIMEOUT="60",
    )
    server.wait_output('"event": "smd.database.waiting"')
    server.wait_output('"phase": "cache", "outcome": "ok"')
    server.proc.send_signal(signal.SIGTERM)
    code = server.wait_exit(timeout=20)
    out = server.output()
    # A lifespan that did not start is uvicorn's "startup failed" (3); the
    # summary says the signal interrupted it.
    assert code == 3, out
    assert "interrupted by SIGTERM; teardown ran" in out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    teardowns = [(e["phase"], e["ok"]) for e in events if e["event"] == "smd.phase.teardown"]
    assert teardowns == [("cache", True)]
    failed = [e for e in events if e["event"] == "smd.startup.failed"]
    assert len(failed) == 1
    assert failed[0]["interrupted"] == "sigterm"
    assert failed[0]["exit_code"] == 143


def test_dockerfile_gate_execs_uvicorn_in_the_same_process(
    serve: Any, pg_dsn: str, tmp_path: Path
) -> None:
    # The documented gate for a server without an smd lifespan
    # (docs/ways-in/container.md), around the Dockerfile's own CMD.
    text = (REPO / "examples" / "Dockerfile").read_text()
    entrypoint = ["smd", "run", "examples/fastapi_app.py:startup", "--"]
    cmd = json.loads(text.split("\nCMD ", 1)[1].split("\n", 1)[0])
    # As written, minus the container's host/port (the fixture adds loopback + a free port).
    cmd = cmd[: cmd.index("--host")]
    server = serve(pg_dsn, "development", argv=[*entrypoint, *cmd])
    assert server.wait_serving(), server.output()
    assert server.get("/readyz").json()["state"] == "ready"
    out = server.output()
    assert "startup fastapi-example ready in" in out  # the gate's summary
    assert f"Started server process [{server.proc.pid}]" in out  # exec: same PID
    stop_gracefully(server)
    # The gate learned from this start; the app's re-run (database known up)
    # did not add a second, misleadingly fast, time-to-ready.
    store = open_store(
        _settings(tmp_path / "history.sqlite3"),
        readonly=True,
    )
    # The key names the startup (the gate's and the app's are the same startup).
    targets = [t for t in store.targets() if t.startswith("fastapi-example/postgres://")]
    assert len(targets) == 1, list(store.targets())
    assert targets[0].endswith("@development")
    assert store.targets()[targets[0]].startup == "fastapi-example"
    ready = store.load_many(targets, clock=SystemClock())[targets[0]].series(Series.READY)
    assert len(ready) == 1


def _settings(path: Path) -> Any:
    from smd import load_settings

    return load_settings(environment="development", history_path=path)
