"""The dashboard (issue 13): ``smd history --html FILE`` in a real headless browser.

A history is recorded by real ``smd run`` starts (a bypassed phase, a
healthy one) plus a longer synthetic one written through the public store
API (an adaptive PostgreSQL target over ten days, with censored starts, a
failure and bypasses). Then real ``smd history --format json`` and
``smd history --html`` processes run on it, and Debian's ``chromium``
(headless, driven over the DevTools protocol on a pipe) loads the page:

- it renders (each target's chart has a size, its marks are drawn);
- nothing is fetched but the page itself, and nothing reaches the console
  (no error, no CSP violation: the harness is shown to catch both);
- every figure it shows is the JSON view's number, and the chart has one
  mark per recorded start, censored ones marked, with the deadline replayed
  from the recorded policy over the history before each start.

``python tests/test_dashboard.py benchmarks/out/dashboard.png`` rebuilds the
docs' screenshot (docs/observability.md) from the same synthetic history.
"""

from __future__ import annotations

import base64
import bisect
import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from smd import FailureKind, load_settings
from smd.clock import ManualClock
from smd.history import SQLiteHistoryStore, TargetInfo, target_key
from smd.timeouts import (
    AdaptiveTimeout,
    FixedTimeout,
    Sample,
    Series,
    TimingHistory,
    phase_timeout,
    policy_spec,
)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PATIENCE = 60.0
# Weights of past starts barely move while the test runs: the JSON view and
# the page, computed moments apart, agree to the last digit.
STILL = {"SMD_BYPASS__SUCCESS_HALF_LIFE_HOURS": "1000000"}
DB = target_key("api", "postgres://db.internal:5432/app", "production")
CACHE = target_key("api", "phase:cache", "production")
REDIS = target_key("worker", "redis://cache:6379", "staging")


# -- the history ----------------------------------------------------------------------


def synthetic_history(path: Path, now: float, *, fixed: bool = True) -> None:
    """Sixty starts, four hours apart, of three targets (one adaptive, one fixed, one default).

    ``fixed=False`` leaves out the fixed-timeout target (the docs' screenshot).
    """
    rng = random.Random(7)
    store = SQLiteHistoryStore(path)
    infos = {
        DB: TargetInfo(
            DB,
            startup="api",
            dependency="postgres://db.internal:5432/app",
            environment="production",
            phase="database",
            policy=policy_spec(AdaptiveTimeout()),
        ),
        CACHE: TargetInfo(
            CACHE,
            startup="api",
            dependency="phase:cache",
            environment="production",
            phase="cache",
            policy=policy_spec(FixedTimeout(5)),
        ),
        REDIS: TargetInfo(
            REDIS,
            startup="worker",
            dependency="redis://cache:6379",
            environment="staging",
            phase="redis",
            policy=policy_spec(None),
        ),
    }
    starts = 60
    for i in range(starts):
        at = now - (starts - i) * 4 * 3600.0
        batches: dict[str, list[Sample]] = {DB: [], CACHE: []}
        slow = 25 <= i < 32  # a slow week: the deadline follows it up, then back down
        ready = rng.lognormvariate(-1.0, 0.35) * (6 if slow else 1)
        if i in (27, 29):
            batches[DB].append(Sample(Series.READY, at, 8.0 + i % 2, censored=True))
            batches[DB].append(Sample(Series.BYPASS, at + 0.001))
        elif i == 44:
            batches[DB].append(Sample(Series.FAILURE, at, kind=FailureKind.CONFIGURATION))
        else:
            for k in range(rng.randint(1, 3)):
                batches[DB].append(Sample(Series.ATTEMPT, at - ready + k * 0.05, ready / 3))
            batches[DB].append(Sample(Series.READY, at, ready))
        cache = rng.uniform(0.05, 0.12)
        if fixed:
            batches[CACHE].append(Sample(Series.READY, at, cache))
        if i % 3 == 0:
            redis = batches.setdefault(REDIS, [])
            if i == 30:
                redis.append(Sample(Series.READY, at, 30.0, censored=True))
                redis.append(Sample(Series.BYPASS, at))
            else:
                redis.append(Sample(Series.READY, at, rng.uniform(0.5, 2.5)))
        store.append_many({k: v for k, v in batches.items() if v}, infos)


STARTUP = textwrap.dedent(
    """
    from smd import Failure, FailureKind, PhaseContext, PhaseError, Startup

    startup = Startup("dash")


    @startup.phase()
    async def cache(ctx: PhaseContext) -> int:
        return 1


    @startup.phase()
    async def flaky(ctx: PhaseContext) -> None:
        raise PhaseError(Failure(FailureKind.INFRASTRUCTURE, "refused by 10.0.0.7:6379"))
    """
)


