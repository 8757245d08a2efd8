"""The test bed itself: each part produces the real fault it promises."""

from __future__ import annotations

import asyncpg
import pytest
from pgbed.cluster import PgCluster, StandbyFactory

pytestmark = pytest.mark.postgres


async def test_cluster_accepts_the_app_role(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        assert await conn.fetchval("SELECT current_user") == "smd_app"
    finally:
        await conn.close()


async def test_standby_hot_standby_off_then_promote(standby: StandbyFactory) -> None:
    sb: PgCluster = standby(hot_standby=False)
    with pytest.raises(asyncpg.CannotConnectNowError) as info:
        await asyncpg.connect(sb.dsn(), timeout=10)
    assert info.value.sqlstate == "57P03"
    sb.promote()
    conn = await asyncpg.connect(sb.dsn(), timeout=10)
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
    finally:
        await conn.close()
