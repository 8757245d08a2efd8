"""The fault matrix, end to end: the real ``smd run`` under every fault, environment and mode.

Each fault is made real (the session cluster, a real hot_standby=off
standby, the fault proxy, the fake server, a fake DNS server), and for each
fault x environment (development, staging, production) x mode (the
environment's default; strict, permissive, conditional forced with
``SMD_BYPASS__MODE``) one ``smd run tests/targets/db_only.py:startup
--report FILE`` runs as a subprocess with a fresh history store. The JSON
report is checked against ``tests/faults.py``: exit code, state, failure
kind, the decision and its reason, and what smd decided about time: the
budget its retry loop took from the deadline (the ``smd.database.waiting``
log line), the timeout it gave each attempt, how many attempts it made and
why it stopped, and which connections a per-case proxy saw. No wall-clock
figure is compared with a number: on a busy machine those measure the
machine as much as smd.

The runs mostly wait (on deadlines, backoff, the server), so they all run at
once from a thread pool in one module fixture; each test then checks one
finished run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from faults import (
    ENVIRONMENTS,
    FAULTS,
    MODES,
    Env,
    Fault,
    History,
    Mode,
    effective_mode,
    expected,
    render_fault_matrix_markdown,
)
from pgbed.cluster import PgCluster, free_port
from pgbed.dns import NXDOMAIN, SERVFAIL, DnsUnavailable, FakeDns, unshare_prefix
from pgbed.fakepg import FakePostgres, PgError
from pgbed.proxy import Blackhole, FaultProxy, Forward, Reset
from pgbed.proxy import Mode as ProxyMode

from smd.checks.postgres import PostgresOptions
from smd.history import SQLiteHistoryStore
from smd.timeouts import TimingHistory

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests/targets/db_only.py:startup"
UNKNOWN_HOST = "db.nonexistent.test"
STARTING_FOR = 3.0  # seconds of 57P03 in the "57P03 for 3 s" fault
SLOW_LATENCY = 0.1
SEEDED = 5  # healthy starts recorded before a "healthy history" run
MIN_ATTEMPT = 0.1  # smd.retry's min_attempt_seconds: no retry starts with less left
PROXIED = ("slow", "starting_3s")  # faults served by a proxy of their own, per case


class CountingProxy(FaultProxy):
    """A fault proxy of one case that notes the mode each connection it took was served in."""

    def __init__(self, upstream: tuple[str, int], mode: ProxyMode) -> None:
        super().__init__(upstream, mode)
        self.served: list[str] = []  # appended on the proxy's loop; read after close()

    async def handle(self, stream: Any) -> None:
        self.served.append(type(self.mode).__name__)
        await super().handle(stream)


class FirstContactProxy(CountingProxy):
    """A fault proxy that switches to ``then`` ``after`` seconds from its first connection.

    "57P03 for 3 s" must mean 3 s of the phase's life, not 3 s of which the
    child process spends some importing Python: the clock starts when the
    first attempt arrives.
    """

    def __init__(
        self, upstream: tuple[str, int], mode: ProxyMode, *, then: ProxyMode, after: float
    ) -> None:
        super().__init__(upstream, mode)
        self._then: ProxyMode | None = then
        self._after = after

    async def handle(self, stream: Any) -> None:
        if self._then is not None:
            then, self._then = self._then, None
            await self._schedule(self._after, then)
        await super().handle(stream)


@dataclass(frozen=True, slots=True)
class Case:
    fault: Fault
    env: Env
    mode: Mode
    history: History = "none"

    @property
    def id(self) -> str:
        seeded = "-seeded" if self.history == "healthy" else ""
        return f"{self.fault.key}-{self.env}-{self.mode}{seeded}"


CASES: list[Case] = [Case(f, e, m) for f in FAULTS for e in ENVIRONMENTS for m in MODES]
# Staging's conditional mode with evidence that the target is normally healthy:
# infrastructure and timeout failures are bypassed, configuration ones are not.
CASES += [Case(f, "staging", "default", "healthy") for f in FAULTS]


@dataclass(frozen=True, slots=True)
class Learned:
    """What the run left in its history store for the database's target."""

    ready: int  # uncensored ready samples (time to ready)
    censored: int  # censored ready samples ("ready after at least T")
    failures: int  # failures that waiting would not have healed


