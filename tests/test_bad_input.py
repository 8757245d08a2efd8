"""The bad input catalogue: every way to hold smd wrong, each answered the same way.

The real ``smd`` command runs in a fresh working directory (so ``smd.toml``,
``pyproject.toml`` and ``.env`` there are read). For each case: exactly one
line on stderr, ``smd: ...``, naming what is wrong and what is accepted;
the documented exit code (64 usage, 78 invalid settings / plan / DSN);
no traceback (without ``--debug``); nothing on stdout; nothing written
to the history store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "tests" / "targets"
PLANS = f"{TARGETS / 'bad_plans.py'}:startup"
USAGE, INVALID = 64, 78
POSITIVE = "accepted: a positive finite number of seconds"
DSN = "postgresql://u:pw-123@127.0.0.1:xx/db"


def _fifo(cwd: Path) -> None:
    os.mkfifo(cwd / "smd.toml")


def _directory(cwd: Path) -> None:
    (cwd / "smd.toml").mkdir()


def _io_error(cwd: Path) -> None:
    # Permissions do not stop root (CAP_DAC_OVERRIDE), and pydantic-settings
    # skips directories and FIFOs; a regular file whose read fails does stop
    # root: /proc/self/mem raises EIO when read from offset 0.
    (cwd / "smd.toml").symlink_to("/proc/self/mem")


def _loop(cwd: Path) -> None:
    (cwd / "smd.toml").symlink_to("smd.toml")


@dataclass(frozen=True)
class Case:
    args: list[str]
    code: int
    needles: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


REDIS_FORMS = (
    "redis://[USERINFO@]HOST[:PORT][/DB] (rediss:// for TLS), where USERINFO is "
    "USER:PASSWORD (an ACL user) or :PASSWORD (the default user) for AUTH"
)
KINDS_JSON = (
    """a JSON list, e.g. '["infrastructure","timeout"]', of 'infrastructure', 'timeout', """
    "'configuration', 'application' or 'unknown'"
)


def _plan_error(case: str, *needles: str) -> Case:
    # `run`, not `plan`: proves an invalid plan stops before anything runs or is recorded.
    return Case(["run", PLANS], INVALID, ("invalid plan: ", *needles), env={"BAD_CASE": case})


CASES: dict[str, Case] = {
    # -- plan validation (TARGET modules) --------------------------------------------
    "plan-cycle": _plan_error("cycle", "cycle: a -> c -> b -> a"),
    "plan-self-cycle": _plan_error("self-cycle", "cycle: a -> a"),
    "plan-unknown-requirement": _plan_error(
        "unknown-requirement", "phase 'b' requires unknown phase 'missing'"
    ),
    "plan-duplicate-name": _plan_error("duplicate", "duplicate phase name 'a'"),
    "plan-sync-callable": _plan_error(
        "sync-callable", "'_sync' is not an async callable", "async def"
    ),
    "plan-sync-teardown": _plan_error("sync-teardown", "teardown must be an async callable"),
    "plan-timeout-negative": _plan_error(
        "timeout-negative", "timeout must be a positive finite number of seconds, got -1.0"
    ),
    "plan-timeout-zero": _plan_error("timeout-zero", "positive finite", "got 0"),
    "plan-timeout-nan": _plan_error("timeout-nan", "positive finite", "got nan"),
    "plan-timeout-inf": _plan_error("timeout-inf", "positive finite", "got inf"),
    "plan-timeout-string": _plan_error("timeout-string", "or a timeout policy, got '10s'"),
    "plan-bad-name": _plan_error("bad-name", "invalid phase name 'has space'", "use letters"),
    "plan-command-cycle": Case(
        ["plan", PLANS], INVALID, ("cycle: a -> c -> b -> a",), env={"BAD_CASE": "cycle"}
    ),
    # -- settings ------------------------------------------------------------------
    # The argument is named as the argument (issue 10 section 5), not as SMD_ENVIRONMENT.
    "env-unknown-flag": Case(
        ["run", PLANS, "--env", "qa"],
        INVALID,
        (
            "smd: invalid argument --env (got 'qa'): ",
            "unknown environment 'qa'",
            "development, staging, production, test",
        ),
    ),
    "env-unknown-variable": Case(
        ["plan", PLANS], INVALID, ("unknown environment 'qa'",), env={"SMD_ENVIRONMENT": "qa"}
    ),
    "env-unknown-smd-toml": Case(
        ["run", PLANS],
        INVALID,
        ("invalid setting environment in ", "smd.toml (got 'qa'): ", "accepted: development"),
        files={"smd.toml": b'environment = "qa"\n'},
    ),
    "bypass-mode-unknown": Case(
        ["run", PLANS],
        INVALID,
        ("SMD_BYPASS__MODE", "'lenient'", "accepted: 'strict', 'permissive' or 'conditional'"),
        env={"SMD_BYPASS__MODE": "lenient"},
    ),
    "bypass-cell-unknown-kind": Case(
        ["run", PLANS],
        INVALID,
        ("SMD_BYPASS__PRODUCTION__BOGUS", "accepted: 'infrastructure', 'timeout'"),
        env={"SMD_BYPASS__PRODUCTION__BOGUS": "continue"},
    ),
    # A list, dict or model setting given as a variable: the variable is named, not
    # pydantic-settings' field and source, nor a list index; the accepted form is JSON.
    "bypass-kinds-not-json": Case(
        ["run", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_BYPASS__ALLOWED_KINDS (got 'infrastructure'): "
            f"not valid JSON; accepted: {KINDS_JSON}",
        ),
        env={"SMD_BYPASS__ALLOWED_KINDS": "infrastructure"},
    ),
    "bypass-kinds-not-json-in-dotenv": Case(
        ["run", PLANS],
        INVALID,
        ("smd: invalid setting SMD_BYPASS__ALLOWED_KINDS (got 'timeout'): not valid JSON; ",),
        files={".env": b"SMD_BYPASS__ALLOWED_KINDS=timeout\n"},
    ),
    "bypass-kinds-unknown-kind": Case(
        ["run", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_BYPASS__ALLOWED_KINDS (got 'bogus'): accepted: 'infrastructure'",
        ),
        env={"SMD_BYPASS__ALLOWED_KINDS": '["bogus"]'},
    ),
    "bypass-kinds-not-a-list": Case(
        ["run", PLANS],
        INVALID,
        (
            "SMD_BYPASS__ALLOWED_KINDS (got 'timeout'): not a JSON list; ",
            f"; accepted: {KINDS_JSON}",
        ),
        env={"SMD_BYPASS__ALLOWED_KINDS": '"timeout"'},
    ),
    # JSON of another kind than the model's: what it is not, then what it accepts.
    "timeouts-env-not-an-object": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_TIMEOUTS__PRODUCTION (got [1]): not a JSON object; "
            "accepted: a JSON object with any of the keys default, floor, ceiling "
            "(or SMD_TIMEOUTS__PRODUCTION__KEY for one key)",
        ),
        env={"SMD_TIMEOUTS__PRODUCTION": "[1]"},
    ),
    "timeouts-env-not-a-table-smd-toml": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting timeouts.production in ",
            "smd.toml (got [1]): not a table; accepted: a table with any of the keys default",
        ),
        files={"smd.toml": b"[timeouts]\nproduction = [1]\n"},
    ),
    # An unknown key inside a variable's JSON is named like any unknown key: the
    # variable, the key inside it, the closest valid key, else the accepted ones.
    "bypass-json-unknown-key": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: unknown setting 'x' in SMD_BYPASS; accepted: ",
            "docs/reference/settings.md",
        ),
        env={"SMD_BYPASS": '{"x": 1}'},
    ),
    "bypass-json-typo-beside-a-valid-key": Case(
        ["plan", PLANS],
        INVALID,
        ("smd: unknown setting 'mod' in SMD_BYPASS; did you mean 'mode'?",),
        env={"SMD_BYPASS": '{"mode": "strict", "mod": "x"}'},
    ),
    "bypass-json-typo-in-dotenv": Case(
        ["plan", PLANS],
        INVALID,
        ("smd: unknown setting 'mod' in SMD_BYPASS; did you mean 'mode'?",),
        files={".env": b'SMD_BYPASS=\'{"mod": "x"}\'\n'},
    ),
    "timeouts-json-nested-typo": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: unknown setting 'production.flor' in SMD_TIMEOUTS; "
            "did you mean 'production.floor'?",
        ),
        env={"SMD_TIMEOUTS": '{"production": {"flor": 1}}'},
    ),
    "timeouts-env-json-typo": Case(
        ["plan", PLANS],
        INVALID,
        ("smd: unknown setting 'flor' in SMD_TIMEOUTS__PRODUCTION; did you mean 'floor'?",),
        env={"SMD_TIMEOUTS__PRODUCTION": '{"flor": 1}'},
    ),
    "timeouts-json-unknown-key": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: unknown setting 'production.zz' in SMD_TIMEOUTS; accepted: "
            "production.ceiling, production.default, production.floor",
        ),
        env={"SMD_TIMEOUTS": '{"production": {"zz": 1}}'},
    ),
    "bypass-cells-not-json": Case(
        ["run", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_BYPASS__PRODUCTION (got 'continue'): not valid JSON; "
            """accepted: a JSON object, e.g. '{"infrastructure":"fail"}', from 'infrastructure', """,
            "to 'fail', 'continue' or 'conditional'",
        ),
        env={"SMD_BYPASS__PRODUCTION": "continue"},
    ),
    "bypass-not-json": Case(
        ["run", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_BYPASS (got 'strict'): not valid JSON; "
            "accepted: a JSON object with any of the keys mode, development, ",
            "(or SMD_BYPASS__KEY for one key)",
        ),
        env={"SMD_BYPASS": "strict"},
    ),
    "bypass-json-unknown-kind": Case(
        ["run", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_BYPASS (at key production.bogus) (got 'bogus'): "
            "accepted: 'infrastructure'",
        ),
        env={"SMD_BYPASS": '{"production": {"bogus": "continue"}}'},
    ),
    "bypass-cell-unknown-action": Case(
        ["run", PLANS],
        INVALID,
        ("SMD_BYPASS__STAGING__TIMEOUT", "accepted: 'fail', 'continue' or 'conditional'"),
        env={"SMD_BYPASS__STAGING__TIMEOUT": "maybe"},
    ),
    "bypass-cell-in-pyproject": Case(
        ["run", PLANS],
        INVALID,
        (
            "invalid setting bypass.production.bogus in [tool.smd] of ",
            "pyproject.toml (got 'bogus'): accepted: 'infrastructure'",
        ),
        files={"pyproject.toml": b'[tool.smd.bypass.production]\nbogus = "continue"\n'},
    ),
    **{
        f"{var.lower()}-{label}": Case(
            ["run", PLANS],
            INVALID,
            (f"SMD_{var}", f"(got '{value}')", POSITIVE),
            {f"SMD_{var}": value},
        )
        for var in ("PHASE_TIMEOUT", "STARTUP_BUDGET")
        for label, value in (("negative", "-1"), ("zero", "0"), ("nan", "nan"), ("inf", "inf"))
    },
    "budget-not-a-number": Case(
        ["run", PLANS],
        INVALID,
        ("SMD_STARTUP_BUDGET", "valid number"),
        env={"SMD_STARTUP_BUDGET": "two minutes"},
    ),
    # A scalar's error says what it accepts, from its type and bounds, not pydantic's words.
    "budget-not-a-number-accepted": Case(
        ["plan", PLANS],
        INVALID,
        (f"smd: invalid setting SMD_STARTUP_BUDGET (got 'abc'): not a valid number; {POSITIVE}",),
        env={"SMD_STARTUP_BUDGET": "abc"},
    ),
    "history-enabled-not-a-boolean": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_HISTORY_ENABLED (got 'perhaps'): not a valid boolean; "
            "accepted: true/false (also 1/0, yes/no, on/off)",
        ),
        env={"SMD_HISTORY_ENABLED": "perhaps"},
    ),
    "min-success-rate-above-one": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_BYPASS__MIN_SUCCESS_RATE (got '2'): "
            "accepted: a number from 0 to 1",
        ),
        env={"SMD_BYPASS__MIN_SUCCESS_RATE": "2"},
    ),
    "min-success-rate-not-a-number": Case(
        ["plan", PLANS],
        INVALID,
        ("(got 'most'): not a valid number; accepted: a number from 0 to 1",),
        env={"SMD_BYPASS__MIN_SUCCESS_RATE": "most"},
    ),
    "max-consecutive-degraded-zero": Case(
        ["plan", PLANS],
        INVALID,
        ("SMD_BYPASS__MAX_CONSECUTIVE_DEGRADED (got '0'): accepted: an integer >= 1",),
        env={"SMD_BYPASS__MAX_CONSECUTIVE_DEGRADED": "0"},
    ),
    "half-life-zero": Case(
        ["plan", PLANS],
        INVALID,
        ("SMD_BYPASS__SUCCESS_HALF_LIFE_HOURS (got '0'): accepted: a number > 0",),
        env={"SMD_BYPASS__SUCCESS_HALF_LIFE_HOURS": "0"},
    ),
    # A value from a file is named by its key and file, not as a variable no one set.
    # A complex setting from a file: TOML forms, the file's key, no variable syntax.
    "bypass-not-a-table-smd-toml": Case(
        ["plan", PLANS],
        INVALID,
        ("smd: invalid setting bypass in ", "smd.toml (got 1): ", "accepted: a table with"),
        files={"smd.toml": b"bypass = 1\n"},
    ),
    "allowed-kinds-not-an-array-smd-toml": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting bypass.allowed_kinds in ",
            'accepted: an array, e.g. ["infrastructure", "timeout"], of \'infrastructure\'',
        ),
        files={"smd.toml": b'[bypass]\nallowed_kinds = "x"\n'},
    ),
    "allowed-kinds-bad-item-smd-toml": Case(
        ["plan", PLANS],
        INVALID,
        ("smd: invalid setting bypass.allowed_kinds in ", "smd.toml (got 'x'): accepted: "),
        files={"smd.toml": b'[bypass]\nallowed_kinds = ["x"]\n'},
    ),
    "bypass-json-inner-key": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_BYPASS (at key force_continue) (got 'maybe'): ",
            "accepted: true/false",
        ),
        env={"SMD_BYPASS": '{"force_continue": "maybe"}'},
    ),
    "budget-negative-smd-toml": Case(
        ["plan", PLANS],
        INVALID,
        ("smd: invalid setting startup_budget in ", f"smd.toml (got -1): {POSITIVE}"),
        files={"smd.toml": b"startup_budget = -1\n"},
    ),
    "budget-negative-pyproject": Case(
        ["plan", PLANS],
        INVALID,
        (
            "invalid setting startup_budget in [tool.smd] of ",
            f"pyproject.toml (got -1): {POSITIVE}",
        ),
        files={"pyproject.toml": b"[tool.smd]\nstartup_budget = -1\n"},
    ),
    "budget-variable-over-smd-toml": Case(
        ["plan", PLANS],
        INVALID,
        (f"smd: invalid setting SMD_STARTUP_BUDGET (got '-2'): {POSITIVE}",),
        env={"SMD_STARTUP_BUDGET": "-2"},
        files={"smd.toml": b"startup_budget = -1\n"},
    ),
    # An unknown key without a close match says what is accepted.
    "smd-toml-unknown-key": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: unknown setting 'bogus_key' in ",
            "smd.toml; accepted: the keys listed in docs/reference/settings.md",
        ),
        files={"smd.toml": b"bogus_key = 1\n"},
    ),
    "smd-toml-unknown-nested-key": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: unknown setting 'timeouts.production.bogus' in ",
            "smd.toml; accepted: timeouts.production.ceiling, timeouts.production.default, "
            "timeouts.production.floor",
        ),
        files={"smd.toml": b"[timeouts.production]\nbogus = 1\n"},
    ),
    "budget-negative-dotenv": Case(
        ["run", PLANS],
        INVALID,
        ("SMD_STARTUP_BUDGET", POSITIVE),
        files={".env": b"SMD_STARTUP_BUDGET=-5\n"},
    ),
    "floor-above-ceiling": Case(
        ["run", PLANS],
        INVALID,
        ("SMD_TIMEOUTS__PRODUCTION", "floor (100s) is above ceiling (10s)"),
        env={"SMD_TIMEOUTS__PRODUCTION__FLOOR": "100", "SMD_TIMEOUTS__PRODUCTION__CEILING": "10"},
    ),
    "floor-above-ceiling-smd-toml": Case(
        ["plan", PLANS],
        INVALID,
        ("invalid setting timeouts.staging in ", "smd.toml: floor (50s) is above ceiling (5s)"),
        files={"smd.toml": b"[timeouts.staging]\nfloor = 50\nceiling = 5\n"},
    ),
    # An unknown profile is one line and 78 like every invalid setting (issue 10 section 5).
    "timeouts-profile-unknown": Case(
        ["run", PLANS],
        INVALID,
        (
            "invalid setting SMD_TIMEOUTS__PROFILE (got 'cloudsql-vpc')",
            "unknown infrastructure profile",
            "accepted: none, cloudsql-connector",
        ),
        env={"SMD_TIMEOUTS__PROFILE": "cloudsql-vpc"},
    ),
    "timeouts-profile-unknown-smd-toml": Case(
        ["plan", PLANS],
        INVALID,
        ("invalid setting timeouts.profile in ", "smd.toml (got 'bogus')", "accepted: none"),
        files={"smd.toml": b'[timeouts]\nprofile = "bogus"\n'},
    ),
    "timeout-default-negative": Case(
        ["run", PLANS],
        INVALID,
        ("SMD_TIMEOUTS__DEVELOPMENT__DEFAULT", POSITIVE),
        env={"SMD_TIMEOUTS__DEVELOPMENT__DEFAULT": "-3"},
    ),
    # -- DSNs --------------------------------------------------------------------------
    "dsn-not-a-url": Case(
        ["run", PLANS],
        INVALID,
        ("SMD_DATABASE_URL", "not a URL", "accepted: a URL like postgresql://"),
        env={"SMD_DATABASE_URL": "not a dsn"},
    ),
    "dsn-bad-port": Case(
        ["run", f"{TARGETS / 'sec_db.py'}:startup"],
        INVALID,
        ("SMD_DATABASE_URL", "port is not a number from 1 to 65535", "accepted: a URL"),
        env={"SMD_DATABASE_URL": DSN},
    ),
    "dsn-port-out-of-range": Case(
        ["history"],
        INVALID,
        ("SMD_DATABASE_URL", "port"),
        env={"SMD_DATABASE_URL": "postgresql://u@h1:5432,h2:99999/db"},
    ),
    # The specific accepted part only, not the URL form after it as well.
    "dsn-bad-sslmode": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_DATABASE_URL: invalid sslmode 'bogus'; "
            "accepted: disable, allow, prefer, require, verify-ca, verify-full",
        ),
        env={"SMD_DATABASE_URL": "postgresql://u:s3cr3t@h/db?sslmode=bogus"},
    ),
    # Bytes that are not UTF-8 (the environment hands them over undecoded): said so,
    # with what is accepted, and never echoed (a URL holds a password).
    "dsn-not-utf8": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_DATABASE_URL: not valid UTF-8 text; "
            "accepted: a URL like postgresql://",
        ),
        env={"SMD_DATABASE_URL": "postgresql://u:s3cr3t\udcff@h/db"},
    ),
    "environment-not-utf8": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_ENVIRONMENT: not valid UTF-8 text; "
            "accepted: 'development', 'staging', 'production' or 'test'",
        ),
        env={"SMD_ENVIRONMENT": "prod\udcffuction"},
    ),
    "bypass-json-mode-not-utf8": Case(
        ["plan", PLANS],
        INVALID,
        (
            "smd: invalid setting SMD_BYPASS (at key mode): not valid UTF-8 text; "
            "accepted: 'strict', 'permissive' or 'conditional'",
        ),
        env={"SMD_BYPASS": '{"mode": "str\udcffict"}'},
    ),
    # The accepted forms, verbatim: redaction (which masks what sits between a URL's
    # ':' and its last '@', and what follows "password:") leaves them whole.
    "check-http-unclosed-ipv6": Case(
        ["check", "http", "http://[::1/"],
        INVALID,
        (
            "invalid TARGET given to 'smd check http': write an IPv6 address in closed "
            "brackets, e.g. http://[::1]:8080/; accepted: an http:// or https:// URL",
        ),
    ),
    "check-redis-bad-db": Case(
        ["check", "redis", "redis://127.0.0.1:1/notadb"],
        INVALID,
        (f"the path must be the database number (/0, /1, ...); accepted: {REDIS_FORMS}",),
    ),
    "check-redis-user-without-password": Case(
        ["check", "redis", "redis://app@cache"],
        INVALID,
        (
            "a user name without a password (give USER:PASSWORD@ for an ACL user, "
            f":PASSWORD@ for the default user); accepted: {REDIS_FORMS}",
        ),
    ),
    "check-dsn-bad-port": Case(
        ["check", "postgres", DSN],
        INVALID,
        ("invalid TARGET given to 'smd check postgres'", "invalid port 'xx'", "integer"),
    ),
    "check-dsn-bad-port-short-password": Case(
        ["check", "postgres", "postgresql://u:p@h:xx/db"],
        INVALID,
        ("invalid port 'xx': expected an integer",),
    ),
    "check-dsn-not-a-url": Case(
        ["check", "postgres", "host=db user=u", "--format", "json"],
        INVALID,
        ("invalid DSN", "expected a URI like postgresql://"),
    ),
    "check-dsn-wrong-scheme": Case(
        ["check", "postgres", "mysql://u@h/db"],
        INVALID,
        ("scheme must be 'postgresql' or 'postgres', got 'mysql'",),
    ),
    "check-dsn-bad-sslmode": Case(
        ["check", "postgres", "postgresql://u@h/db?sslmode=sometimes"],
        INVALID,
        ("invalid sslmode 'sometimes'", "accepted: disable, allow, prefer, require"),
    ),
    # -- arguments ---------------------------------------------------------------------
    "check-timeout-negative": Case(
        ["check", "postgres", "postgresql://u@127.0.0.1/db", "--timeout", "-1"],
        USAGE,
        ("--timeout must be a positive finite number of seconds, got -1.0",),
    ),
    "check-timeout-nan": Case(
        ["check", "postgres", "postgresql://u@127.0.0.1/db", "--timeout", "nan"],
        USAGE,
        ("--timeout must be a positive finite number",),
    ),
    "check-timeout-not-a-number": Case(
        ["check", "postgres", "postgresql://u@127.0.0.1/db", "--timeout", "soon"],
        USAGE,
        ("argument --timeout: invalid float value: 'soon'",),
    ),
    "format-unknown": Case(
        ["plan", PLANS, "--format", "yaml"],
        USAGE,
        ("argument --format: invalid choice: 'yaml'", "'text', 'json'"),
    ),
    "history-format-unknown": Case(
        ["history", "--format", "csv"], USAGE, ("invalid choice: 'csv'", "'text', 'json'")
    ),
    "command-unknown": Case(["deploy"], USAGE, ("invalid choice: 'deploy'",)),
    "cmd-not-found": Case(
        ["run", PLANS, "--", "smd-no-such-server", "--port", "80"],
        USAGE,
        ("command not found after '--': 'smd-no-such-server'", "not on PATH"),
    ),
    "cmd-path-not-found": Case(  # a path is run as it is, never looked up on PATH
        ["run", PLANS, "--", "/nonexistent/bin/server"],
        USAGE,
        (
            "smd: usage error: command after '--' does not exist: '/nonexistent/bin/server'; "
            "accepted: an executable file or a command on PATH",
        ),
    ),
    "cmd-not-executable": Case(
        ["run", PLANS, "--", "./server.sh", "--port", "80"],
        USAGE,
        (
            "smd: usage error: command after '--' is not executable: './server.sh'; "
            "accepted: an executable file or a command on PATH",
        ),
        files={"server.sh": b"#!/bin/sh\nexit 0\n"},  # written 0644: no execute bit
    ),
    "cmd-is-a-directory": Case(
        ["run", PLANS, "--", "/"],
        USAGE,
        ("smd: usage error: command after '--' is a directory: '/'",),
    ),
    # -- output paths: checked before the first phase (issue 11) ---------------------
    "report-directory-missing": Case(
        ["run", PLANS, "--report", "missing/r.json"],
        USAGE,
        ("--report 'missing/r.json': directory 'missing' does not exist", "accepted: a file"),
    ),
    "report-is-a-directory": Case(
        ["run", PLANS, "--report", "."], USAGE, ("--report '.' is a directory",)
    ),
    "trace-under-a-file": Case(
        ["run", PLANS, "--trace", "notes.txt/trace.json"],
        USAGE,
        ("--trace 'notes.txt/trace.json': 'notes.txt' is not a directory", "accepted: a file"),
        files={"notes.txt": b"a file, not a directory\n"},
    ),
    "cmd-after-plan": Case(
        ["plan", PLANS, "--", "uvicorn"], USAGE, ("'-- CMD' is only accepted by 'smd run'",)
    ),
    # -- TARGET ------------------------------------------------------------------------
    "target-file-not-found": Case(
        ["run", "nope/app.py:startup"],
        USAGE,
        ("TARGET file not found: 'nope/app.py'", "'path/to/file.py:attr'"),
    ),
    "target-module-not-found": Case(
        ["run", "smd_no_such_app.main:startup"],
        USAGE,
        ("no module named 'smd_no_such_app'",),
    ),
    "target-no-colon": Case(["plan", "app.py"], USAGE, ("invalid TARGET 'app.py'", "expected")),
    "target-missing-attribute": Case(
        ["run", f"{TARGETS / 'sec_db.py'}:nope"], USAGE, ("module has no attribute 'nope'",)
    ),
    "target-not-a-startup": Case(
        ["run", f"{TARGETS / 'sec_db.py'}:app"],
        USAGE,
        ("is a Starlette, not a smd.Startup", "expected 'package.module:attr'"),
    ),
    "target-an-int": Case(
        ["plan", "errno:EPERM"],
        USAGE,
        ("smd: TARGET 'errno:EPERM' is an int, not a smd.Startup",),
    ),
    "target-import-error-inside": Case(
        ["run", f"{TARGETS / 'bad_import.py'}:startup"],
        USAGE,
        ("cannot import TARGET", "no module named 'smd_no_such_dependency'"),
    ),
    "target-raises-while-importing": Case(
        ["plan", f"{TARGETS / 'bad_runtime_import.py'}:startup"],
        USAGE,
        ("cannot import TARGET", "KeyError while importing", "BAD_REQUIRED_VARIABLE"),
    ),
    # -- settings files ----------------------------------------------------------------
    "settings-file-unreadable": Case(
        ["run", PLANS],
        INVALID,
        ("cannot read settings file", "smd.toml", "Input/output error"),
        setup=_io_error,
    ),
    "settings-file-is-a-directory": Case(
        ["run", PLANS],
        INVALID,
        ("smd.toml: it is a directory", "accepted: a TOML file"),
        setup=_directory,
    ),
    "settings-file-is-a-fifo": Case(
        ["plan", PLANS], INVALID, ("smd.toml: it is not a regular file",), setup=_fifo
    ),
    "settings-file-link-loop": Case(
        ["plan", PLANS],
        INVALID,
        ("smd.toml: it is a broken or looping symbolic link",),
        setup=_loop,
    ),
    "settings-file-not-utf8": Case(
        ["run", PLANS],
        INVALID,
        ("smd.toml: not valid UTF-8", "accepted: a readable UTF-8 text file"),
        files={"smd.toml": b"environment = '\xff\xfe'\n"},
    ),
    "dotenv-not-utf8": Case(
        ["run", PLANS], INVALID, (".env: not valid UTF-8",), files={".env": b"SMD_X=\xff\n"}
    ),
    # python-dotenv skips a line it cannot parse, with a warning of its own:
    # the setting on it would be silently lost. The line is never quoted.
    "dotenv-malformed": Case(
        ["run", PLANS],
        INVALID,
        (".env at line 2; accepted: KEY=VALUE lines",),
        files={".env": b'APP_MODE=ok\nSMD_DATABASE_URL="postgresql://u:s3cr3t@db/app\n'},
    ),
    "smd-toml-malformed": Case(
        ["run", PLANS],
        INVALID,
        ("malformed TOML", "smd.toml", "line 1"),
        files={"smd.toml": b"environment = [unclosed\n"},
    ),
    "pyproject-malformed": Case(
        ["run", PLANS],
        INVALID,
        ("malformed TOML", "pyproject.toml"),
        files={"pyproject.toml": b"[tool.smd]\nenvironment = 'production\n"},
    ),
}


def _run(cwd: Path, case: Case, *, debug: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMD_", "BAD_"))}
    env.update(SMD_HISTORY_PATH=str(cwd.parent / "state" / "history.sqlite3"), **case.env)
    argv = [sys.executable, "-m", "smd", *(["--debug"] if debug else []), *case.args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_the_catalogue_is_complete() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(cwd: Path, name: str) -> None:
    case = CASES[name]
    for filename, data in case.files.items():
        (cwd / filename).write_bytes(data)
    if case.setup is not None:
        case.setup(cwd)
    out = _run(cwd, case)
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("smd: "), line
    for needle in case.needles:
        assert needle in line, line
    # pydantic's own wording never reaches the user.
    assert "Input should be" not in line, line
    assert "Extra inputs are not permitted" not in line, line
    assert out.returncode == case.code, line
    assert "Traceback" not in out.stderr
    assert out.stdout == ""
    state = cwd.parent / "state"
    assert not state.exists() or list(state.iterdir()) == [], list(state.iterdir())


@pytest.mark.parametrize(
    "name",
    [
        "dsn-bad-sslmode",
        "dsn-not-utf8",
        "budget-not-a-number-accepted",
        "history-enabled-not-a-boolean",
        "timeouts-env-not-an-object",
    ],
)
def test_one_accepted_part_and_no_secret(cwd: Path, name: str) -> None:
    """One ``accepted:`` (the specific one), pydantic's own words gone, no password."""
    out = _run(cwd, CASES[name])
    (line,) = out.stderr.splitlines()
    assert line.count("accepted:") == 1, line
    assert "Input should be" not in line
    assert "s3cr3t" not in out.stderr


