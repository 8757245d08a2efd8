#!/usr/bin/env bash
# The main job from a fresh clone: installs smd into .venv, then plans and
# runs examples/quickstart.py. Without SMD_DATABASE_URL it starts a
# throwaway local PostgreSQL 15 (removed on exit) and points the quickstart
# at it. Runs the startup nine times so you can watch the database timeout
# being learned, then shows what was learned (`smd history`).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .

export SMD_ENVIRONMENT=${SMD_ENVIRONMENT:-development}
export SMD_HISTORY_PATH=${SMD_HISTORY_PATH:-$PWD/.smd/history.sqlite3}
export SMD_LOG_FORMAT=${SMD_LOG_FORMAT:-console}
mkdir -p .smd

if [ -z "${SMD_DATABASE_URL:-}" ]; then
    bash tests/pgbed/ensure_server.sh
    pgdir=$(mktemp -d /tmp/smd-quickstart-pg.XXXXXX)
    cleanup() { .venv/bin/python tests/pgbed/cluster.py down "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"; }
    trap cleanup EXIT
    echo "== no SMD_DATABASE_URL: starting a throwaway PostgreSQL in $pgdir" >&2
    SMD_DATABASE_URL=$(.venv/bin/python tests/pgbed/cluster.py up "$pgdir")
    export SMD_DATABASE_URL
fi

echo "== smd plan (dry run: no network I/O)" >&2
.venv/bin/smd plan examples/quickstart.py:startup
echo "== smd run (first start: the database timeout is the environment's default)" >&2
.venv/bin/smd run examples/quickstart.py:startup --report .smd/quickstart-report.json \
    --trace .smd/quickstart-trace.json
echo "== 8 more starts, quietly, so that smd has history to learn from" >&2
for _ in 1 2 3 4 5 6 7 8; do
    SMD_LOG_LEVEL=warning .venv/bin/smd run examples/quickstart.py:startup 2>/dev/null
done
echo "== smd plan again: the database timeout is now learned (source: adaptive)" >&2
.venv/bin/smd plan examples/quickstart.py:startup | sed -n '/^timeouts:/,/^$/p'
echo "== smd history (what was learned, and why)" >&2
.venv/bin/smd history
echo "== report: .smd/quickstart-report.json, trace (open in Perfetto): .smd/quickstart-trace.json" >&2