@dataclass(frozen=True, slots=True)
class Run:
    case: Case
    code: int
    report: dict[str, Any] | None
    stderr: str
    learned: Learned
    #: The mode each connection to the case's own proxy was served in (slow, starting_3s).
    served: tuple[str, ...] = ()

    @property
    def phase(self) -> dict[str, Any]:
        assert self.report is not None, self.stderr
        p: dict[str, Any] = self.report["phases"][0]
        return p

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines (``SMD_LOG_FORMAT=json``, on stderr) whose event is ``name``."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == name:
                    found.append(entry)
        return found


@dataclass
class Bed:
    """Everything the faults need, made once for the module."""

    pg: PgCluster
    dsn: str
    limited_dsn: str
    workdir: Path
    blackhole: FaultProxy
    reset: FaultProxy
    garbage: FakePostgres
    standby: PgCluster | None
    nx_resolv: Path | None
    again_resolv: Path | None
    dns: dict[str, FakeDns]
    skips: dict[str, str]


@pytest.fixture(scope="module")
def bed(
    pg: PgCluster, pg_dsn: str, pg_limited_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bed]:
    workdir = tmp_path_factory.mktemp("faults")
    upstream = (pg.host, pg.port)
    skips: dict[str, str] = {}
    dns: dict[str, FakeDns] = {}
    resolv: dict[str, Path] = {}
    for key, rcode in (("unknown_host", NXDOMAIN), ("dns_again", SERVFAIL)):
        if shutil.which("unshare") is None or os.geteuid() != 0:
            skips[key] = "needs root and unshare(1) to give smd a private resolv.conf"
            continue
        fake_dns = FakeDns(rcode)
        try:
            fake_dns.start()
        except DnsUnavailable as exc:
            skips[key] = str(exc)
            continue
        dns[key] = fake_dns
        resolv[key] = fake_dns.write_resolv_conf(workdir / f"resolv-{key}.conf")
        probe = subprocess.run(
            [*unshare_prefix(resolv[key]), "cat", "/etc/resolv.conf"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode != 0 or fake_dns.address not in probe.stdout:
            skips[key] = f"cannot bind-mount a private resolv.conf: {probe.stderr.strip()}"
    blackhole = FaultProxy(upstream, Blackhole())
    reset = FaultProxy(upstream, Reset())
    garbage = FakePostgres.garbage()
    for server in (blackhole, reset, garbage):
        server.start()
    # One standby per module: pg_basebackup + start costs seconds.
    standby = pg.start_standby(hot_standby=False)
    try:
        yield Bed(
            pg,
            pg_dsn,
            pg_limited_dsn,
            workdir,
            blackhole,
            reset,
            garbage,
            standby,
            resolv.get("unknown_host"),
            resolv.get("dns_again"),
            dns,
            skips,
        )
    finally:
        standby.destroy()
        for server in (blackhole, reset, garbage):
            server.close()
        for d in dns.values():
            d.close()


def _with_db(dsn: str, database: str) -> str:
    head, _, _ = dsn.rpartition("/")
    return f"{head}/{database}"


def _with_password(dsn: str, password: str) -> str:
    scheme, _, rest = dsn.partition("://")
    userinfo, _, hostpart = rest.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:{password}@{hostpart}"


def _with_host(dsn: str, host: str, port: int) -> str:
    scheme, _, rest = dsn.partition("://")
    userinfo, _, hostpart = rest.rpartition("@")
    path = hostpart.partition("/")[2]
    return f"{scheme}://{userinfo}@{host}:{port}/{path}"


def _dsn_for(bed: Bed, f: Fault, proxy: FaultProxy | None) -> str:
    key = f.key
    if key == "healthy":
        return bed.dsn
    if key == "refused":
        return _with_host(bed.dsn, "127.0.0.1", free_port())
    if key == "blackhole":
        return bed.blackhole.dsn(bed.dsn)
    if key == "reset":
        return bed.reset.dsn(bed.dsn)
    if key in PROXIED:
        assert proxy is not None
        return proxy.dsn(bed.dsn)
    if key == "hot_standby_off":
        assert bed.standby is not None
        return bed.standby.dsn()
    if key == "too_many":
        return bed.limited_dsn
    if key == "wrong_password":
        return _with_password(bed.dsn, "not-the-password")
    if key == "missing_db":
        return _with_db(bed.dsn, "smd_no_such_database")
    if key in ("unknown_host", "dns_again"):
        return _with_host(bed.dsn, UNKNOWN_HOST, 5432)
    if key == "tls_not_offered":
        return bed.dsn + "?sslmode=require"
    if key == "not_postgres":
        return bed.garbage.dsn()
    raise AssertionError(f"no recipe for fault {key!r}")


def _history_key(dsn: str, env: str) -> str:
    """The key `smd run` of db_only.py uses: ``<startup>/<dependency>@<environment>``."""
    return f"db_only/{PostgresOptions.from_dsn(dsn).target_key()}@{env}"


def _learned(path: Path, dsn: str, env: str) -> Learned:
    history = SQLiteHistoryStore(path).load(_history_key(dsn, env))
    return Learned(
        ready=sum(1 for s in history.ready if not s.censored),
        censored=sum(1 for s in history.ready if s.censored),
        failures=len(history.failures),
    )


def _seed_healthy(path: Path, dsn: str, env: str, deadline: float) -> None:
    """Five recent healthy starts: evidence for ``success_rate`` that leaves the deadline alone.

    With fewer than ``min_samples`` (8) starts the adaptive timeout is in its
    graded warm-up: the few samples may shorten the deadline below the
    environment's default, never lengthen it. Starts that each took the
    case's whole deadline keep it at the default, so the fault behaves as in
    the unseeded runs (the cell's verdict is what changes, not its timing).
    """
    target = _history_key(dsn, env)
    history = TimingHistory()
    now = time.time()
    samples = [history.record_success(deadline, at=now - 600.0 * (i + 1)) for i in range(SEEDED)]
    store = SQLiteHistoryStore(path)
    store.append(target, samples)
    assert len(store.load(target).ready) == SEEDED


def _run_case(bed: Bed, case: Case) -> Run:
    f = case.fault
    workdir = bed.workdir / case.id
    workdir.mkdir()
    report = workdir / "report.json"
    history = workdir / "history.sqlite3"
    proxy: CountingProxy | None = None
    if f.key == "slow":
        proxy = CountingProxy((bed.pg.host, bed.pg.port), Forward(latency=SLOW_LATENCY))
        proxy.start()
    elif f.key == "starting_3s":
        proxy = FirstContactProxy(
            (bed.pg.host, bed.pg.port),
            PgError("57P03", "the database system is starting up"),
            then=Forward(),
            after=STARTING_FOR,
        )
        proxy.start()
    try:
        dsn = _dsn_for(bed, f, proxy)
        if case.history == "healthy":
            _seed_healthy(history, dsn, case.env, f.deadline)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
        env.update(
            SMD_HISTORY_PATH=str(history),
            SMD_ENVIRONMENT=case.env,
            SMD_LOG_FORMAT="json",
            SMD_DATABASE_URL=dsn,
            **{f"SMD_TIMEOUTS__{case.env.upper()}__DEFAULT": str(f.deadline)},
        )
        if case.mode != "default":
            env["SMD_BYPASS__MODE"] = case.mode
        argv = [sys.executable, "-m", "smd", "run", TARGET, "--report", str(report)]
        if f.key == "unknown_host":
            assert bed.nx_resolv is not None
            argv = unshare_prefix(bed.nx_resolv) + argv
        elif f.key == "dns_again":
            assert bed.again_resolv is not None
            argv = unshare_prefix(bed.again_resolv) + argv
        out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        if proxy is not None:
            proxy.close()
    doc = json.loads(report.read_text()) if report.exists() else None
    served = tuple(proxy.served) if proxy is not None else ()
    return Run(case, out.returncode, doc, out.stderr, _learned(history, dsn, case.env), served)


@pytest.fixture(scope="module")
def runs(bed: Bed, request: pytest.FixtureRequest) -> dict[str, Run]:
    """Every selected case, run at once (they mostly wait); keyed by case id."""
    selected: set[str] = set()
    for item in request.session.items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
        if isinstance(case, Case):
            selected.add(case.id)
    todo = [c for c in CASES if c.fault.key not in bed.skips and c.id in selected]
    # Runs that mostly wait (on the deadline, backoff, the 3 s of 57P03) go
    # first, many at once; runs that end after an attempt or two go after,
    # few at once, so that they do not queue for the CPU behind a dozen
    # Python interpreters starting up (a phase timing file is written for
    # people to read; no test compares those timings with a number).
    waiting = [c for c in todo if c.fault.timing not in ("config_fast", "ready")]
    quick = [c for c in todo if c.fault.timing in ("config_fast", "ready")]
    done: list[Run] = []
    walls: list[float] = []
    for cases, workers in ((waiting, 10), (quick, 4)):
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done += pool.map(lambda c: _run_case(bed, c), cases)
        walls.append(time.monotonic() - t0)
    results = {r.case.id: r for r in done}
    _write_timings(bed.workdir / "timings.json", results, walls)
    return results


def _write_timings(path: Path, results: dict[str, Run], walls: list[float]) -> None:
    """Per fault: the fastest and slowest phase durations seen, and the batches' wall time."""
    by_fault: dict[str, list[float]] = {}
    for r in results.values():
        if r.report is not None and r.phase["duration"] is not None:
            by_fault.setdefault(r.case.fault.key, []).append(float(r.phase["duration"]))
    summary: dict[str, object] = {
        k: {"min": round(min(v), 3), "max": round(max(v), 3), "n": len(v)}
        for k, v in by_fault.items()
    }
    summary["batch_wall_seconds"] = [round(w, 1) for w in walls]
    path.write_text(json.dumps(summary, indent=2))
    print(f"\nfault matrix phase durations: {path}\n{json.dumps(summary)}")


def _source_text(case: Case) -> str:
    if case.mode == "default":
        return f"the {case.env} default"
    return f"every cell of the forced {case.mode} mode, SMD_BYPASS__MODE"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_matrix_cell(bed: Bed, runs: dict[str, Run], case: Case) -> None:
    if case.fault.key in bed.skips:
        pytest.skip(bed.skips[case.fault.key])
    run = runs[case.id]
    f = case.fault
    want = expected(f, case.env, case.mode, case.history)
    doc = run.report
    assert doc is not None, f"no report written (exit {run.code}): {run.stderr[-2000:]}"
    p = run.phase
    context = f"{case.id}: {json.dumps(p, indent=1)[:3000]}"

    # exit code and overall outcome
    assert run.code == want.exit_code, context
    assert doc["exit_code"] == want.exit_code
    assert doc["state"] == want.state, context
    assert doc["environment"] == case.env
    assert "Traceback" not in run.stderr

    # the failure kind and the decision with its reason
    if f.kind is None:
        assert p["outcome"] == "ok", context
        assert p["failure"] is None
        assert p["decision"] is None
    else:
        assert p["failure"]["kind"] == f.kind, context
        if f.sqlstate is not None:
            # The SQLSTATE is the failure's generic code, and named in its details.
            assert p["failure"]["code"] == f.sqlstate, context
            assert p["failure"]["details"]["sqlstate"] == f.sqlstate, context
        decision = p["decision"]
        assert decision["action"] == want.action, context
        assert decision["mode"] == want.mode == effective_mode(case.env, case.mode)
        reason = decision["reason"]
        assert f"the cell ({case.env}, {f.kind})" in reason, reason
        assert f"in {want.mode} mode" in reason, reason
        assert _source_text(case) in reason, reason
        assert p["outcome"] == ("bypassed" if want.action == "continue" else "failed")
        if want.mode == "conditional":
            if case.history == "none":
                assert "no history of this target" in reason, reason
            elif want.action == "continue":
                assert "meets all 4 conditions" in reason, reason
            else:
                assert f"kind {f.kind} is not in the allowed kinds" in reason, reason

    # what was learned: a wait that the deadline ended while the failure could
    # still heal is a censored sample ("ready after at least this long"),
    # whatever fraction of the deadline it used; a failure that cannot heal
    # is a failure sample, never a time to ready.
    seeded = SEEDED if case.history == "healthy" else 0
    healable = f.kind in ("infrastructure", "timeout")
    if f.kind is None:
        assert run.learned == Learned(seeded + 1, 0, 0), context
    elif healable:
        assert p["failure"]["deadline_reached"] is True, context
        assert run.learned == Learned(seeded, 1, 0), context
    else:
        assert p["failure"]["deadline_reached"] is False, context
        assert run.learned == Learned(seeded, 0, 1), context

    # attempts: what can heal is retried, what cannot is tried once
    attempts = p["attempts"]
    if f.timing == "config_fast":
        assert len(attempts) == 1, context
    elif f.retried and f.timing != "at_deadline":
        assert len(attempts) >= 2, context

    # time, as smd decided it: the retry loop's budget is the phase's deadline
    # less the margin that lets the phase report its own failure, and no
    # attempt was given more time than that budget had
    deadline = p["timeout"]["seconds"]
    assert deadline == pytest.approx(f.deadline), context  # the configured default
    assert p["deadline"] == pytest.approx(deadline), context
    assert p["deadline_extended"] == "", context
    (waiting,) = run.events("smd.database.waiting")
    budget = waiting["deadline"]
    assert 0 < budget < p["deadline"], (waiting, context)
    assert waiting["attempt_timeout"] <= budget, (waiting, context)
    timeouts = [a["detail"]["timeout"] for a in attempts]
    assert all(0 < t <= budget for t in timeouts), (budget, timeouts, context)
    if f.kind is not None:
        failure = p["failure"]
        assert failure["attempts"] == len(attempts), context
        # The phase's own failure, not the runner's cut at its deadline or overrun.
        assert "did not finish within its deadline" not in failure["message"], context
        assert "overran" not in failure["message"], context

    if f.timing == "config_fast":
        # Classified by its one attempt; not retried, so no wait for the deadline.
        assert attempts[0]["detail"]["kind"] == f.kind, context
        assert not p["failure"]["message"].startswith("still failing"), context
        assert len(run.events("smd.database.attempt_failed")) == 1, context
    elif f.timing == "first_failure_fast":
        # The first attempt already failed as what it is (not a timeout after
        # waiting the attempt out); then retried until the budget ran out.
        assert attempts[0]["detail"]["kind"] == f.kind, context
        assert attempts[0]["detail"]["answered"] is False, context
    elif f.timing == "at_deadline":
        # One attempt, given the whole budget (a split would have left time for
        # retries), cut off by its timeout: the deadline, not the server, ended it.
        assert waiting["attempt_timeout"] == budget, (waiting, context)
        assert len(attempts) == 1, context
        assert attempts[0]["detail"]["kind"] == "timeout", context
        assert p["failure"]["message"].startswith(
            f"no answer within the attempt timeout of {timeouts[0]:.3g}s ("
        ), context
    elif f.timing == "ready_3_to_4s":
        # Every attempt met the 57P03 until the proxy switched, and the first
        # connection after the switch was ready: no earlier than the fault cleared.
        assert all(a["detail"]["code"] == "57P03" for a in attempts[:-1]), context
        assert attempts[-1]["ok"] is True, context
        assert run.served == ("PgError",) * (len(attempts) - 1) + ("Forward",), run.served
    elif f.key == "slow":
        # Through the slow proxy, and ready at the first attempt: the latency
        # cost no attempt timeout and no retry.
        assert run.served == ("Forward",), run.served
        assert len(attempts) == 1, context
        assert attempts[0]["ok"] is True, context
    if f.timing in ("first_failure_fast", "by_deadline"):
        # Retried until the budget ran out, each retry with what was left of it
        # (never less than smd's minimum for an attempt), and said so.
        assert p["failure"]["message"].startswith(
            f"still failing after {len(attempts)} attempts over "
        ), context
        assert f"(deadline {budget:.3g}s)" in p["failure"]["message"], context
        assert all(b < a for a, b in pairwise(timeouts)), timeouts
        assert min(timeouts) >= MIN_ATTEMPT, timeouts


def test_every_fault_has_a_recipe(bed: Bed) -> None:
    for f in FAULTS:
        if f.key in bed.skips or f.key in PROXIED:
            continue
        assert _dsn_for(bed, f, None)


def test_dns_faults_never_left_the_machine(bed: Bed, runs: dict[str, Run]) -> None:
    """The DNS cases were answered by the fake servers (so not by the real resolver)."""
    ran = {key: [r for r in runs.values() if r.case.fault.key == key] for key in bed.dns}
    checked = {key: done for key, done in ran.items() if done}
    if not checked:
        why = "; ".join(
            f"{k}: {bed.skips[k]}" for k in ("unknown_host", "dns_again") if k in bed.skips
        )
        pytest.skip(f"no DNS fault case ran in this session ({why or 'none selected'})")
    for key, done in checked.items():
        # Each run is a process of its own: no resolver cache between them.
        assert bed.dns[key].queries >= len(done), (
            f"{key}: the fake DNS server saw {bed.dns[key].queries} queries for {len(done)} runs"
        )


FAULTS_PAGE = ROOT / "docs" / "reference" / "faults.md"
MARKER = "<!-- smd:fault-matrix -->"


def test_docs_fault_matrix_is_generated_from_tests_faults() -> None:
    """The docs' fault matrix page is the table tests/faults.py renders from these cases."""
    import importlib.util

    assert MARKER in FAULTS_PAGE.read_text(encoding="utf-8").splitlines(), (
        f"docs/reference/faults.md lost its {MARKER} marker"
    )
    spec = importlib.util.spec_from_file_location(
        "smd_docs_hooks_faults", ROOT / "docs" / "_hooks.py"
    )
    assert spec is not None
    assert spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    shown = hooks.render_fault_matrix()
    assert shown.strip() == render_fault_matrix_markdown().strip()
    for f in FAULTS:
        assert f"| {f.title} |" in shown, f"fault {f.key} missing from the docs' fault matrix"
