"""Logging manners (issue 13): as a library smd leaves the host's logging alone.

Real servers in subprocesses: an app that configured stdlib logging itself
(``logging.basicConfig`` with ``%(process)d %(threadName)s``) runs
``smd_lifespan`` under uvicorn, gunicorn (uvicorn workers) and hypercorn:
each of its records is printed exactly once, root level and handlers and
``logging.logThreads`` / ``logProcesses`` / ``logMultiprocessing`` are
unchanged, and smd's events arrive through the ``smd`` logger in the app's
own format, at the app's level. With ``configure_logging=True`` smd renders
everything (its events, the app's records, uvicorn's) as one JSON stream.
And the example app (which opts in, ``configure_logging=True``: it is the
container's app) runs under ``gunicorn -w 4`` and hypercorn with no
"Logging error", each worker's startup and teardown logged (JSON lines carry
the worker's ``pid``).

Waits are generous bounds on a process getting somewhere; none is a timing claim.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PATIENCE = 60.0
PASSWORD = "hunter2-pw-31337"

# The host app: configures stdlib logging itself unless told to opt in.
APP = textwrap.dedent(
    f"""
    import logging
    import os
    from contextlib import asynccontextmanager

    OPT_IN = os.environ.get("APP_OPT_IN") == "1"
    if not OPT_IN:
        logging.basicConfig(
            level=os.environ.get("APP_LOG_LEVEL", "INFO"),
            format="%(process)d %(threadName)s %(levelname)s %(name)s: %(message)s",
        )

    import structlog
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from smd import PhaseContext, Startup
    from smd.asgi import smd_lifespan


    def logging_state():
        root = logging.getLogger()
        return {{
            "root_level": root.level,
            "root_handlers": [
                [type(h).__name__, h.get_name(), id(h), getattr(h.formatter, "_fmt", None)]
                for h in root.handlers
            ],
            "flags": [logging.logThreads, logging.logProcesses, logging.logMultiprocessing],
            "structlog_configured": structlog.is_configured(),
        }}


    BEFORE = logging_state()
    log = logging.getLogger("app")
    log.info("marker-import")
    startup = Startup("manners")


    async def close(value):
        log.info("marker-teardown")


    @startup.phase(teardown=close)
    async def cache(ctx: PhaseContext):
        log.info("marker-phase")
        ctx.log.info("app.ctx_log", entries=3)
        ctx.log.warning("app.ctx_warning", dsn="postgresql://app:{PASSWORD}@db:5432/app")
        return {{"n": 1}}


    @asynccontextmanager
    async def own(app):
        log.info("marker-lifespan")
        yield {{}}
        log.info("marker-shutdown")


    async def state(request):
        return JSONResponse({{"before": BEFORE, "now": logging_state(), "pid": os.getpid()}})


    async def request_log(request):
        log.warning("marker-request")
        return JSONResponse({{"pid": os.getpid()}})


    app = Starlette(
        routes=[Route("/state", state), Route("/log", request_log)],
        lifespan=smd_lifespan(startup, lifespan=own, configure_logging=OPT_IN),
    )
    """
)

APP_MARKERS = ("marker-phase", "marker-lifespan", "marker-shutdown", "marker-teardown")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One server subprocess; its output (stdout and stderr) goes to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT
        )
        self.port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.output().splitlines()

    def wait_for(self, what: str, done: Callable[[], bool]) -> None:
        end = time.monotonic() + PATIENCE
        while not done():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"exited ({self.proc.returncode}) before {what}:\n{self.output()}"
                )
            if time.monotonic() > end:
                raise AssertionError(f"never got to {what}:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit on SIGTERM:\n{self.output()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(argv, cwd=..., **env)`` -> a started `Server` with a clean smd environment."""
    servers: list[Server] = []

    def start(argv: list[str], *, cwd: Path = tmp_path, **extra: str) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMD_", "APP_"))}
        env.update(
            {
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONPATH": str(cwd),
                "PYTHONUNBUFFERED": "1",
                "SMD_ENVIRONMENT": "test",
                "SMD_HISTORY_PATH": str(tmp_path / "history.sqlite3"),
                **extra,
            }
        )
        server = Server(argv, env, cwd, tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "manners_app.py").write_text(APP)
    return tmp_path


def get(port: int, path: str) -> httpx.Response:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
        return client.get(path)