def env_for(history: Path, *, still: bool = True, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    env.update({"SMD_HISTORY_PATH": str(history), "SMD_ENVIRONMENT": "production"})
    env.update({**(STILL if still else {}), **extra})
    return env


def smd(*args: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "smd"), *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A history file: three real degraded starts of `dash`, and the synthetic targets."""
    where = tmp_path_factory.mktemp("dashboard")
    history = where / "history.sqlite3"
    (where / "dash.py").write_text(STARTUP)
    for _ in range(3):
        done = smd(
            "run", "dash.py:startup", env=env_for(history, SMD_ENVIRONMENT="development"), cwd=where
        )
        assert done.returncode == 0, done.stderr  # permissive: degraded, not failed
    synthetic_history(history, time.time())
    return history


# -- a browser over the DevTools protocol -----------------------------------------------


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return found


class Browser:
    """Headless chromium driven over ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(
        self, executable: str, profile: Path, width: int = 1200, height: int = 1600
    ) -> None:
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        # Above 4, so placing them at 3 and 4 in the child cannot clobber either.
        high_in = fcntl.fcntl(to_child, fcntl.F_DUPFD, 5)
        high_out = fcntl.fcntl(from_child, fcntl.F_DUPFD, 5)
        os.close(to_child)
        os.close(from_child)
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # The protocol's fds are 3 (commands in) and 4 (answers out).
        place = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.close(int(sys.argv[1])); os.close(int(sys.argv[2])); "
            "os.execv(sys.argv[3], sys.argv[3:])"
        )
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", place, str(high_in), str(high_out), executable, *args],
            pass_fds=(high_in, high_out),
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        os.close(high_in)
        os.close(high_out)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""
        self.width, self.height = width, height

    def _send(
        self, method: str, params: Mapping[str, Any] | None = None, session: bool = True
    ) -> int:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": dict(params or {})}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise AssertionError(f"chromium stopped answering:\n{self.log()}")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise AssertionError(f"chromium closed the pipe:\n{self.log()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, session: bool = True
    ) -> Any:
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + PATIENCE
        while True:
            message = self._receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event["method"] == method:
                return event
        deadline = time.monotonic() + PATIENCE
        while True:
            message = self._receive(deadline)
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return message

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"script failed: {result['exceptionDetails']}")
        return result["result"]["value"]

    def screenshot(self) -> bytes:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        return base64.b64decode(data)

    def complaints(self) -> list[str]:
        """Console messages, exceptions and log entries of level warning or error."""
        out = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                args = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                out.append(f"console.{params['type']}: {args}")
            elif method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("warning", "error"):
                out.append(f"log {params['entry']['level']}: {params['entry']['text']}")
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self._send("Browser.close", session=False)
                self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._write)
            os.close(self._read)
            self.stderr.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium_path(), tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()