def test_a_malformed_dotenv_line_is_named_never_quoted(cwd: Path) -> None:
    case = CASES["dotenv-malformed"]
    for filename, data in case.files.items():
        (cwd / filename).write_bytes(data)
    out = _run(cwd, case)
    assert out.returncode == case.code
    assert "s3cr3t" not in out.stdout + out.stderr
    assert "python-dotenv" not in out.stderr  # its own warning is not printed beside ours


def test_the_redis_checks_error_accepts_what_its_help_says(cwd: Path) -> None:
    """The accepted forms in the error line are the TARGET help's, unmasked."""
    from smd.plugins import checks

    name = "redis"
    out = _run(cwd, Case(["check", name, "redis://127.0.0.1:1/notadb"], INVALID, ()))
    assert out.returncode == INVALID, out.stderr
    (line,) = out.stderr.splitlines()
    accepted = line.split("; accepted: ", 1)[1]
    assert "***" not in accepted
    assert checks()[name].target_help.startswith(accepted), (accepted, checks()[name].target_help)


def test_the_example_a_json_setting_error_gives_is_accepted(cwd: Path) -> None:
    """The form the error line shows, copied into the variable, is a valid setting."""
    out = _run(cwd, CASES["bypass-kinds-not-json"])
    example = out.stderr.split("e.g. '", 1)[1].split("'", 1)[0]
    assert json.loads(example) == ["infrastructure", "timeout"]
    done = _run(cwd, Case(["plan", PLANS], 0, (), env={"SMD_BYPASS__ALLOWED_KINDS": example}))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("name", ["target-import-error-inside", "settings-file-not-utf8"])
