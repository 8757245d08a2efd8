#!/usr/bin/env bash
# The whole test suite from a fresh clone: creates .venv, installs smd with
# its dev extra, makes sure the PostgreSQL 15 server binaries are present,
# then runs lint (ruff), the import-layer contracts (import-linter), the
# type check (mypy --strict) and pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k sequencer`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

bash tests/pgbed/ensure_server.sh || exit 1

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet . || { echo "tests/run.sh: run '.venv/bin/ruff format .'" >&2; exit 1; }
# Static tools read directories, not the editable install's import hook:
# stage the package as the wheel lays it out (symbolic links) and check that.
.venv/bin/python tests/stage_tree.py >/dev/null
echo "== import-linter (layers and cycles)" >&2
(cd .stage && ../.venv/bin/lint-imports ../pyproject.toml --no-cache) | sed -n '/^Contracts/,$p'
echo "== mypy --strict" >&2
.venv/bin/mypy
echo "== pytest" >&2
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    # pytest's "no tests collected": never let an empty run pass as green.
    echo "tests/run.sh: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$rc"
