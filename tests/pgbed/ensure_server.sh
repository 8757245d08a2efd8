#!/usr/bin/env bash
# Make sure the PostgreSQL 15 server binaries the test bed (and the
# quickstart's throwaway database) need are installed: as root on Debian,
# install the package postgresql-15; otherwise say exactly what is missing.
set -euo pipefail
PGBIN=${SMD_PG_BINDIR:-/usr/lib/postgresql/15/bin}
if [ -x "$PGBIN/postgres" ] && [ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pg_ctl" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL 15 server binaries (Debian package postgresql-15)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
    if [ -x "$PGBIN/postgres" ]; then
        exit 0
    fi
fi
echo "PostgreSQL 15 server binaries not found in $PGBIN;" \
     "install the Debian package postgresql-15 (or set SMD_PG_BINDIR)" >&2
exit 1