# What the page shows, read back from the rendered DOM.
READ_PAGE = """JSON.stringify({
  title: document.title,
  targets: document.querySelector('[data-field=targets]').textContent,
  sections: Array.from(document.querySelectorAll('section.target')).map(s => {
    const svg = s.querySelector('svg.chart');
    const box = svg ? svg.getBoundingClientRect() : null;
    const line = s.querySelector('path.deadline');
    return {
      target: s.dataset.target,
      fields: Array.from(s.querySelectorAll('[data-field]')).map(
        e => [e.dataset.field, e.dataset.value, e.textContent]),
      chart: box ? [box.width, box.height] : null,
      deadline: line ? line.getBBox().width : null,
      marks: Object.fromEntries(['ready', 'censored', 'failure', 'bypass'].map(
        k => [k, s.querySelectorAll('.mark.' + k).length])),
      drawn: Array.from(s.querySelectorAll('.mark')).every(m => {
        const r = m.getBoundingClientRect(); return r.width > 0 && r.height > 0; }),
      titles: Array.from(s.querySelectorAll('.mark.ready, .mark.censored, .mark.failure')).map(
        m => m.querySelector('title').textContent),
    };
  }),
})"""

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def at_path(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        assert isinstance(value, Mapping), (path, data)
        value = value[part]
    return value


def check_field(summary: Mapping[str, Any], path: str, raw: str, text: str) -> None:
    """One shown figure: its value is the JSON view's, and its text says that number."""
    expected = at_path(summary, path)
    assert json.loads(raw) == expected, (summary["target"], path)
    if isinstance(expected, bool) or expected is None:
        return
    if isinstance(expected, int | float):
        (shown,) = NUMBER.findall(text)
        number = float(shown) / 100 if text.endswith("%") else float(shown)
        assert number == pytest.approx(expected, rel=1e-9, abs=1e-12), (path, text, expected)
    else:
        assert text == expected, (path, text)


# Figures every target with starts must show (the list, and their context).
REQUIRED = (
    "target",
    "dependency",
    "counts.ready",
    "censored",
    "counts.failure",
    "counts.bypass",
    "consecutive_degraded",
    "success.successes",
    "success.total",
    "success.estimate",
    "success.lower_bound",
    "last_at",
)
TIMEOUT = ("timeout.seconds", "timeout.attempt_seconds", "timeout.source", "timeout.explanation")


def replayed_deadlines(history: TimingHistory, settings: Any) -> list[float]:
    """The deadline an adaptive policy gives each start from the history before it (public API)."""
    samples = history.all_samples()
    ats = [s.at for s in samples]
    out = []
    for s in samples:
        if s.series not in (Series.READY, Series.FAILURE):
            continue
        began = s.at - (s.seconds or 0.0)
        clock = ManualClock(start=began)
        prefix = TimingHistory(samples[: bisect.bisect_left(ats, began)], clock=clock)
        out.append(phase_timeout(AdaptiveTimeout(clock=clock), prefix, settings).seconds)
    return out


def render(history: Path, page: Path, *, still: bool = True) -> list[dict[str, Any]]:
    """``smd history --format json`` and ``smd history --html page``, as real processes."""
    env = env_for(history, still=still)
    shown = smd("history", "--format", "json", env=env, cwd=history.parent)
    assert shown.returncode == 0, shown.stderr
    written = smd("history", "--html", str(page), env=env, cwd=history.parent)
    assert written.returncode == 0, written.stderr
    data: list[dict[str, Any]] = json.loads(shown.stdout)
    assert written.stdout.strip() == f"smd: wrote the dashboard of {len(data)} targets to {page}"
    return data


def test_the_page_renders_what_history_json_says(
    recorded: Path, tmp_path: Path, browser: Browser
) -> None:
    page = tmp_path / "dashboard.html"
    data = render(recorded, page)
    assert page.stat().st_mode & 0o777 == 0o600  # it names hosts
    text = page.read_text()
    # Self-contained: nothing to fetch, nothing to run.
    for needle in ("<script", "<link", "<img", "@import", "url(", "src=", "href="):
        assert needle not in text, needle

    browser.open(page.as_uri())
    assert browser.complaints() == []
    assert browser.requests() == [page.as_uri()]  # the page itself, nothing else
    shown = json.loads(browser.evaluate(READ_PAGE))
    assert shown["title"] == "smd: what has been learned"
    assert shown["targets"] == str(len(data))
    by_target = {s["target"]: s for s in shown["sections"]}
    assert [s["target"] for s in shown["sections"]] == [d["target"] for d in data]
    assert {DB, CACHE, REDIS} <= set(by_target)
    assert {"dash/phase:cache@development", "dash/phase:flaky@development"} <= set(by_target)

    for summary in data:
        section = by_target[summary["target"]]
        fields = {path for path, _, _ in section["fields"]}
        required = REQUIRED + (TIMEOUT if summary["timeout"] else ("timeout_error",))
        assert set(required) <= fields, (summary["target"], set(required) - fields)
        for path, raw, label in section["fields"]:
            check_field(summary, path, raw, label)
        # One mark per recorded start and bypass, censored ones apart.
        counts = summary["counts"]
        assert section["marks"] == {
            "ready": counts["ready"] - summary["censored"],
            "censored": summary["censored"],
            "failure": counts["failure"],
            "bypass": counts["bypass"],
        }
        # It renders: the chart has a size, every mark and the deadline line are drawn.
        width, height = section["chart"]
        assert width > 600
        assert height > 150
        assert section["drawn"] is True
        assert section["deadline"] > 0

    # The figures the issue names, on the targets that have them.
    db = next(d for d in data if d["target"] == DB)
    assert db["censored"] == 2
    assert db["counts"]["bypass"] == 2
    assert db["timeout"]["source"] == "adaptive"
    flaky = next(d for d in data if d["target"] == "dash/phase:flaky@development")
    assert flaky["counts"]["bypass"] == 3  # three real degraded starts
    assert flaky["consecutive_degraded"] == 3
    assert flaky["success"]["successes"] == 0

    # The deadline over time: what the recorded (adaptive) policy gave each
    # start from the history before it, recomputed here with the public API.
    store = SQLiteHistoryStore(recorded, readonly=True)
    history = store.load(DB)
    settings = load_settings(environment="production")
    expected = replayed_deadlines(history, settings)
    titles = by_target[DB]["titles"]
    assert len(titles) == len(expected) == 60
    got = [float(x) for t in titles for x in re.findall(r"deadline then (\S+) s", t)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert (
        expected[0] == settings.timeouts.for_env(settings.environment).default
    )  # nothing learned yet
    assert max(expected[25:40]) > 2 * max(expected[10:25])  # it followed the slow week up
    censored = [t for t in titles if "censored" in t]
    assert len(censored) == 2
    assert all("gave up after" in t for t in censored)

    shot = browser.screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", shot[16:24]) == (1200, 1600)


def test_the_harness_catches_fetches_and_console_errors(
    recorded: Path, tmp_path: Path, browser: Browser
) -> None:
    """The same checks fail on a page that tries to load something: they can fail."""
    page = tmp_path / "dashboard.html"
    render(recorded, page)
    broken = tmp_path / "broken.html"
    text = page.read_text()
    broken.write_text(
        text.replace("</main>", '<img src="https://cdn.example.invalid/x.png"></main>').replace(
            "</body>", "<script>console.error('boom')</script></body>"
        )
    )
    browser.open(broken.as_uri())
    complaints = browser.complaints()
    # The page's own CSP refuses both the image and the inline script.
    assert any("cdn.example.invalid" in c for c in complaints), complaints
    assert any("script" in c.lower() for c in complaints), complaints


def test_an_unwritable_html_path_is_a_usage_error_before_anything_is_read(tmp_path: Path) -> None:
    history = tmp_path / "never" / "history.sqlite3"
    done = smd(
        "history",
        "--html",
        str(tmp_path / "missing" / "d.html"),
        env=env_for(history),
        cwd=tmp_path,
    )
    assert done.returncode == 64
    assert "--html" in done.stderr
    assert "does not exist" in done.stderr
    assert not history.parent.exists()  # the store was not even opened


# -- served at /smd ------------------------------------------------------------------------


SERVED_APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from smd import PhaseContext, Startup
    from smd._dashboard import dashboard_app
    from smd._health import health_app
    from smd.asgi import smd_lifespan

    startup = Startup("served")


    @startup.phase()
    async def cache(ctx: PhaseContext) -> int:
        return 1


    health, dashboard = health_app(), dashboard_app()


    async def endpoints(scope, receive, send):
        # What health_app(dashboard=True) does: /smd is the page, the rest health.
        page = scope["type"] == "http" and scope["path"] == "/smd"
        await (dashboard if page else health)(scope, receive, send)


    app = Starlette(routes=[Mount("/", app=endpoints)], lifespan=smd_lifespan(startup))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(recorded: Path, tmp_path: Path) -> Iterator[Callable[[str], httpx.Response]]:
    """A real uvicorn serving an app whose lifespan runs a startup, with the page at /smd."""
    history = tmp_path / "history.sqlite3"
    shutil.copy(recorded, history)
    (tmp_path / "served_app.py").write_text(SERVED_APP)
    port = free_port()
    out = (tmp_path / "server.log").open("wb")
    env = env_for(history, PYTHONPATH=str(tmp_path))
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "uvicorn", "served_app:app", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
    try:
        end = time.monotonic() + PATIENCE
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < end, (tmp_path / "server.log").read_text()
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield client.get
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(PATIENCE)
        out.close()


def test_the_health_app_can_serve_the_page_at_smd(
    served: Callable[[str], httpx.Response], recorded: Path, tmp_path: Path, browser: Browser
) -> None:
    response = served("/smd")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    # The run's own store: the history copied in, plus this start's sample.
    assert f'data-target="{DB}"' in page
    assert 'data-target="served/phase:cache@production"' in page
    with httpx.Client() as client:
        post = client.post(str(response.url))
    assert post.status_code == 405

    browser.open(str(response.url))
    assert browser.complaints() == []
    assert browser.requests() == [str(response.url)]
    shown = json.loads(browser.evaluate(READ_PAGE))
    assert "served/phase:cache@production" in {s["target"] for s in shown["sections"]}


# -- the docs' screenshot -----------------------------------------------------------------


def screenshot(out: Path) -> None:
    """The synthetic history's dashboard, 1200x1600, as docs/observability.md shows it."""
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        history = where / "history.sqlite3"
        synthetic_history(history, time.time(), fixed=False)
        page = where / "dashboard.html"
        render(history, page, still=False)
        browser = Browser(chromium_path(), where / "profile")
        try:
            browser.open(page.as_uri())
            assert browser.complaints() == []
            out.write_bytes(browser.screenshot())
        finally:
            browser.close()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out/dashboard.png"))
