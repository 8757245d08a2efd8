"""Shared fixtures: the real-PostgreSQL test bed (cluster, fault proxy, fake server, standby).

pytest's default ``prepend`` import mode puts ``tests/`` on ``sys.path`` because
this conftest lives in a directory without ``__init__.py``; that is what makes
``from pgbed.cluster import PgCluster`` work in every test module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pgbed.cluster import AppCredentials, PgBedError, PgCluster, StandbyFactory
from pgbed.fakepg import FakePgFactory, FakePostgres, PgError, Reply
from pgbed.proxy import FaultProxy, StartingStandby

# Known names and passwords of the extra roles the session cluster carries.
LIMITED_ROLE = "smd_nolimit"
LIMITED_PASSWORD = "nolimit-pw"


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL 15 cluster for the whole session, removed at the end.

    It has an app role/database (``pg.app``, see `pg_dsn`) and a role
    ``smd_nolimit`` with ``CONNECTION LIMIT 0`` (every login gets 53300).
    """
    try:
        cluster = PgCluster.create()
    except PgBedError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cluster.ensure_app()
        cluster.create_role(LIMITED_ROLE, LIMITED_PASSWORD, connection_limit=0)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_app(pg: PgCluster) -> AppCredentials:
    """The app role's user, password and database on the session cluster."""
    assert pg.app is not None
    return pg.app


@pytest.fixture(scope="session")
def pg_dsn(pg: PgCluster, pg_app: AppCredentials) -> str:
    """DSN of the app role (scram password auth over TCP) on the session cluster."""
    return pg.dsn(pg_app.user, pg_app.password, pg_app.database)


@pytest.fixture(scope="session")
def pg_limited_dsn(pg: PgCluster) -> str:
    """DSN of a role with ``CONNECTION LIMIT 0``: every connect fails with 53300."""
    return pg.dsn(LIMITED_ROLE, LIMITED_PASSWORD, "postgres")


@pytest.fixture
def standby(pg: PgCluster) -> Iterator[StandbyFactory]:
    """Factory ``standby(hot_standby=False, settings=None) -> PgCluster``.

    Each call makes a fresh standby of the session primary with pg_basebackup
    (a few seconds); all are destroyed at the end of the test. With
    ``hot_standby=False`` it answers 57P03 until ``.promote()`` or
    ``.promote_after(seconds)``. Same roles and passwords as the primary, so
    ``sb.dsn()`` is the app DSN on the standby's port.
    """
    made: list[PgCluster] = []

    def make(*, hot_standby: bool = False, settings: dict[str, str] | None = None) -> PgCluster:
        cluster = pg.start_standby(hot_standby=hot_standby, settings=settings)
        made.append(cluster)
        return cluster

    yield make
    for cluster in reversed(made):
        cluster.destroy()


@pytest.fixture
def fault_proxy(pg: PgCluster) -> Iterator[FaultProxy]:
    """A `FaultProxy` to the session cluster, in ``forward`` mode; ``fault_proxy.dsn(pg_dsn)``."""
    with FaultProxy((pg.host, pg.port)) as proxy:
        yield proxy


@pytest.fixture
def fake_pg() -> Iterator[FakePgFactory]:
    """Factory ``fake_pg(reply) -> FakePostgres`` (started; closed after the test).

    ``reply`` is a `PgError` / `Garbage`, or a SQLSTATE string followed by a
    message (and optional detail): ``fake_pg("57P01", "terminating connection")``.
    """
    servers: list[FakePostgres] = []

    def make(reply: Reply | str, message: str = "", detail: str | None = None) -> FakePostgres:
        if isinstance(reply, str):
            reply = PgError(reply, message or f"fake error {reply}", detail)
        server = FakePostgres(reply)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def starting_standby(pg: PgCluster) -> Iterator[Callable[..., StartingStandby]]:
    """Factory ``starting_standby(hot_standby=True) -> StartingStandby``.

    A real server answering 57P03 "the database system is starting up" until
    ``.release()`` / ``.release_after(seconds)``; then ready (read-only) within
    a fraction of a second. ``.dsn()`` is the app DSN on it. Removed after the test.
    """
    made: list[StartingStandby] = []

    def make(*, hot_standby: bool = True) -> StartingStandby:
        standby = StartingStandby.start(pg, hot_standby=hot_standby)
        made.append(standby)
        return standby

    yield make
    for standby in reversed(made):
        standby.close()
