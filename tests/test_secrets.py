"""A DSN password never leaves smd: not in stdout, stderr, files, or exception text.

The password is a random marker. Every CLI command runs as a real
subprocess (plan, run ok / failed / degraded, check, history), in JSON and
console log formats (the console runs also with ``--debug``: tracebacks
must not leak it either), through valid, wrong-password, refused, invalid
and query-parameter DSNs, against the real PostgreSQL. Then uvicorn
through the lifespan, and in-process: ``smd_lifespan`` and ``StartupRun``
failures, their sub-exceptions and ``__cause__`` / ``__context__`` chains,
and the logs they wrote.
"""

from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pgbed.cluster import AppCredentials, PgCluster

from smd import (
    InvalidPlan,
    PhaseContext,
    SettingsError,
    Startup,
    StartupFailed,
    StartupRun,
    load_settings,
)
from smd._logging import configure_logging
from smd.history import MemoryHistoryStore
from smd.phases import DatabasePhase

pytestmark = [pytest.mark.postgres]

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests/targets/sec_db.py:startup"
ROLE = "smd_secret_marker"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Dsns:
    marker: str
    ok: str  # a real role whose password is the marker
    wrong: str  # the marker is the wrong password of a real role (28P01)
    refused: str  # nothing listens there
    invalid: str  # not a port
    query_ok: str  # the marker as a query parameter
    query_wrong: str


@pytest.fixture(scope="module")
def dsns(pg: PgCluster, pg_app: AppCredentials) -> Dsns:
    marker = secrets.token_hex(12)
    pg.create_role(ROLE, marker)
    host, port = pg.host, pg.port
    return Dsns(
        marker=marker,
        ok=pg.dsn(ROLE, marker, "postgres"),
        wrong=pg.dsn(pg_app.user, marker, pg_app.database),
        refused=f"postgresql://{pg_app.user}:{marker}@127.0.0.1:{_free_port()}/app",
        invalid=f"postgresql://u:{marker}@{host}:notaport/db",
        query_ok=f"postgresql://{ROLE}@{host}:{port}/postgres?password={marker}",
        query_wrong=f"postgresql://{pg_app.user}@{host}:{port}/{pg_app.database}?password={marker}",
    )


# (args, environment, expected exit code) per invocation; DSN names are Dsns fields.
Step = tuple[list[str], dict[str, str], int]
REPORT = ["--report", "{tmp}/report.json", "--trace", "{tmp}/trace.json"]
CASES: dict[str, list[Step]] = {
    "plan-text": [(["plan", TARGET], {"SMD_DATABASE_URL": "ok"}, 0)],
    "plan-json": [(["plan", TARGET, "--format", "json"], {"SMD_DATABASE_URL": "ok"}, 0)],
    # An invalid SMD_DATABASE_URL is an invalid setting (78) before anything runs.
    "plan-invalid-dsn": [
        (["plan", TARGET, "--format", "json"], {"SMD_DATABASE_URL": "invalid"}, 78)
    ],
    "plan-invalid-code-dsn": [(["plan", TARGET], {"SEC_CODE_DSN": "invalid"}, 78)],
    "plan-code-dsn": [(["plan", TARGET], {"SEC_CODE_DSN": "ok"}, 0)],
    "run-ok": [(["run", TARGET, *REPORT], {"SMD_DATABASE_URL": "ok"}, 0)],
    "run-ok-code-dsn": [(["run", TARGET, *REPORT], {"SEC_CODE_DSN": "ok"}, 0)],
    "run-ok-query-password": [(["run", TARGET, *REPORT], {"SMD_DATABASE_URL": "query_ok"}, 0)],
    "run-wrong-password": [(["run", TARGET, *REPORT], {"SMD_DATABASE_URL": "wrong"}, 78)],
    "run-wrong-password-code-dsn": [(["run", TARGET, *REPORT], {"SEC_CODE_DSN": "wrong"}, 78)],
    "run-wrong-query-password": [
        (["run", TARGET, *REPORT], {"SMD_DATABASE_URL": "query_wrong"}, 78)
    ],
    "run-refused": [(["run", TARGET, *REPORT], {"SMD_DATABASE_URL": "refused"}, 75)],
    "run-invalid-dsn": [(["run", TARGET, *REPORT], {"SMD_DATABASE_URL": "invalid"}, 78)],
    "run-invalid-code-dsn": [(["run", TARGET, *REPORT], {"SEC_CODE_DSN": "invalid"}, 78)],
    "run-degraded": [
        (
            ["run", TARGET, "--env", "development", *REPORT],
            {"SMD_DATABASE_URL": "refused"},
            0,
        )
    ],
    "run-exec": [
        (
            ["run", TARGET, *REPORT, "--", sys.executable, "-c", "print('served')"],
            {"SMD_DATABASE_URL": "ok"},
            0,
        )
    ],
    "check-ok": [(["check", "postgres", "ok"], {}, 0)],
    "check-ok-json": [(["check", "postgres", "ok", "--format", "json"], {}, 0)],
    "check-query-password": [(["check", "postgres", "query_ok", "--format", "json"], {}, 0)],
    "check-wrong-password": [(["check", "postgres", "wrong"], {}, 78)],
    "check-wrong-password-json": [(["check", "postgres", "wrong", "--format", "json"], {}, 78)],
    "check-wrong-query-password": [(["check", "postgres", "query_wrong"], {}, 78)],
    "check-refused": [(["check", "postgres", "refused", "--timeout", "0.5"], {}, 75)],
    "check-invalid-dsn": [(["check", "postgres", "invalid"], {}, 78)],
    "check-invalid-dsn-json": [(["check", "postgres", "invalid", "--format", "json"], {}, 78)],
    "history": [
        (["run", TARGET], {"SMD_DATABASE_URL": "ok"}, 0),
        (["run", TARGET], {"SMD_DATABASE_URL": "wrong"}, 78),
        (["history"], {"SMD_DATABASE_URL": "ok"}, 0),
        (["history", "--format", "json"], {"SMD_DATABASE_URL": "wrong"}, 0),
    ],
}
FORMATS = {"json": ("json", False), "console-debug": ("console", True)}


