"""The test bed itself: each part produces the real fault it promises, seen by asyncpg."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from pgbed.cluster import AppCredentials, PgCluster, StandbyFactory
from pgbed.fakepg import FakePgFactory, Garbage
from pgbed.proxy import CloseAfter, FaultProxy, Forward, StartingStandby, replace_host_port

pytestmark = pytest.mark.postgres

# Far longer than any loopback answer; only a fault that never answers reaches it.
NO_ANSWER = 0.5


async def select_one(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        value: int = await conn.fetchval("SELECT 1")
        return value
    finally:
        await conn.close()


# -- the cluster: real server states -----------------------------------------------------


async def test_cluster_accepts_the_app_role(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        assert await conn.fetchval("SELECT current_user") == "smd_app"
        assert await conn.fetchval("SELECT current_database()") == "smd_app"
    finally:
        await conn.close()


async def test_wrong_password_is_28p01(pg: PgCluster, pg_dsn: str) -> None:
    assert pg.app is not None
    dsn = pg.dsn(pg.app.user, "not-the-password", pg.app.database)
    with pytest.raises(asyncpg.InvalidPasswordError) as info:
        await asyncpg.connect(dsn, timeout=10)
    assert info.value.sqlstate == "28P01"


async def test_missing_database_is_3d000(pg: PgCluster) -> None:
    assert pg.app is not None
    dsn = pg.dsn(pg.app.user, pg.app.password, "no_such_db")
    with pytest.raises(asyncpg.InvalidCatalogNameError) as info:
        await asyncpg.connect(dsn, timeout=10)
    assert info.value.sqlstate == "3D000"


async def test_connection_limit_zero_is_53300(pg_limited_dsn: str) -> None:
    with pytest.raises(asyncpg.TooManyConnectionsError) as info:
        await asyncpg.connect(pg_limited_dsn, timeout=10)
    assert info.value.sqlstate == "53300"


async def test_standby_hot_standby_off_is_57p03_until_promoted(standby: StandbyFactory) -> None:
    sb = standby(hot_standby=False)
    for _ in range(2):  # lasting, not a one-off
        with pytest.raises(asyncpg.CannotConnectNowError) as info:
            await asyncpg.connect(sb.dsn(), timeout=10)
        assert info.value.sqlstate == "57P03"
        assert "hot standby mode is disabled" in (info.value.detail or "").lower()
    sb.promote()
    conn = await asyncpg.connect(sb.dsn(), timeout=10)
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
        assert await conn.fetchval("SELECT current_user") == "smd_app"
    finally:
        await conn.close()


async def test_standby_promote_after_clears_57p03(standby: StandbyFactory) -> None:
    sb = standby(hot_standby=False)
    sb.promote_after(0.5)
    failures = 0
    while True:
        try:
            assert await select_one(sb.dsn()) == 1
            break
        except asyncpg.CannotConnectNowError:
            failures += 1
            await asyncio.sleep(0.05)
        assert failures < 400, "standby never became ready after promote_after"
    assert failures >= 1


async def test_starting_standby_is_57p03_starting_up_until_released(
    starting_standby: Callable[..., StartingStandby],
) -> None:
    sb = starting_standby()
    for _ in range(2):  # it stays that way while WAL cannot flow
        with pytest.raises(asyncpg.CannotConnectNowError) as info:
            await asyncpg.connect(sb.dsn(), timeout=10)
        assert info.value.sqlstate == "57P03"
        assert str(info.value) == "the database system is starting up"
        await asyncio.sleep(0.2)
    sb.release_after(0.3)
    for _ in range(400):
        try:
            conn = await asyncpg.connect(sb.dsn(), timeout=10)
            break
        except asyncpg.CannotConnectNowError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the standby never became ready after release")
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
        assert await conn.fetchval("SELECT current_user") == "smd_app"
    finally:
        await conn.close()


def test_script_mode_up_prints_only_the_dsn_and_down_stops(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    script = Path(__file__).parent / "pgbed" / "cluster.py"
    # Not tmp_path: pytest's base dir is private to root and the server runs as postgres.
    base = Path(
        subprocess.check_output(["mktemp", "-d", "/tmp/smd-pgscript-XXXXXX"], text=True).strip()
    )
    base.chmod(0o755)  # the server user must be able to reach db/
    directory = base / "db"
    try:
        up = subprocess.run(
            [sys.executable, str(script), "up", str(directory)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        lines = up.stdout.splitlines()
        assert len(lines) == 1
        dsn = lines[0]
        assert dsn.startswith("postgresql://smd_app:")
        assert asyncio.run(select_one(dsn)) == 1
        # Running "up" again reuses the running cluster and prints the same DSN.
        again = subprocess.run(
            [sys.executable, str(script), "up", str(directory)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert again.stdout.strip() == dsn
        subprocess.run(
            [sys.executable, str(script), "down", str(directory)], check=True, timeout=120
        )
        with pytest.raises(OSError):
            asyncio.run(select_one(dsn))
    finally:
        PgCluster.open(directory).destroy() if (directory / "pgbed.json").exists() else None
        subprocess.run(["rm", "-rf", str(base)], check=True)


# -- the fault proxy ---------------------------------------------------------------------


async def test_proxy_forwards_to_the_cluster(fault_proxy: FaultProxy, pg_dsn: str) -> None:
    assert await select_one(fault_proxy.dsn(pg_dsn)) == 1
    assert fault_proxy.accepted == 1
    assert fault_proxy.errors == []


async def test_one_connect_is_one_proxied_connection(
    fault_proxy: FaultProxy, pg: PgCluster, pg_app: AppCredentials
) -> None:
    # The proxy's accept count is a faithful attempt counter: asyncpg's
    # sslmode=prefer does not redial after a server error (the server offers no TLS).
    bad = fault_proxy.dsn(pg.dsn(pg_app.user, "wrong", pg_app.database))
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(bad, timeout=10)
    assert fault_proxy.accepted == 1


async def test_tls_required_but_not_offered(pg_dsn: str) -> None:
    # The cluster runs without TLS, so a client demanding it is refused the upgrade.
    with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
        await asyncpg.connect(pg_dsn, ssl="require", timeout=10)


async def test_blackhole_accepts_and_never_answers(fault_proxy: FaultProxy, pg_dsn: str) -> None:
    fault_proxy.set_mode("blackhole")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncpg.connect(fault_proxy.dsn(pg_dsn)), NO_ANSWER)
    # Accepted (unlike refuse): the client waited on an open connection.
    assert fault_proxy.accepted == 1


async def test_refuse_then_restore_on_the_same_port(fault_proxy: FaultProxy, pg_dsn: str) -> None:
    dsn = fault_proxy.dsn(pg_dsn)
    port = fault_proxy.port
    fault_proxy.set_mode("refuse")
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(dsn, timeout=10)
    assert fault_proxy.accepted == 0
    fault_proxy.set_mode("forward")
    assert fault_proxy.port == port
    assert await select_one(dsn) == 1


async def test_reset_during_the_handshake(fault_proxy: FaultProxy, pg_dsn: str) -> None:
    fault_proxy.set_mode("reset")
    with pytest.raises(ConnectionResetError):
        await asyncpg.connect(fault_proxy.dsn(pg_dsn), timeout=10)


@pytest.mark.parametrize("n_bytes", [0, 20, 200])
async def test_close_after_n_bytes_loses_the_connection(
    fault_proxy: FaultProxy, pg_dsn: str, n_bytes: int
) -> None:
    fault_proxy.set_mode(CloseAfter(n_bytes))
    # asyncpg reports a lost connection as ConnectionError (nothing read yet)
    # or ConnectionDoesNotExistError (08003, closed mid-handshake).
    with pytest.raises((ConnectionError, asyncpg.ConnectionDoesNotExistError)):
        await asyncpg.connect(fault_proxy.dsn(pg_dsn), timeout=10)


async def test_latency_delays_the_answer_and_draws_from_the_distribution(
    fault_proxy: FaultProxy, pg_dsn: str
) -> None:
    draws: list[float] = []

    def slow() -> float:
        draws.append(0.1)
        return 0.1

    fault_proxy.set_mode(Forward(latency=slow))
    finished: list[str] = []

    async def run(name: str, dsn: str) -> None:
        assert await select_one(dsn) == 1
        finished.append(name)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(run("proxied", fault_proxy.dsn(pg_dsn)))
        tg.create_task(run("direct", pg_dsn))
    assert finished == ["direct", "proxied"]
    # One draw before dialing upstream, then one per chunk of the handshake.
    assert len(draws) >= 3


async def test_switching_modes_acts_on_open_connections(
    fault_proxy: FaultProxy, pg_dsn: str
) -> None:
    conn = await asyncpg.connect(fault_proxy.dsn(pg_dsn), timeout=10)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        fault_proxy.set_mode("blackhole")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conn.fetchval("SELECT 2"), NO_ANSWER)
    finally:
        conn.terminate()
    fault_proxy.set_mode("forward")
    conn = await asyncpg.connect(fault_proxy.dsn(pg_dsn), timeout=10)
    try:
        fault_proxy.set_mode("reset")
        with pytest.raises((ConnectionError, asyncpg.ConnectionDoesNotExistError)):
            await conn.fetchval("SELECT 3")
    finally:
        conn.terminate()


async def test_error_mode_then_scheduled_forward(fault_proxy: FaultProxy, pg_dsn: str) -> None:
    dsn = fault_proxy.dsn(pg_dsn)
    fault_proxy.set_mode("error", sqlstate="57P03", message="the database system is starting up")
    fault_proxy.set_mode_after(0.5, "forward")
    with pytest.raises(asyncpg.CannotConnectNowError) as info:
        await asyncpg.connect(dsn, timeout=10)
    assert info.value.sqlstate == "57P03"
    assert str(info.value) == "the database system is starting up"
    for _ in range(200):
        try:
            assert await select_one(dsn) == 1
            break
        except asyncpg.CannotConnectNowError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the scheduled switch to forward never happened")
    assert isinstance(fault_proxy.mode, Forward)


def test_proxy_serves_sync_code_and_closes_cleanly(pg: PgCluster, pg_dsn: str) -> None:
    with FaultProxy((pg.host, pg.port)) as proxy:
        assert asyncio.run(select_one(proxy.dsn(pg_dsn))) == 1
        port = proxy.port
    # Closed: the port no longer accepts.
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(select_one(replace_host_port(pg_dsn, "127.0.0.1", port)))


def test_replace_host_port_keeps_credentials_and_query() -> None:
    dsn = "postgresql://u:p%40ss@db.example:5432/app?sslmode=disable"
    assert replace_host_port(dsn, "127.0.0.1", 6000) == (
        "postgresql://u:p%40ss@127.0.0.1:6000/app?sslmode=disable"
    )


# -- the fake server ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sqlstate", "message", "exc_type"),
    [
        (
            "57P01",
            "terminating connection due to administrator command",
            asyncpg.AdminShutdownError,
        ),
        (
            "57P02",
            "terminating connection due to crash of another server process",
            asyncpg.CrashShutdownError,
        ),
        ("08P01", "invalid startup packet layout", asyncpg.ProtocolViolationError),
        ("XX000", "internal error", asyncpg.InternalServerError),
        ("57P03", "the database system is starting up", asyncpg.CannotConnectNowError),
    ],
)
async def test_fake_server_answers_with_the_chosen_sqlstate(
    fake_pg: FakePgFactory, sqlstate: str, message: str, exc_type: type[Exception]
) -> None:
    fake = fake_pg(sqlstate, message)
    with pytest.raises(exc_type) as info:
        await asyncpg.connect(fake.dsn(user="alice", database="inventory"), timeout=10)
    assert getattr(info.value, "sqlstate", None) == sqlstate
    assert str(info.value) == message
    assert len(fake.startups) == 1
    assert fake.startups[0]["user"] == "alice"
    assert fake.startups[0]["database"] == "inventory"
    assert fake.errors == []


async def test_fake_server_not_postgresql(fake_pg: FakePgFactory) -> None:
    # An HTTP server answers the SSLRequest with "HTTP/1.1 ...", not S or N.
    fake = fake_pg(Garbage())
    with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
        await asyncpg.connect(fake.dsn(), timeout=10)
    # Without TLS the client's startup message gets the HTTP reply instead.
    with pytest.raises((ConnectionError, asyncpg.ConnectionDoesNotExistError)):
        await asyncpg.connect(fake.dsn(), ssl=False, timeout=10)
    assert fake.accepted == 2