def test_debug_keeps_the_one_line_and_the_code(cwd: Path, name: str) -> None:
    """``--debug`` adds a traceback where there is one to show; the verdict stays the same."""
    case = CASES[name]
    for filename, data in case.files.items():
        (cwd / filename).write_bytes(data)
    out = _run(cwd, case, debug=True)
    assert out.returncode == case.code
    assert out.stderr.splitlines()[-1].startswith("smd: ")
    assert not (cwd.parent / "state").exists()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@db:5432/app",
        "postgres://u@db/app",
        "postgresql://u:p%40ss@h1:5432,h2:5433,[::1]:5434/app?sslmode=require",
        "postgresql:///app?host=/var/run/postgresql",
        "postgresql://u:a:b@db/app",
        "postgresql://[::1]/app",
    ],
)
def test_valid_database_urls_are_accepted(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """The URL check rejects only what no client could use: no false alarms."""
    from smd import load_settings
    from smd.phases._settings import DatabaseSettings

    monkeypatch.chdir(cwd)
    settings = load_settings(database_url=url)
    # SMD_DATABASE_URL is owned by the PostgreSQL side and merged into the loaded settings.
    assert isinstance(settings, DatabaseSettings)
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == url


@pytest.mark.parametrize(
    "url",
    [
        "db.example:5432",
        "host=db password=pw-secret-9",
        "postgresql://u:pw-secret-9@db:0/app",
        "postgresql://u:pw-secret-9@db:65536/app",
        "postgresql://u:pw-secret-9@db:5432,db2:port/app",
        "postgresql://u:pw-secret-9@[::1]:x/app",
    ],
)
def test_malformed_database_urls_are_invalid_settings_without_the_value(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    from smd import SettingsError, load_settings

    monkeypatch.chdir(cwd)
    with pytest.raises(SettingsError) as info:
        load_settings(database_url=url)
    text = str(info.value)
    assert text.startswith("invalid setting SMD_DATABASE_URL: ")
    assert "accepted: a URL like postgresql://" in text
    assert "secret" not in text
    assert "db:" not in text


SHARED_SECRET = "s3cr3t"
RUN_KINDS = ["run", f"{TARGETS / 'kinds.py'}:startup", "--", sys.executable, "-c", "pass"]


@pytest.mark.parametrize("variable", ["SMD_HISTORY_URL", "SMD_FLEET_URL"])
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            f"postgresql://u:{SHARED_SECRET}@h/db?sslmode=bogus",
            "invalid sslmode 'bogus'; accepted: disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (
            f"postgresql://u:{SHARED_SECRET}@h:99999/db",
            "invalid port '99999': expected an integer from 1 to 65535",
        ),
        (
            f"postgres://u:{SHARED_SECRET}@h:0/db",
            "invalid port '0': expected an integer from 1 to 65535",
        ),
    ],
)
@pytest.mark.parametrize("command", [RUN_KINDS, ["plan", PLANS], ["history"]])
def test_a_malformed_shared_url_is_an_invalid_setting_without_the_secret(
    cwd: Path, variable: str, url: str, problem: str, command: list[str]
) -> None:
    """SMD_HISTORY_URL is checked as SMD_FLEET_URL is: at settings load, exit 78."""
    out = _run(cwd, Case(command, INVALID, (), env={variable: url}))
    assert out.returncode == INVALID, out.stderr
    assert out.stderr.splitlines() == [f"smd: invalid setting {variable}: {problem}"]
    assert out.stdout == ""
    assert SHARED_SECRET not in out.stdout + out.stderr
    assert not (cwd.parent / "state").exists()  # nothing ran, nothing was recorded


