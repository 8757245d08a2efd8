"""One database phase per DSN, for the secrets tests (tests/test_secrets_property.py).

``SEC_DSNS`` is a JSON list of DSNs written in code (one phase ``db0``,
``db1``... each); when ``SMD_DATABASE_URL`` is set, a phase ``settings_db``
reads it from settings too. ``SEC_TIMEOUT`` is each phase's deadline
(default 3 s). Many passwords go through one process this way.
"""

from __future__ import annotations

import json
import os

from smd import PhaseContext, Startup
from smd.phases import DatabasePhase

startup = Startup("sec-many")
_TIMEOUT = float(os.environ.get("SEC_TIMEOUT", "3"))


@startup.phase
async def config(ctx: PhaseContext) -> str:
    return "loaded"


for _i, _dsn in enumerate(json.loads(os.environ.get("SEC_DSNS", "[]"))):
    startup.add(DatabasePhase(_dsn, name=f"db{_i}", requires=["config"], timeout=_TIMEOUT))

if os.environ.get("SMD_DATABASE_URL"):
    startup.add(DatabasePhase(name="settings_db", requires=["config"], timeout=_TIMEOUT))