def _fill(text: str, dsns: Dsns, tmp: Path) -> str:
    text = text.replace("{tmp}", str(tmp))
    return str(getattr(dsns, text)) if text in Dsns.__dataclass_fields__ else text


def _files(tmp: Path) -> Iterator[Path]:
    return (p for p in tmp.rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("case", list(CASES))
def test_cli_never_shows_the_password(tmp_path: Path, dsns: Dsns, case: str, fmt: str) -> None:
    log_format, debug = FORMATS[fmt]
    work = tmp_path / "work"
    work.mkdir()
    seen: list[str] = []
    for args, extra, code in CASES[case]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMD_", "SEC_"))}
        env.update(
            SMD_ENVIRONMENT="production",
            SMD_HISTORY_PATH=str(work / "history.sqlite3"),
            SMD_LOG_FORMAT=log_format,
            SMD_LOG_LEVEL="debug",
        )
        env.update({k: _fill(v, dsns, work) for k, v in extra.items()})
        argv = [sys.executable, "-m", "smd", *(["--debug"] if debug else [])]
        argv += [_fill(a, dsns, work) for a in args]
        out = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        seen.append(f"$ {' '.join(args)}\n{out.stdout}\n{out.stderr}")
        assert out.returncode == code, seen[-1]
        assert dsns.marker not in out.stdout, seen[-1]
        assert dsns.marker not in out.stderr, seen[-1]
    written = list(_files(work))
    # An invalid DSN (in settings or in code) is refused before anything runs.
    refused_early = case in ("run-invalid-dsn", "run-invalid-code-dsn")
    if "--report" in CASES[case][0][0] and not refused_early:
        assert {"report.json", "trace.json"} <= {p.name for p in written}
    if (case.startswith("run") and not refused_early) or case == "history":
        assert any(p.name.startswith("history.sqlite3") for p in written)
    for path in written:
        assert dsns.marker.encode() not in path.read_bytes(), path


def test_uvicorn_failed_lifespan_never_shows_the_password(tmp_path: Path, dsns: Dsns) -> None:
    """Starlette logs the traceback of what the lifespan raised: it must be clean too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMD_", "SEC_"))}
    env.update(
        SMD_DATABASE_URL=dsns.wrong,
        SMD_ENVIRONMENT="production",
        SMD_HISTORY_PATH=str(tmp_path / "history.sqlite3"),
        SMD_LOG_FORMAT="console",
        SMD_LOG_LEVEL="debug",
    )
    argv = [sys.executable, "-m", "uvicorn", "tests.targets.sec_db:app", "--port", "0"]
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr  # uvicorn: startup failed
    assert "STARTUP FAILED" in out.stderr
    assert "Traceback" in out.stderr  # what Starlette printed is covered by the scan
    assert dsns.marker not in out.stdout + out.stderr
    for path in _files(tmp_path):
        assert dsns.marker.encode() not in path.read_bytes(), path


# -- in process: exception text and logs --------------------------------------------


def _every_exception(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its group members and its cause/context chains, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def _assert_clean_exception(exc: BaseException, marker: str) -> None:
    for e in _every_exception(exc):
        assert marker not in str(e), repr(e)
        assert marker not in repr(e), repr(e)
        for arg in e.args:
            assert marker not in repr(arg), repr(e)
    text = "".join(traceback.format_exception(exc))
    assert marker not in text, text


def _settings(tmp_path: Path, dsn: str | None, environment: str = "production") -> Any:
    return load_settings(
        environment=environment,
        database_url=dsn,
        history_path=tmp_path / "history.sqlite3",
        log_level="debug",
    )


def _startup(code_dsn: str | None = None) -> Startup:
    """The startup of tests/targets/sec_db.py; ``code_dsn`` is a DSN written in code."""
    startup = Startup("sec-db")

    async def config(ctx: PhaseContext) -> str:
        return "loaded"

    startup.phase(name="config")(config)
    startup.add(DatabasePhase(code_dsn, requires=["config"], timeout=1.0))
    return startup


def _run_for(tmp_path: Path, dsns: Dsns, which: str) -> tuple[Startup, Any]:
    # A malformed URL in settings is refused when settings load (see the
    # next test): to reach the phase with one, the DSN is written in code.
    if which == "invalid":
        return _startup(dsns.invalid), _settings(tmp_path, None)
    return _startup(), _settings(tmp_path, getattr(dsns, which))


@pytest.mark.parametrize("in_query", [False, True])
def test_invalid_settings_error_never_shows_the_password(
    tmp_path: Path, dsns: Dsns, in_query: bool
) -> None:
    url = (
        f"postgresql://u@127.0.0.1:notaport/db?password={dsns.marker}" if in_query else dsns.invalid
    )
    with pytest.raises(SettingsError) as info:
        _settings(tmp_path, url)
    assert "SMD_DATABASE_URL" in str(info.value)
    _assert_clean_exception(info.value, dsns.marker)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    import logging

    import structlog

    buf = io.StringIO()
    yield buf
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "smd":
            root.removeHandler(h)
    structlog.reset_defaults()


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("which", ["wrong", "invalid", "refused", "query_wrong"])
async def test_startup_failed_and_its_causes_never_show_the_password(
    tmp_path: Path, dsns: Dsns, which: str, log_format: str, captured_logs: io.StringIO
) -> None:
    configure_logging(log_format, "debug", stream=captured_logs)
    if which == "invalid":
        # A DSN written in code is checked when the phase is declared.
        with pytest.raises(InvalidPlan) as bad:
            _run_for(tmp_path, dsns, which)
        _assert_clean_exception(bad.value, dsns.marker)
        assert dsns.marker not in captured_logs.getvalue()
        return
    startup, settings = _run_for(tmp_path, dsns, which)
    run = StartupRun(startup, settings=settings, store=MemoryHistoryStore())
    with pytest.raises(StartupFailed) as info:
        await run.start()
    _assert_clean_exception(info.value, dsns.marker)
    report = info.value.report
    assert report.failed_phase is not None
    assert report.failed_phase.name == "database"
    assert dsns.marker not in report.to_json()
    assert dsns.marker not in report.summary()
    assert dsns.marker not in repr(report)
    assert dsns.marker not in captured_logs.getvalue()
    # The logs were captured (the scan above saw the failure being logged).
    assert "smd.phase.started" in captured_logs.getvalue()


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("which", ["ok", "wrong", "invalid"])
async def test_lifespan_never_shows_the_password(
    tmp_path: Path, dsns: Dsns, which: str, log_format: str, captured_logs: io.StringIO
) -> None:
    from starlette.applications import Starlette

    from smd.asgi import smd_lifespan

    configure_logging(log_format, "debug", stream=captured_logs)
    if which == "invalid":
        # A DSN written in code is checked when the phase is declared.
        with pytest.raises(InvalidPlan) as bad:
            _run_for(tmp_path, dsns, which)
        _assert_clean_exception(bad.value, dsns.marker)
        assert dsns.marker not in captured_logs.getvalue()
        return
    startup, settings = _run_for(tmp_path, dsns, which)
    lifespan = smd_lifespan(
        startup,
        settings=settings,
        store=MemoryHistoryStore(),
        handle_signals=False,
    )
    app = Starlette(lifespan=lifespan)
    if which == "ok":
        async with lifespan(app) as state:
            assert state["database"] is not None
            assert dsns.marker not in repr(state["database"])
            assert dsns.marker not in repr(state["smd"].report)
    else:
        with pytest.raises(StartupFailed) as info:
            async with lifespan(app):
                pass
        _assert_clean_exception(info.value, dsns.marker)
    assert dsns.marker not in captured_logs.getvalue()


def test_a_short_password_is_masked_where_it_stands_alone_only() -> None:
    """A one-letter password is still masked, without garbling every word holding that letter."""
    from smd.checks._pg_options import PostgresOptions

    options = PostgresOptions.from_dsn("postgresql://u:p@127.0.0.1:1/db")
    text = options.scrub("connection refused (postgres://u:p@127.0.0.1:1/db): expected p")
    assert text == "connection refused (postgres://u:***@127.0.0.1:1/db): expected ***"


def test_check_with_a_short_password_stays_readable(tmp_path: Path) -> None:
    dsn = f"postgresql://u:p@127.0.0.1:{_free_port()}/db"
    argv = [sys.executable, "-m", "smd", "check", "postgres", dsn, "--timeout", "0.3"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    env["SMD_HISTORY_PATH"] = str(tmp_path / "history.sqlite3")
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 75, out.stderr
    assert "***ostgres" not in out.stdout
    assert "(postgres://127.0.0.1:" in out.stdout
    assert ":p@" not in out.stdout + out.stderr


# -- the redactor on text it never saw registered -------------------------------------------

REDACT_RESERVED = "/&@:?#%+ '\"\\=,;[]{}<>|^`$!*()~é"


@pytest.mark.parametrize("char", list(REDACT_RESERVED))
def test_redact_masks_any_unregistered_dsn_password(char: str) -> None:
    """A DSN literal on a traceback line, in a JSON or repr string, or bare: never its password."""
    import json as json_module

    from smd.secrets import redact

    marker = secrets.token_hex(6)
    password = f"{marker}{char}{marker}"
    dsns = [
        f"postgresql://app:{password}@db:5432/app?sslmode=require",
        f"postgresql://app@db:5432/app?password={password}&sslmode=require",
    ]
    for dsn in dsns:
        texts = [
            f"    startup.add(DatabasePhase({dsn!r}, timeout=5))",  # a traceback's source line
            json_module.dumps({"error": f"cannot reach {dsn}", "user": "me@corp"}),
            f"error={dsn!r} phase=database",
            f"ValueError: bad DSN {dsn}",
        ]
        for text in texts:
            masked = redact(text)
            assert marker not in masked, (text, masked)
        # A JSON line stays JSON.
        json_module.loads(redact(json_module.dumps({"dsn": dsn, "target": "postgres://db/app"})))


@pytest.mark.parametrize(
    "text",
    [
        # smd's own hints and names: nothing in them is a secret.
        "accepted: a URL like postgresql://user@host:5432/dbname (a password goes after 'user:')",
        "quickstart/postgres://127.0.0.1:5432/app@development  3 samples",
        "target=postgres://db:5432/app dsn=postgres://app@db:5432/app deadline=4.75",
        '{"target": "postgres://db:5432/app", "dsn": "postgres://app@db:5432/app", "x": "y@z"}',
        "postgres://h1:5433,[::1]:5434/db - accepting connections",
        "wrong password (postgres://db:5432/app) [28P01]: password authentication failed",
    ],
)
def test_redact_leaves_smds_own_text_alone(text: str) -> None:
    from smd.secrets import redact

    assert redact(text) == text