def test_a_history_url_of_another_scheme_keeps_its_own_message(cwd: Path) -> None:
    case = Case(["plan", PLANS], INVALID, (), env={"SMD_HISTORY_URL": "redis://u:pw@h/0"})
    out = _run(cwd, case)
    assert out.returncode == INVALID
    assert out.stderr.splitlines() == [
        "smd: invalid setting SMD_HISTORY_URL: no shared history store for 'redis'; "
        "accepted: a URL whose scheme is one of postgres, postgresql"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@db:5432/app",
        "postgres://u@db/app?sslmode=verify-full",
        "POSTGRESQL://u:p%40ss@h1:5432,h2:5433/app?sslmode=require",
        "postgresql:///app?host=/var/run/postgresql",
    ],
)
def test_valid_history_urls_are_accepted(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    from smd import load_settings

    monkeypatch.chdir(cwd)
    settings = load_settings(history_url=url)
    assert settings.history_url is not None
    assert settings.history_url.get_secret_value() == url


def test_a_schema_name_with_a_trailing_newline_is_refused() -> None:
    from smd.checks._pg_fleet_settings import valid_schema

    assert valid_schema("smd") == "smd"
    assert valid_schema("fleet_a" + "9" * 56) == "fleet_a" + "9" * 56  # 63 characters
    for name in ["smd\n", "smd\n\n", "\nsmd", "smd ", "Smd", "9smd", "a" * 64, ""]:
        with pytest.raises(ValueError, match="invalid schema name"):
            valid_schema(name)