def answers(port: int, path: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return get(port, path).status_code == 200
        except httpx.TransportError:
            return False

    return check


def count(lines: list[str], needle: str) -> int:
    return sum(1 for line in lines if needle in line)


def uvicorn(port: int, app: str = "manners_app:app") -> list[str]:
    return [str(BIN / "python"), "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]


def gunicorn(port: int, app: str, workers: int, tmp: Path) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        "-k",
        "uvicorn.workers.UvicornWorker",
        "-w",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--control-socket",
        str(tmp / "gunicorn.ctl"),
        app,
    ]


def hypercorn(port: int, app: str, workers: int) -> list[str]:
    return [str(BIN / "hypercorn"), "-w", str(workers), "--bind", f"127.0.0.1:{port}", app]


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


# -- library mode ---------------------------------------------------------------------


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_uvicorn_app_with_basic_config_keeps_its_logging(
    serve: Callable[..., Server], app_dir: Path, level: str
) -> None:
    port = free_port()
    server = serve(uvicorn(port), APP_LOG_LEVEL=level)
    server.wait_for("/state", answers(port, "/state"))
    state = get(port, "/state").json()
    assert get(port, "/log").status_code == 200
    assert server.stop() == -signal.SIGTERM  # uvicorn drains, then re-raises the signal
    lines = server.lines()
    out = "\n".join(lines)
    pid = state["pid"]
    assert pid == server.proc.pid

    # Nothing in the host's logging changed, structlog included.
    assert state["now"] == state["before"], out
    before = state["before"]
    assert before["root_level"] == logging.getLevelName(level)
    assert len(before["root_handlers"]) == 1  # basicConfig's, with the app's format
    assert "%(process)d %(threadName)s" in before["root_handlers"][0][3]
    assert before["flags"] == [True, True, True]
    assert before["structlog_configured"] is False

    assert "Logging error" not in out
    assert not any(line.startswith("{") for line in lines), out  # nobody rendered JSON
    assert PASSWORD not in out
    # The app's records: once each, in its own format, pid and thread intact.
    prefix = f"{pid} MainThread "
    app_records = ["marker-request", *APP_MARKERS] if level == "INFO" else ["marker-request"]
    for marker in app_records:
        assert count(lines, marker) == 1, (marker, out)
        (line,) = (x for x in lines if marker in x)
        assert line.startswith(
            f"{prefix}{'WARNING' if marker == 'marker-request' else 'INFO'} app: "
        )
    # smd's events: through the `smd` logger, in the app's format, at the app's level.
    warning = [x for x in lines if "app.ctx_warning" in x]
    assert len(warning) == 1, out
    assert warning[0].startswith(
        f"{prefix}WARNING smd: app.ctx_warning startup=manners phase=cache"
    )
    assert "postgresql://app:***@db:5432/app" in warning[0]
    smd_info = [
        "smd: smd.startup.started startup=manners",
        "smd: smd.phase.finished startup=manners phase=cache outcome=ok",
        "smd: smd.startup.finished startup=manners state=ready",
        "smd: smd.phase.teardown startup=manners phase=cache ok=true",
        "smd: app.ctx_log startup=manners phase=cache entries=3",
    ]
    for needle in smd_info:
        assert count(lines, needle) == (1 if level == "INFO" else 0), (needle, out)
    if level == "WARNING":
        assert not any(" smd: " in x and " INFO " in x for x in lines), out
        for marker in APP_MARKERS:
            assert marker not in out
    # uvicorn's own lines stay uvicorn's, once each.
    assert count(lines, "Application startup complete.") == 1
    assert "INFO:     Application startup complete." in lines


@pytest.mark.parametrize("server_kind", ["gunicorn", "hypercorn"])
def test_each_worker_logs_through_the_apps_format_with_its_pid(
    serve: Callable[..., Server], app_dir: Path, tmp_path: Path, server_kind: str
) -> None:
    workers = 4 if server_kind == "gunicorn" else 2
    port = free_port()
    argv = (
        gunicorn(port, "manners_app:app", workers, tmp_path)
        if server_kind == "gunicorn"
        else hypercorn(port, "manners_app:app", workers)
    )
    server = serve(argv)
    started = re.compile(
        r"^(\d+) MainThread INFO smd: smd\.startup\.finished startup=manners state=ready"
    )

    def all_started() -> bool:
        return sum(1 for x in server.lines() if started.match(x)) >= workers

    server.wait_for(f"{workers} workers ready", all_started)
    assert server.stop() == 0, server.output()
    lines = server.lines()
    out = "\n".join(lines)
    assert "Logging error" not in out
    assert "Traceback" not in out
    assert PASSWORD not in out
    pids = {int(m.group(1)) for x in lines if (m := started.match(x))}
    assert len(pids) == workers, out
    if server_kind == "gunicorn":
        booted = {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", out)}
        assert booted == pids, out
    for pid in pids:
        mine = [x for x in lines if x.startswith(f"{pid} MainThread ")]
        for needle in (
            "INFO smd: smd.startup.finished startup=manners state=ready",
            "INFO smd: smd.phase.teardown startup=manners phase=cache ok=true",
            "INFO app: marker-phase",
            "INFO app: marker-teardown",
        ):
            assert count(mine, needle) == 1, (pid, needle, out)
    # The server's own lines kept their %(process)d: a real pid in each.
    server_pid = re.compile(r"^\[[^\]]+\] \[(\d+)\] \[INFO\] ")
    own = [int(m.group(1)) for x in lines if (m := server_pid.match(x))]
    assert own, out
    assert pids <= set(own), out


RUN_STARTUP = textwrap.dedent(
    """
    import io, json, logging, sys

    import anyio
    import structlog

    from smd import Phase, PhaseContext, Startup, load_settings, run_startup
    from smd.history import MemoryHistoryStore

    stream = io.StringIO()
    logging.basicConfig(level=logging.INFO, stream=stream,
                        format="%(process)d %(threadName)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()

    def state():
        return [root.level, list(root.handlers), logging.logThreads, logging.logProcesses,
                logging.logMultiprocessing, structlog.is_configured()]

    before = state()

    async def ok(ctx: PhaseContext) -> int:
        logging.getLogger("app").info("marker-app")
        return 1

    async def main() -> None:
        s = Startup("lib")
        s.add(Phase(name="one", run=ok))
        await run_startup(s, settings=load_settings(environment="test"), store=MemoryHistoryStore())

    anyio.run(main)
    after = state()
    with open(sys.argv[1], "w") as out:
        json.dump({"same": before == after, "log": stream.getvalue()}, out)
    """
)


def test_run_startup_as_a_library_logs_to_the_smd_logger(tmp_path: Path) -> None:
    """``run_startup`` (``lifecycle`` underneath) outside any server: the same manners."""
    script = tmp_path / "lib.py"
    script.write_text(RUN_STARTUP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "result.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert done.returncode == 0, done.stderr
    # Nothing went around the app's handler (structlog's default prints to stdout).
    assert done.stdout == ""
    assert done.stderr == ""
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["same"] is True
    lines = result["log"].splitlines()
    pid = r"\d+ MainThread"
    (app_line,) = [x for x in lines if "marker-app" in x]  # once
    assert re.fullmatch(rf"{pid} INFO app: marker-app", app_line)
    finished = [x for x in lines if "smd.startup.finished" in x]
    assert len(finished) == 1, lines
    assert re.match(rf"{pid} INFO smd: smd\.startup\.finished startup=lib state=ready", finished[0])


# -- opting in --------------------------------------------------------------------------


def test_opt_in_renders_smd_the_app_and_uvicorn_as_one_json_stream(
    serve: Callable[..., Server], app_dir: Path
) -> None:
    port = free_port()
    server = serve(uvicorn(port), APP_OPT_IN="1", SMD_LOG_FORMAT="json")
    server.wait_for("/state", answers(port, "/state"))
    state = get(port, "/state").json()
    assert get(port, "/log").status_code == 200
    assert server.stop() == -signal.SIGTERM  # uvicorn drains, then re-raises the signal
    lines = server.lines()
    out = "\n".join(lines)
    pid = server.proc.pid
    assert "Logging error" not in out
    assert PASSWORD not in out

    # smd took over on request: one handler of its own, the process flags kept.
    now = state["now"]
    assert [h[1] for h in now["root_handlers"]] == ["smd"]
    assert now["root_level"] == 20  # SMD_LOG_LEVEL's default, info
    assert now["flags"] == [True, True, True]
    assert now["structlog_configured"] is True

    # Before the lifespan ran, uvicorn printed its own lines; from smd's first
    # line on, every line is JSON (smd's, the app's and uvicorn's).
    first = next(i for i, line in enumerate(lines) if line.startswith("{"))
    assert lines[:first], out
    assert all(line.startswith("INFO:     ") for line in lines[:first]), out
    events = [json.loads(line) for line in lines[first:]]  # every line parses
    assert events[0]["event"] == "smd.startup.started"
    assert {e["pid"] for e in events} == {pid}

    def named(event: str, logger: str | None = None) -> list[dict[str, Any]]:
        return [e for e in events if e["event"] == event and e.get("logger") == logger]

    for marker in APP_MARKERS:
        assert len(named(marker, "app")) == 1, (marker, out)
    assert len(named("marker-request", "app")) == 1
    assert count(lines, "marker-") == len(APP_MARKERS) + 1  # marker-import: below the root level
    for text in (
        "Application startup complete.",
        "Shutting down",
        "Application shutdown complete.",
    ):
        assert len(named(text, "uvicorn.error")) == 1, (text, out)
        assert count(lines, text) == 1
    access = [e for e in events if e.get("logger") == "uvicorn.access"]
    # The wait's one answered poll, then the two requests above.
    assert [e["event"].split(" - ", 1)[1] for e in access] == [
        '"GET /state HTTP/1.1" 200',
        '"GET /state HTTP/1.1" 200',
        '"GET /log HTTP/1.1" 200',
    ]
    (warning,) = named("app.ctx_warning")
    assert warning["dsn"] == "postgresql://app:***@db:5432/app"
    assert (warning["startup"], warning["phase"]) == ("manners", "cache")
    (done,) = named("smd.startup.finished")
    assert done["state"] == "ready"
    teardowns = named("smd.phase.teardown")
    assert [(e["phase"], e["ok"]) for e in teardowns] == [("cache", True)]


# -- the example app under gunicorn and hypercorn ---------------------------------------


EXAMPLE = "examples.fastapi_app:app"


def example_events(server: Server) -> list[dict[str, Any]]:
    return json_lines(server.lines())


def check_workers(server: Server, workers: int) -> set[int]:
    """Each worker (a pid of its own) logged its startup and its teardown, once each."""
    out = server.output()
    assert "Logging error" not in out, out
    assert "Traceback" not in out, out
    events = example_events(server)
    ready = [e for e in events if e["event"] == "smd.startup.finished"]
    pids = {e["pid"] for e in ready}
    assert len(pids) == workers == len(ready), out
    assert all(e["state"] == "ready" for e in ready), out
    assert server.proc.pid not in pids  # the workers, not the server's parent process
    for pid in pids:
        mine = [e for e in events if e.get("pid") == pid]
        teardowns = [(e["phase"], e["ok"]) for e in mine if e["event"] == "smd.phase.teardown"]
        assert teardowns == [("cache", True), ("database", True)], (pid, out)
        assert [e["event"] for e in mine].count("smd.startup.started") == 1
    return pids


def example_env(pg_dsn: str) -> dict[str, str]:
    return {
        "SMD_DATABASE_URL": pg_dsn,
        "SMD_ENVIRONMENT": "development",
        "SMD_LOG_FORMAT": "json",
    }


@pytest.mark.postgres
def test_example_under_gunicorn_with_four_uvicorn_workers(
    serve: Callable[..., Server], pg_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    server = serve(gunicorn(port, EXAMPLE, 4, tmp_path), cwd=REPO, **example_env(pg_dsn))

    def four_ready() -> bool:
        return sum(1 for e in example_events(server) if e["event"] == "smd.startup.finished") >= 4

    server.wait_for("4 workers ready", four_ready)
    assert get(port, "/readyz").json()["state"] == "ready"
    assert get(port, "/version").status_code == 200
    assert server.stop() == 0, server.output()
    pids = check_workers(server, 4)
    out = server.output()
    booted = {int(p) for p in re.findall(r"\[INFO\] Booting worker with pid: (\d+)", out)}
    assert booted == pids
    assert pg_dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1] not in out


@pytest.mark.postgres
def test_example_under_hypercorn(serve: Callable[..., Server], pg_dsn: str) -> None:
    port = free_port()
    server = serve(hypercorn(port, EXAMPLE, 2), cwd=REPO, **example_env(pg_dsn))

    def both_ready() -> bool:
        return sum(1 for e in example_events(server) if e["event"] == "smd.startup.finished") >= 2

    server.wait_for("2 workers ready", both_ready)
    assert get(port, "/readyz").json()["state"] == "ready"
    assert server.stop() == 0, server.output()
    check_workers(server, 2)
