#!/usr/bin/env bash
# Make sure the servers the test bed (and the quickstart's throwaway database)
# start are installed: the PostgreSQL 15 server binaries (Debian package
# postgresql-15), for the other checks' and fleet tests redis-server and
# pgbouncer, and chromium for the dashboard's browser test. As root on Debian they are installed with apt-get (one update,
# one install); otherwise say exactly what is missing. The tests start their
# own throwaway servers on free loopback ports; none is left running.
set -euo pipefail
PGBIN=${SMD_PG_BINDIR:-/usr/lib/postgresql/15/bin}
missing=()
if ! { [ -x "$PGBIN/postgres" ] && [ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pg_ctl" ]; }; then
    missing+=(postgresql-15)
fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
# The dashboard is tested in a real headless browser (tests/test_dashboard.py).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (Debian packages)" >&2
    apt-get update -qq
    # policy-rc.d: never start the packages' own services (no daemon is left
    # behind); only ours, and only while installing.
    ours=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        ours=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$ours" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
if [ -x "$PGBIN/postgres" ] && [ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pg_ctl" ]; then
    exit 0
fi
echo "PostgreSQL 15 server binaries not found in $PGBIN;" \
     "install the Debian package postgresql-15 (or set SMD_PG_BINDIR)" >&2
exit 1
