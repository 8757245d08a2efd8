"""The fault matrix, end to end: the real ``smd run`` under every fault, environment and mode.

Each fault is made real (the session cluster, a real hot_standby=off
standby, the fault proxy, the fake server, a fake DNS server), and for each
fault x environment (development, staging, production) x mode (the
environment's default; strict, permissive, conditional forced with
``SMD_BYPASS__MODE``) one ``smd run tests/targets/db_only.py:startup
--report FILE`` runs as a subprocess with a fresh history store. The JSON
report is checked against ``tests/faults.py``: exit code, state, failure
kind, the decision and its reason, and the timing claims, read from the
report's phase timings (not the process's wall time, which includes Python
starting up).

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


class FirstContactProxy(FaultProxy):
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
    dns_queries: int = 0

    @property
    def phase(self) -> dict[str, Any]:
        assert self.report is not None, self.stderr
        p: dict[str, Any] = self.report["phases"][0]
        return p


@dataclass
class Bed:
    """Everything the faults need, made once for the module."""

    pg: PgCluster
    dsn: str
    limited_dsn: str
    workdir: Path
    slow: FaultProxy
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
    slow = FaultProxy(upstream, Forward(latency=SLOW_LATENCY))
    blackhole = FaultProxy(upstream, Blackhole())
    reset = FaultProxy(upstream, Reset())
    garbage = FakePostgres.garbage()
    for server in (slow, blackhole, reset, garbage):
        server.start()
    # One standby per module: pg_basebackup + start costs seconds.
    standby = pg.start_standby(hot_standby=False)
    try:
        yield Bed(
            pg,
            pg_dsn,
            pg_limited_dsn,
            workdir,
            slow,
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
        for server in (slow, blackhole, reset, garbage):
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
    if key == "slow":
        return bed.slow.dsn(bed.dsn)
    if key == "refused":
        return _with_host(bed.dsn, "127.0.0.1", free_port())
    if key == "blackhole":
        return bed.blackhole.dsn(bed.dsn)
    if key == "reset":
        return bed.reset.dsn(bed.dsn)
    if key == "starting_3s":
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
    proxy: FaultProxy | None = None
    if f.key == "starting_3s":
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
    return Run(case, out.returncode, doc, out.stderr, _learned(history, dsn, case.env))


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
    # first, many at once; runs whose claim is "over within 1 s" go after,
    # few at once, so that what they measure is smd and not a queue for
    # the CPU behind a dozen Python interpreters starting up.
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

    # timing claims, from the report's phase timings
    duration = p["end"] - p["start"]
    deadline = p["timeout"]["seconds"]
    assert deadline == pytest.approx(f.deadline), context  # the configured default
    if f.timing == "config_fast":
        assert duration < 1.0, context
    elif f.timing == "first_failure_fast":
        assert attempts[0]["end"] - p["start"] < 1.0, context
        assert duration <= deadline * 1.1, context
    elif f.timing == "at_deadline":
        assert deadline * 0.9 <= duration <= deadline * 1.1, context
    elif f.timing == "by_deadline":
        assert duration <= deadline * 1.1, context
    elif f.timing == "ready_3_to_4s":
        # 57P03 lasted 3 s from the first attempt, which came after the phase
        # started: ready no earlier than that, and promptly after (not at the
        # next tick of some fixed polling interval).
        assert STARTING_FOR - 0.05 <= duration <= 4.0, context
    elif f.key == "slow":
        assert duration >= SLOW_LATENCY, context


def test_every_fault_has_a_recipe(bed: Bed) -> None:
    for f in FAULTS:
        if f.key in bed.skips or f.key == "starting_3s":
            continue
        assert _dsn_for(bed, f, None)


def test_dns_faults_never_left_the_machine(bed: Bed, runs: dict[str, Run]) -> None:
    """The DNS cases were answered by the fake servers (so not by the real resolver)."""
    for key, server in bed.dns.items():
        if any(r.case.fault.key == key for r in runs.values()):
            assert server.queries > 0, f"{key}: the fake DNS server saw no query"


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
