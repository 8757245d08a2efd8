"""Property: a generated password never leaves smd, whatever it holds, through any output.

Hypothesis generates passwords of any printable character (the URI's reserved
ones ``/ & @ : ? # % +``, spaces, quotes, backslashes, a few non-ASCII
letters; short and long pieces around a unique token that marks every
fragment of the password), makes one real role per password on the real
cluster (in bulk), and writes each password into DSNs every way a user can:
percent-encoded or not, in the userinfo or in ``?password=``; in code and in
``SMD_DATABASE_URL``. Then the real CLI runs as subprocesses (one process for
all the passwords of an example): ``smd plan`` (text, JSON, ``--debug``),
``smd run`` ready / failed (28P01) / degraded (refused, development) / exec,
``smd check postgres`` ok / wrong password / refused / invalid DSN, a TARGET
whose import fails with DSN literals on the traceback line (``--debug``), an
invalid ``SMD_DATABASE_URL``, ``smd history`` (text, JSON), ``smd history
export`` (stdout and a file), ``import`` and ``replay`` (text, JSON) -- JSON and
console logs, the report, the trace, the SQLite history file and the export. Every
captured byte is scanned for the password in every escaped form and for the
token.

In process, each unencoded form either parses to exactly the password or is
refused as ambiguous (never a guess that would print a piece of it as a host).
``SMDTEST_SECRETS_EXAMPLES`` sets the number of examples (default 10: under a minute on an idle
two-core machine; each example runs about fifteen processes).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import string
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pgbed.cluster import AppCredentials, PgCluster

from smd.checks._pg_dsn import LIBPQ_PARAMS, PostgresConfigError, parse_dsn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests/targets/sec_many.py:startup"
SERVE = [sys.executable, "-c", "print('served')"]
EXAMPLES = int(os.environ.get("SMDTEST_SECRETS_EXAMPLES", "10"))
# Printable ASCII (space included, no other whitespace) and letters that SASLprep
# leaves alone, so that the server and asyncpg derive the same SCRAM key.
ALPHABET = "".join(c for c in string.printable if c == " " or not c.isspace()) + "éßøЖλ中€ü"
PIECES = st.text(st.sampled_from(ALPHABET), max_size=24)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_typed(password: str) -> str:
    """``password`` written unencoded, as a user would: only a '%' that would decode is escaped."""
    return re.sub(r"%(?=[0-9A-Fa-f]{2})", "%25", password)


def needles(password: str, token: str) -> set[str]:
    """Every form in which the password (or a piece of it) could be printed."""
    return {
        password,
        quote(password, safe=""),
        quote(password),
        json.dumps(password)[1:-1],
        json.dumps(password, ensure_ascii=False)[1:-1],
        repr(password)[1:-1],
        token,
    }


@dataclass
class Secret:
    role: str
    password: str
    token: str


@dataclass
class Forms:
    ok: list[str] = field(default_factory=list)  # DSNs that must connect
    raw: list[str] = field(default_factory=list)  # those of them written unencoded
    refused: list[str] = field(default_factory=list)  # unencoded forms the parser refused


def _forms(secret: Secret, host: str, port: int) -> Forms:
    enc = quote(secret.password, safe="")
    raw = _as_typed(secret.password)
    base = f"{host}:{port}/postgres"
    out = Forms(
        ok=[
            f"postgresql://{secret.role}:{enc}@{base}",
            f"postgresql://{secret.role}@{base}?password={enc}",
        ]
    )
    # An unencoded password: the userinfo, and a query field that is not the last
    # (a trailing space would be stripped with the DSN's).
    for dsn, can_split in (
        (f"postgresql://{secret.role}:{raw}@{base}", False),
        (f"postgresql://{secret.role}@{base}?password={raw}&sslmode=disable", True),
    ):
        refusal: PostgresConfigError | None = None
        try:
            parsed = parse_dsn(dsn)
        except PostgresConfigError as exc:
            refusal = exc
        if refusal is not None:
            assert refusal.part == "ambiguous", (dsn, str(refusal))
            assert not any(n in str(refusal) for n in needles(secret.password, secret.token))
            out.refused.append(dsn)
            continue
        if can_split and any(f"&{k}=" in secret.password for k in LIBPQ_PARAMS):
            continue  # a password holding "&sslmode=" is two fields for every reader
        assert parsed.password == secret.password, dsn
        assert parsed.hosts == (host,)
        assert parsed.dbname == "postgres"
        out.ok.append(dsn)
        out.raw.append(dsn)
    return out


def _env(work: Path, log_format: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMD_", "SEC_", "PG"))}
    env.update(
        SMD_ENVIRONMENT="production",
        SMD_HISTORY_PATH=str(work / "history.sqlite3"),
        SMD_LOG_FORMAT=log_format,
        SMD_LOG_LEVEL="debug",
        SEC_TIMEOUT="5",
    )
    env.update(extra)
    return env


@dataclass
class Step:
    name: str
    args: list[str]
    env: dict[str, str]
    code: int
    stdout_has: str | None = None


def _run_all(steps: list[Step]) -> list[str]:
    """Run the steps concurrently; return every captured output, checked for its exit code."""
    procs = [
        (
            s,
            subprocess.Popen(
                [sys.executable, "-m", "smd", *s.args],
                cwd=ROOT,
                env=s.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
        )
        for s in steps
    ]
    seen: list[str] = []
    for step, proc in procs:
        out, err = proc.communicate(timeout=120)
        # (The header names the step, not its arguments: they hold the passwords.)
        text = f"$ {step.name}\n{out.decode()}\n{err.decode()}"
        seen.append(text)
        assert proc.returncode == step.code, text[-4000:]
        if step.stdout_has is not None:
            assert step.stdout_has in out.decode(), text[-4000:]
    return seen


def _files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def _traceback_target(work: Path, dsns: list[str]) -> str:
    """A TARGET whose import fails on a line holding every DSN as a literal."""
    path = work / "literal_target.py"
    literals = ", ".join(repr(d) for d in dsns)
    # The message quotes the settings' URL up to its '@': only the registered
    # secret of SMD_DATABASE_URL (no URL shape left) can mask it.
    path.write_text(
        "import os\n\n\n"
        "def _connect(*dsns: str) -> None:\n"
        "    url = os.environ.get('SMD_DATABASE_URL', '')\n"
        "    raise RuntimeError('cannot configure ' + url.rpartition('@')[0])\n\n\n"
        f"_connect({literals})\n"
    )
    return f"{path}:startup"


@pytest.fixture(scope="module")
def bed(pg: PgCluster, pg_app: AppCredentials) -> tuple[PgCluster, AppCredentials]:
    return pg, pg_app


def _create_roles(pg: PgCluster, made: list[Secret]) -> None:
    pg.sql(
        "; ".join(
            f"CREATE ROLE \"{s.role}\" LOGIN PASSWORD '{s.password.replace(chr(39), chr(39) * 2)}'"
            for s in made
        )
    )


def _prove(
    pg: PgCluster, app: AppCredentials, work: Path, made: list[Secret], short: Sequence[Secret] = ()
) -> list[str]:
    """Every command, every output path, with DSNs holding ``made``'s passwords; scan it all.

    ``short`` passwords (too short to search for) only have to work: their
    DSNs join the ready runs. Returns everything captured.
    """
    _create_roles(pg, [*made, *short])
    host, port, dead = pg.host, pg.port, _free_port()
    forms = [_forms(s, host, port) for s in made]
    ok = [d for f in forms for d in f.ok]
    refused = [d for f in forms for d in f.refused]
    # The same passwords for a real role that has another one (28P01), and nowhere (refused).
    wrong = [
        d.replace(f"//{s.role}", f"//{app.user}", 1).replace("/postgres", f"/{app.database}")
        for s, f in zip(made, forms, strict=True)
        for d in f.ok
    ]
    gone = [d.replace(f":{port}/", f":{dead}/") for d in ok][:4]
    invalid = [f"postgresql://{s.role}:{_as_typed(s.password)}@{host}:notaport/db" for s in made]
    ready = ok + [d for s in short for d in _forms(s, host, port).ok]
    # SMD_DATABASE_URL unencoded when a form allows it (the '/' case), else encoded.
    owner, url = next(
        ((s, d) for s, f in zip(made, forms, strict=True) for d in f.raw), (made[0], ok[0])
    )
    wrong_url = url.replace(f"//{owner.role}", f"//{app.user}", 1)
    # Many phases at once would exceed the server's max_connections: one at a time then.
    mode = ["--sequential"] if len(ready) > 16 else []

    def env(fmt: str, dsns: list[str], url: str | None = url, **extra: str) -> dict[str, str]:
        more = {"SEC_DSNS": json.dumps(dsns), **extra}
        if url is not None:
            more["SMD_DATABASE_URL"] = url
        return _env(work, fmt, **more)

    def rep(name: str) -> list[str]:
        return ["--report", str(work / f"r-{name}.json"), "--trace", str(work / f"t-{name}.json")]

    steps = [
        Step("plan", ["plan", TARGET], env("console", ok), 0),
        Step("plan-json", ["--debug", "plan", TARGET, "--format", "json"], env("json", ok), 0),
        Step("run-ok", ["run", TARGET, *mode, *rep("ok")], env("json", ready), 0),
        Step(
            "run-exec",
            ["--debug", "run", TARGET, *rep("exec"), "--", *SERVE],
            env("console", ok[:8]),
            0,
            stdout_has="served",
        ),
        Step(
            "run-failed",
            ["--debug", "run", TARGET, *rep("failed")],
            env("console", wrong[:4], wrong_url),
            78,
        ),
        # Every wrong password fails (28P01) and is bypassed: each failure is reported.
        Step(
            "run-all-failed",
            ["run", TARGET, *mode, "--env", "development", *rep("all-failed")],
            env("json", wrong, wrong[-1]),
            0,
        ),
        Step(
            "run-degraded",
            ["run", TARGET, "--env", "development", *rep("degraded")],
            env("json", gone, gone[0], SEC_TIMEOUT="1"),
            0,
        ),
        Step("check-ok", ["--debug", "check", "postgres", ok[-1]], env("console", [], None), 0),
        Step(
            "check-wrong",
            ["check", "postgres", wrong[-1], "--format", "json"],
            env("json", [], None),
            78,
        ),
        Step(
            "check-refused",
            ["check", "postgres", gone[-1], "--timeout", "0.3"],
            env("console", [], None),
            75,
        ),
        Step(
            "check-invalid",
            ["--debug", "check", "postgres", invalid[0]],
            env("console", [], None),
            78,
        ),
        Step(
            "import-error",
            ["--debug", "run", _traceback_target(work, [*ok, *refused, *invalid])],
            env("console", []),
            64,
        ),
        Step("settings-invalid", ["--debug", "plan", TARGET], env("json", [], invalid[-1]), 78),
    ]
    steps += [
        Step(f"check-refused-form-{i}", ["check", "postgres", d], env("json", [], None), 78)
        for i, d in enumerate(refused[:2])
    ]
    seen = _run_all(steps)
    seen += _run_all(
        [
            Step("history", ["history"], env("console", []), 0),
            Step("history-json", ["--debug", "history", "--format", "json"], env("json", []), 0),
            Step("history-export-stdout", ["history", "export", "-"], env("json", []), 0),
            Step(
                "history-export-file",
                ["history", "export", str(work / "exported.json")],
                env("json", []),
                0,
            ),
            Step("history-replay", ["--debug", "history", "replay"], env("console", []), 0),
            Step(
                "history-replay-json", ["history", "replay", "--format", "json"], env("json", []), 0
            ),
        ]
    )
    # The file just written goes back in (the import's own report is scanned too).
    seen += _run_all(
        [
            Step(
                "history-import",
                ["history", "import", str(work / "exported.json")],
                env("json", []),
                0,
            )
        ]
    )
    assert "Traceback" in next(s for s in seen if s.startswith("$ import-error"))
    written = {p.name for p in _files(work)}
    for name in ("ok", "exec", "failed", "all-failed", "degraded"):
        assert {f"r-{name}.json", f"t-{name}.json"} <= written
    assert {"history.sqlite3", "exported.json"} <= written

    for s in made:
        for text in seen:
            for needle in needles(s.password, s.token):
                assert needle not in text, f"{needle!r} leaked:\n{text}"
        for path in _files(work):
            if path.name == "literal_target.py":
                continue  # the input itself
            data = path.read_bytes()
            for needle in needles(s.password, s.token):
                assert needle.encode() not in data, (needle, path)
    return seen


def _secret(password: str, token: str) -> Secret:
    return Secret(f"smd_p{secrets.token_hex(4)}", password, token)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # Each example runs a dozen processes: report the failing one as found.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(pieces=st.lists(st.tuples(PIECES, PIECES), min_size=1, max_size=3))
def test_no_generated_password_reaches_any_output(
    tmp_path_factory: pytest.TempPathFactory,
    bed: tuple[PgCluster, AppCredentials],
    pieces: list[tuple[str, str]],
) -> None:
    made = []
    for before, after in pieces:
        token = secrets.token_hex(6)
        made.append(_secret(f"{before}{token}{after}", token))
    _prove(*bed, tmp_path_factory.mktemp("secrets"), made)


RESERVED = "/&@:?#%+ '\"\\=,;[]{}<>|^`$!*()~é中"


def test_each_reserved_character_never_reaches_any_output(
    tmp_path: Path, bed: tuple[PgCluster, AppCredentials]
) -> None:
    """Fixed cases: each reserved character inside a password (the token on both sides, so any
    piece of it is found), and alone as a one-character password (which must still work)."""
    made = []
    for char in RESERVED:
        token = secrets.token_hex(5)
        made.append(_secret(f"{token}{char}{token}", token))
    # Two unencoded characters that only a password-first reading gets right.
    token = secrets.token_hex(5)
    made.append(_secret(f"{token}/@?#&{token}", token))
    short = [_secret(char, char) for char in RESERVED]
    seen = _prove(*bed, tmp_path, made, short)
    for s in short:
        enc = quote(s.password, safe="")
        for text in seen:
            assert f"{s.role}:{s.password}@" not in text
            assert f"{s.role}:{enc}@" not in text
            assert f"password={enc}" not in text
