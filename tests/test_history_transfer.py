"""``smd history export`` / ``import``: carry learned history over, against both stores.

- the round trip (SQLite -> file -> empty SQLite -> file) keeps every sample
  and what is known about each target; importing again adds nothing;
- the merge: samples already present are skipped, the store's bound holds
  (older imported samples are left out, the store's oldest give way to newer
  ones), recorded metadata wins over the file's;
- a malformed file is refused with one line naming the file and the place,
  exit 64, nothing written; ``-`` is stdout / stdin; the file is 0600 and
  replaced atomically;
- no secret in the file: generated passwords with the URI's reserved
  characters, in a real ``smd run`` against the real cluster and in keys
  written through the store API;
- the PostgreSQL store (``SMD_HISTORY_URL``) on the real cluster: ``smd
  history``, ``export``, ``import`` and ``replay`` work against it; a store
  that is down is exit 75 with one line and no password (no silent fallback
  to the embedded store).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from pgbed.cluster import AppCredentials, PgCluster, free_port
from pgbed.proxy import FaultProxy

from smd import FailureKind
from smd.exceptions import UsageError
from smd.history import (
    FORMAT,
    VERSION,
    MemoryHistoryStore,
    SQLiteHistoryStore,
    TargetInfo,
    export_document,
    import_records,
    read_export,
    write_export,
)
from smd.timeouts import Sample, Series

ROOT = Path(__file__).resolve().parent.parent
DB_ONLY = str(ROOT / "tests" / "targets" / "db_only.py") + ":startup"
T0 = 1_800_000_000.123456
KEY = "shop/postgres://db.internal:5432/app@production"
CACHE = "shop/phase:cache@production"
X, Y = "shop/phase:x@production", "shop/phase:y@production"  # keys of hand-made entries
INFO = TargetInfo(
    KEY, "shop", "postgres://db.internal:5432/app", "production", "database", {"type": "adaptive"}
)


def samples() -> list[Sample]:
    return [
        Sample(Series.READY, T0, 0.412345),
        Sample(Series.ATTEMPT, T0 + 0.5, 0.020001),
        Sample(Series.READY, T0 + 60, 5.0, censored=True),
        Sample(Series.FAILURE, T0 + 120, kind=FailureKind.CONFIGURATION),
        Sample(Series.BYPASS, T0 + 121),
        Sample(Series.READY, T0 + 180, 1.5),
    ]


def filled(path: Path, bound: int = 256) -> SQLiteHistoryStore:
    store = SQLiteHistoryStore(path, bound=bound)
    store.append_many(
        {KEY: samples(), CACHE: [Sample(Series.READY, T0 + 1, 0.003)]},
        {KEY: INFO},
    )
    return store


def env_for(tmp: Path, history: str = "h.sqlite3", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    env.update(SMD_HISTORY_PATH=str(tmp / history), SMD_ENVIRONMENT="production")
    env.update(extra)
    return env


def smd(
    tmp: Path, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    history = env.pop("history", "h.sqlite3")
    return subprocess.run(
        [sys.executable, "-m", "smd", *args],
        env=env_for(tmp, history, **env),
        cwd=tmp,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- round trip and merge -------------------------------------------------------------


def test_round_trip_keeps_every_sample_and_target_and_a_second_import_adds_nothing(
    tmp_path: Path,
) -> None:
    a = filled(tmp_path / "a.sqlite3")
    doc = export_document(a)
    assert (doc["format"], doc["version"]) == (FORMAT, VERSION)
    write_export(str(tmp_path / "h.json"), doc)
    assert (tmp_path / "h.json").stat().st_mode & 0o777 == 0o600
    records = read_export(str(tmp_path / "h.json"))
    b = SQLiteHistoryStore(tmp_path / "b.sqlite3")
    result = import_records(b, records)
    assert (result.added, result.present, result.past_bound) == (7, 0, 0)
    assert [t.new_target for t in result.targets] == [True, True]
    assert b.targets() == a.targets()  # the recorded metadata came along
    mine, theirs = a.load_many([KEY, CACHE]), b.load_many([KEY, CACHE])
    for key in (KEY, CACHE):
        assert theirs[key].all_samples() == mine[key].all_samples()
    again = export_document(b)
    assert {**again, "exported_at": None} == {**doc, "exported_at": None}
    # Importing again, or into the store it came from, adds nothing.
    for store in (b, a):
        result = import_records(store, records)
        assert (result.added, result.present) == (0, 7)
    assert len(b.load(KEY)) == len(samples())


def test_merge_skips_present_samples_keeps_the_bound_and_recorded_metadata(
    tmp_path: Path,
) -> None:
    # The file: 8 ready samples at T0 + 0..7 for KEY, metadata saying "fixed".
    source = MemoryHistoryStore()
    source.append_many(
        {KEY: [Sample(Series.READY, T0 + i, 0.1 * (i + 1)) for i in range(8)]},
        {KEY: TargetInfo(KEY, policy={"type": "fixed", "seconds": 9.0})},
    )
    records = read_json(tmp_path, export_document(source))
    # The store: bound 5; it has T0 + 2 (the same sample) and T0 + 10, and its own metadata.
    store = SQLiteHistoryStore(tmp_path / "b.sqlite3", bound=5)
    store.append_many(
        {KEY: [Sample(Series.READY, T0 + 2, 0.3), Sample(Series.READY, T0 + 10, 0.2)]},
        {KEY: INFO},
    )
    (t,) = import_records(store, records).targets
    # Newest 5 of {0..7 from the file, 2 present, 10 in the store}: 10, 7, 6, 5, 4.
    # Present 1 (T0 + 2); added 4 (4..7); past the bound 3 (0, 1, 3); displaced 1 (2).
    assert (t.added, t.present, t.past_bound, t.displaced) == (4, 1, 3, 1)
    assert [round(s.at - T0) for s in store.load(KEY).ready] == [4, 5, 6, 7, 10]
    assert store.targets()[KEY] == INFO  # what was recorded here wins over the file


def read_json(tmp: Path, doc: object, name: str = "f.json") -> tuple:  # type: ignore[type-arg]
    (tmp / name).write_text(json.dumps(doc))
    return read_export(str(tmp / name))


BAD = [
    ([1, 2], "at (the document)", "is a list, not an object"),
    ({"format": "other", "version": 1, "targets": []}, "at format", "is 'other', expected"),
    ({"format": FORMAT, "version": 2, "targets": []}, "at version", "version 2 is not one"),
    ({"format": FORMAT, "version": 1, "targets": {}}, "at targets", "expected a list of targets"),
    ({"format": FORMAT, "version": 1, "targets": [{"samples": []}]}, "at targets[0].target", ""),
    (
        {"format": FORMAT, "version": 1, "targets": [{"target": X, "samples": [{"at": 1}]}]},
        "at targets[0].samples[0].series",
        "is None; accepted: attempt, ready, failure, bypass",
    ),
    (
        {
            "format": FORMAT,
            "version": 1,
            "targets": [
                {"target": X, "samples": []},
                {"target": Y, "samples": [{"series": "ready", "at": 5, "seconds": "3"}]},
            ],
        },
        "at targets[1].samples[0].seconds",
        "is '3', expected a number of seconds >= 0 or null",
    ),
    (
        {
            "format": FORMAT,
            "version": 1,
            "targets": [{"target": X, "samples": [{"series": "ready", "at": 5}]}],
        },
        "at targets[0].samples[0].seconds",
        "a ready sample needs its number of seconds",
    ),
    (
        {
            "format": FORMAT,
            "version": 1,
            "targets": [{"target": X, "samples": []}, {"target": X, "samples": []}],
        },
        "at targets[1].target",
        f"{X!r} is already at targets[0]",
    ),
    (
        {
            "format": FORMAT,
            "version": 1,
            "targets": [{"target": X, "samples": [{"series": "failure", "at": 1, "kind": "oops"}]}],
        },
        "at targets[0].samples[0].kind",
        "is 'oops'; accepted: infrastructure",
    ),
    *[
        (
            {
                "format": FORMAT,
                "version": 1,
                "targets": [{"target": X, "samples": [{"series": "bypass", "at": at}]}],
            },
            "at targets[0].samples[0].at",
            f"is {at!r}, expected a wall-clock time in seconds since the epoch, from 0 "
            "(1970-01-01T00:00:00Z) to 253402300799 (9999-12-31T23:59:59Z)",
        )
        for at in [1e30, 3e11, -1, 253402300800]
    ],
    (  # an integer no float can hold: refused, and shown short
        {
            "format": FORMAT,
            "version": 1,
            "targets": [{"target": X, "samples": [{"series": "bypass", "at": 10**400}]}],
        },
        "at targets[0].samples[0].at",
        "is 10000000000000000000...00000000 (401 characters), expected a wall-clock time",
    ),
    *[
        (
            {
                "format": FORMAT,
                "version": 1,
                "targets": [
                    {"target": X, "samples": [{"series": series, "at": 5, "seconds": seconds}]}
                ],
            },
            "at targets[0].samples[0].seconds",
            problem,
        )
        for series, seconds, problem in [
            ("ready", -0.5, "is -0.5, expected a number of seconds >= 0 or null"),
            ("attempt", float("nan"), "is nan, expected a number of seconds"),
            ("ready", float("inf"), "is inf, expected a number of seconds"),
            ("attempt", None, "an attempt sample needs its number of seconds"),
            ("ready", 10**400, "is 10000000000000000000...00000000 (401 characters), expected"),
        ]
    ],
    *[
        (
            {
                "format": FORMAT,
                "version": 1,
                "targets": [{"target": X, "policy": policy, "samples": []}],
            },
            "at targets[0].policy",
            f"stored timeout policy cannot be rebuilt ({problem}); accepted: a timeout policy",
        )
        for policy, problem in [
            (
                {"type": "fixed", "seconds": -3},
                "ValueError: timeout must be a positive finite number of seconds, got -3.0",
            ),
            ({"type": "fixed"}, "KeyError: 'seconds'"),
            (
                {"type": "fixed", "seconds": 10**400},
                "OverflowError: int too large to convert to float",
            ),
            (
                {"type": "adaptive", "floor": 9, "ceiling": 2},
                "ValueError: floor (9s) is above ceiling (2s)",
            ),
            (
                {"type": "adaptive", "bogus": 1},
                "TypeError: AdaptiveTimeout.__init__() got an unexpected keyword argument 'bogus'",
            ),
        ]
    ],
]


@pytest.mark.parametrize(("doc", "where", "problem"), BAD, ids=[b[1] for b in BAD])
def test_a_malformed_file_names_what_and_where(
    tmp_path: Path, doc: object, where: str, problem: str
) -> None:
    with pytest.raises(UsageError) as caught:
        read_json(tmp_path, doc)
    message = str(caught.value)
    assert message.startswith("history file '")
    if where != "at (the document)":
        assert f"f.json' {where}: " in message
    assert problem in message
    assert "\n" not in message


def test_the_cli_refuses_a_bad_file_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "v9.json").write_text(json.dumps({"format": FORMAT, "version": 9, "targets": []}))
    (tmp_path / "broken.json").write_text('{"format": "smd-history",\n "version": 1, "targets": [')
    for name, expected in [
        ("v9.json", "history file 'v9.json' at version: version 9 is not one this smd reads"),
        ("broken.json", "history file 'broken.json' is not JSON (Expecting value at line 2"),
        ("missing.json", "history file 'missing.json' does not exist"),
    ]:
        done = smd(tmp_path, "history", "import", name)
        assert done.returncode == 64, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"smd: usage error: {expected}")
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "h.sqlite3").exists()  # refused before any store was opened
    done = smd(tmp_path, "history", "export", str(tmp_path / "no" / "dir.json"))
    assert done.returncode == 64
    assert "does not exist" in done.stderr
    done = smd(tmp_path, "history", "--html", "x.html", "export", "x.json")
    assert done.returncode == 64
    assert "--html shows the dashboard" in done.stderr


def test_the_cli_refuses_an_absurd_sample_time_or_policy_and_writes_nothing(
    tmp_path: Path,
) -> None:
    filled(tmp_path / "h.sqlite3")
    before = export_document(SQLiteHistoryStore(tmp_path / "h.sqlite3"))["targets"]
    good = {"series": "ready", "at": T0 + 600, "seconds": 0.5}
    for name, target, expected in [
        (
            "far.json",
            {"target": KEY, "samples": [good, {"series": "ready", "at": 1e30, "seconds": 1.0}]},
            "at targets[0].samples[1].at: is 1e+30, expected a wall-clock time in seconds "
            "since the epoch, from 0 (1970-01-01T00:00:00Z) to 253402300799 "
            "(9999-12-31T23:59:59Z)",
        ),
        (
            "year11476.json",
            {"target": KEY, "samples": [{"series": "bypass", "at": 3e11}, good]},
            "at targets[0].samples[0].at: is 300000000000.0, expected a wall-clock time",
        ),
        (
            "policy.json",
            {
                "target": "new/x@production",
                "policy": {"type": "fixed", "seconds": -3},
                "samples": [good],
            },
            "at targets[0].policy: stored timeout policy cannot be rebuilt (ValueError: "
            "timeout must be a positive finite number of seconds, got -3.0); accepted: ",
        ),
    ]:
        doc = {"format": FORMAT, "version": 1, "targets": [target]}
        (tmp_path / name).write_text(json.dumps(doc))
        done = smd(tmp_path, "history", "import", name)
        assert done.returncode == 64, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"smd: usage error: history file '{name}' {expected}"), line
        assert "Traceback" not in done.stderr
        assert done.stdout == ""
    # Nothing was written: the store holds what it held, and every view still works.
    assert export_document(SQLiteHistoryStore(tmp_path / "h.sqlite3"))["targets"] == before
    for view in (["history"], ["history", "--format", "json"]):
        assert smd(tmp_path, *view).returncode == 0


def store_bytes(tmp: Path, history: str = "h.sqlite3") -> bytes:
    """Every byte of the SQLite store: its file and any journal or WAL beside it."""
    return b"".join(p.read_bytes() for p in sorted(tmp.glob(f"{history}*")))


def import_refused(tmp: Path, name: str, *targets: object) -> tuple[str, str]:
    """``smd history import`` of a file holding a valid new target, then ``targets``:
    exit 64 in one line, nothing on stdout and nothing written. ``(stderr line, stdout)``."""
    new = {
        "target": "new/phase:warm@production",
        "startup": "new",
        "samples": [{"series": "ready", "at": T0 + 600, "seconds": 0.5}],
    }
    doc = {"format": FORMAT, "version": 1, "targets": [new, *targets]}
    (tmp / name).write_text(json.dumps(doc))
    before = store_bytes(tmp)
    done = smd(tmp, "history", "import", name)
    assert done.returncode == 64, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert store_bytes(tmp) == before  # the valid entry was not written either
    assert "new/phase:warm@production" not in SQLiteHistoryStore(tmp / "h.sqlite3").targets()
    return line, done.stdout


def test_keys_the_engine_writes_for_odd_startups_and_shared_phase_history_import(
    tmp_path: Path,
) -> None:
    """A phase that keeps another's history (``target="phase:legacy"``) and a startup
    whose name begins with '/' write keys whose metadata an import must accept."""
    source = MemoryHistoryStore()
    odd = {
        "shop/phase:legacy@production": TargetInfo(
            "shop/phase:legacy@production",
            startup="shop",
            dependency="phase:legacy",
            environment="production",
            phase="db",
        ),
        "/shop/phase:x@staging": TargetInfo(
            "/shop/phase:x@staging",
            startup="/shop",
            dependency="phase:x",
            environment="staging",
            phase="x",
        ),
    }
    source.append_many({key: [Sample(Series.READY, T0, 0.5)] for key in odd}, odd)
    write_export(str(tmp_path / "odd.json"), export_document(source))
    done = smd(tmp_path, "history", "import", "odd.json")
    assert done.returncode == 0, done.stderr
    assert set(SQLiteHistoryStore(tmp_path / "h.sqlite3").targets()) == set(odd)


ENVIRONMENTS = "accepted: development, staging, production, test"
KEY_FORM = "accepted: a history key '<startup>/<dependency>@<environment>'"
CONTRADICTIONS = [
    (  # the review's file: the metadata says another environment and startup
        {"target": "shop/phase:config@development", "environment": "prod", "startup": "other"},
        "at targets[1].environment: is 'prod', but the key is for 'development'; "
        "accepted: what the key says, or empty when unknown",
    ),
    (
        {"target": "shop/phase:config@development", "startup": "other"},
        "at targets[1].startup: is 'other', but the key is of startup 'shop'",
    ),
    (
        {"target": KEY, "startup": "shop", "dependency": "postgres://elsewhere:5432/app"},
        "at targets[1].dependency: is 'postgres://elsewhere:5432/app', but the key is of "
        "dependency 'postgres://db.internal:5432/app'",
    ),
    (
        {"target": "shop/phase:config@prod"},
        f"at targets[1].target: the key's environment 'prod' is not one smd knows; {ENVIRONMENTS}",
    ),
    (
        {"target": "shop/phase:config@Production"},
        "at targets[1].target: the key's environment 'Production' is written 'production'",
    ),
    (
        {"target": "shop/phase:config"},
        f"at targets[1].target: is not a history key: it ends in no '@<environment>'; {KEY_FORM}",
    ),
    (
        {"target": "postgres://db.internal:5432/app@production"},
        "at targets[1].target: is not a history key: it names no startup before a '/'",
    ),
    (
        {"target": "phase:config@production"},
        "at targets[1].target: is not a history key: it names no startup before a '/'",
    ),
    (
        {"target": "shop/@production"},
        "at targets[1].target: is not a history key: its dependency is empty",
    ),
]


@pytest.mark.parametrize(("entry", "expected"), CONTRADICTIONS, ids=[c[1] for c in CONTRADICTIONS])
def test_the_cli_refuses_a_key_that_is_not_one_or_that_its_metadata_contradicts(
    tmp_path: Path, entry: dict[str, object], expected: str
) -> None:
    filled(tmp_path / "h.sqlite3")
    target = {**entry, "samples": [{"series": "ready", "at": T0 + 700, "seconds": 0.25}]}
    line, _ = import_refused(tmp_path, "edited.json", target)
    assert line.startswith(f"smd: usage error: history file 'edited.json' {expected}"), line


def dsn_password() -> str:
    """A fresh password: a random core among characters a URL reserves or quotes."""
    return f"{secrets.token_urlsafe(12)}/@:?#[]!$&'()*+,;=%20 \"<>"


def test_the_cli_refuses_a_key_holding_a_password_and_shows_it_nowhere(tmp_path: Path) -> None:
    filled(tmp_path / "h.sqlite3")
    for i, key in enumerate(
        [
            "postgres://u:{raw}@h:5432/db",  # the review's file: a DSN, not a key at all
            "postgres://u:{quoted}@h:5432/db",
            "shop/postgres://u:{quoted}@h:5432/db@production",  # a key, with the password
            "shop/postgres://u:{raw}@h:5432/db@production",
            "shop/postgres://h:5432/db?sslmode=require&password={quoted}@production",
            "postgresql://h/db?password={raw}",
        ]
    ):
        secret = dsn_password()
        target = {
            "target": key.format(raw=secret, quoted=quote(secret, safe="")),
            "samples": [{"series": "ready", "at": T0 + 700, "seconds": 0.25}],
        }
        name = f"leak{i}.json"
        line, stdout = import_refused(tmp_path, name, target)
        assert line.startswith(
            f"smd: usage error: history file '{name}' at targets[1].target: holds a secret "
            "(a URL's password or a password parameter), not shown here; accepted: a history key"
        ), line
        shown = line + stdout + smd(tmp_path, "history", "--format", "json").stdout
        store = store_bytes(tmp_path)
        core = secret.split("/")[0]  # the random part alone
        for needle in {
            secret,
            quote(secret, safe=""),
            quote(secret),
            json.dumps(secret)[1:-1],
            core,
        }:
            assert needle not in shown
            assert needle.encode() not in store


def test_a_real_runs_export_round_trips_and_an_edited_copy_of_it_is_refused(
    tmp_path: Path,
) -> None:
    # Every field a run records (startup, dependency, environment, phase,
    # policy) agrees with its key: the whole export imports, and again adds nothing.
    run = smd(tmp_path, "run", str(ROOT / "tests" / "targets" / "kinds.py") + ":startup")
    assert run.returncode == 0, run.stderr[-2000:]
    assert smd(tmp_path, "history", "export", "h.json").returncode == 0
    doc = json.loads((tmp_path / "h.json").read_text())
    assert {t["target"] for t in doc["targets"]} >= {"kinds/phase:work@production"}
    assert all(t["startup"] and t["phase"] and t["environment"] for t in doc["targets"])
    done = smd(tmp_path, "history", "import", "h.json", history="b.sqlite3")
    assert done.returncode == 0, done.stderr
    n = len(doc["targets"])
    assert f": {n} targets, {n} samples added, 0 already present" in done.stdout
    again = smd(tmp_path, "history", "export", "b.json", history="b.sqlite3")
    assert again.returncode == 0, again.stderr
    back = json.loads((tmp_path / "b.json").read_text())
    assert back["targets"] == doc["targets"]
    assert "0 samples added" in smd(tmp_path, "history", "import", "b.json").stdout
    # The same file with one target's environment edited: refused, nothing written.
    doc["targets"][-1]["environment"] = "development"
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    before = store_bytes(tmp_path, "b.sqlite3")
    done = smd(tmp_path, "history", "import", "edited.json", history="b.sqlite3")
    assert done.returncode == 64, done.stdout + done.stderr
    assert f"at targets[{n - 1}].environment: is 'development', but the key is for " in (
        done.stderr
    )
    assert store_bytes(tmp_path, "b.sqlite3") == before


def test_the_views_show_a_stored_out_of_range_time_instead_of_failing(tmp_path: Path) -> None:
    # What an older smd let an import write, or a store written through the API.
    store = filled(tmp_path / "h.sqlite3")
    store.append_many(
        {KEY: [Sample(Series.READY, 3e11, 1.0), Sample(Series.READY, 1e30, 2.0)]},
        {KEY: replace_policy(INFO, {"type": "fixed", "seconds": -3})},
    )
    text = smd(tmp_path, "history")
    assert text.returncode == 0, text.stderr
    assert "last sample  1e+30 s since the epoch (out of range)" in text.stdout
    view = smd(tmp_path, "history", "--format", "json")
    assert view.returncode == 0, view.stderr
    (key,) = [t for t in json.loads(view.stdout) if t["target"] == KEY]
    assert key["last_at"] == "1e+30 s since the epoch (out of range)"
    assert key["first_at"] == "2027-01-15T08:00:00.123Z"
    html = smd(tmp_path, "history", "--html", "d.html")
    assert html.returncode == 0, html.stderr
    page = (tmp_path / "d.html").read_text()
    assert "3e+11 s since the epoch (out of range)" in page
    for done in (text, view, html):
        assert "Traceback" not in done.stderr
        assert "internal error" not in done.stderr


def replace_policy(info: TargetInfo, policy: dict[str, object]) -> TargetInfo:
    return TargetInfo(
        info.target, info.startup, info.dependency, info.environment, info.phase, policy
    )


def test_the_cli_round_trip_through_stdout_and_stdin_and_an_atomic_file(tmp_path: Path) -> None:
    filled(tmp_path / "h.sqlite3")
    out = smd(tmp_path, "history", "export", "-")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["format"] == FORMAT
    assert out.stderr.strip().endswith(
        f"exported 2 targets (7 samples) from SQLite history store {tmp_path / 'h.sqlite3'}"
    )
    (tmp_path / "h.json").write_text("old")
    (tmp_path / "h.json").chmod(0o644)
    done = smd(tmp_path, "history", "export", "h.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("smd: exported 2 targets (7 samples) from SQLite history store")
    assert json.loads((tmp_path / "h.json").read_text()) == {
        **json.loads(out.stdout),
        "exported_at": json.loads((tmp_path / "h.json").read_text())["exported_at"],
    }
    assert (tmp_path / "h.json").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    imported = smd(tmp_path, "history", "import", "-", stdin=out.stdout, history="b.sqlite3")
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines()[0] == (
        f"smd: imported stdin into SQLite history store {tmp_path / 'b.sqlite3'}: 2 targets, "
        "7 samples added, 0 already present, 0 past the bound (256 per target and series)"
    )
    assert f"  {KEY} (new target): added 6, already present 0, past the bound 0" in imported.stdout
    again = smd(tmp_path, "history", "import", "h.json", history="b.sqlite3")
    assert "0 samples added, 7 already present" in again.stdout
    view = smd(tmp_path, "history", "--format", "json", history="b.sqlite3")
    assert [t["target"] for t in json.loads(view.stdout)] == sorted([KEY, CACHE])


def test_history_disabled_has_nothing_to_import_into(tmp_path: Path) -> None:
    write_export(str(tmp_path / "h.json"), export_document(filled(tmp_path / "a.sqlite3")))
    done = smd(tmp_path, "history", "import", "h.json", SMD_HISTORY_ENABLED="false")
    assert done.returncode == 78
    assert "history is disabled (SMD_HISTORY_ENABLED=false)" in done.stderr


# -- no secret in the file -------------------------------------------------------------


def password() -> str:
    """A fresh password holding the URI's reserved characters around a random core."""
    return f"p/{secrets.token_hex(6)}@a&b?c#d:e%f+g h'i\"j"


def needles(secret: str) -> set[str]:
    return {
        secret,
        quote(secret, safe=""),
        quote(secret),
        json.dumps(secret)[1:-1],
        secret.split("/")[1].split("@")[0],  # the random core alone
    }


def test_keys_written_with_a_password_through_the_store_api_are_shown_and_exported_without_it(
    tmp_path: Path,
) -> None:
    store = SQLiteHistoryStore(tmp_path / "h.sqlite3")
    for secret in (password(), password()):
        leaky = f"api/postgresql://app:{quote(secret, safe='')}@db:5432/app@production"
        store.append_many(
            {leaky: [Sample(Series.READY, T0, 0.5)]},
            {leaky: TargetInfo(leaky, dependency=f"postgresql://app:{secret}@db:5432/app")},
        )
        done = smd(tmp_path, "history", "export", "h.json")
        assert done.returncode == 0, done.stderr
        text = (tmp_path / "h.json").read_text() + done.stdout + done.stderr
        # Every other view of the same store: smd history (text, JSON, the
        # dashboard) and the replay.
        for args in (["--format", "json"], ["--html", "d.html"], ["replay"], []):
            shown = smd(tmp_path, "history", *args)
            assert shown.returncode == 0, shown.stderr
            text += shown.stdout + shown.stderr
        text += (tmp_path / "d.html").read_text()
        assert "api/postgresql://app:***@db:5432/app" in text
        for needle in needles(secret):
            assert needle not in text
    # The masked keys are what an import writes: the secret never reaches a store.
    result = import_records(MemoryHistoryStore(), read_export(str(tmp_path / "h.json")))
    assert [t.target for t in result.targets] == ["api/postgresql://app:***@db:5432/app@production"]


@pytest.mark.postgres
def test_a_real_run_with_a_password_in_the_dsn_exports_no_secret(
    pg: PgCluster, tmp_path: Path
) -> None:
    for i in range(2):
        secret = password()
        role = f"smd_transfer_{i}"
        pg.create_role(role, secret)
        dsn = pg.dsn(role, secret, "postgres")  # percent-encoded, as libpq wants
        run = smd(tmp_path, "run", DB_ONLY, SMD_DATABASE_URL=dsn, SMD_ENVIRONMENT="test")
        assert run.returncode == 0, run.stderr[-2000:]
        done = smd(tmp_path, "history", "export", "h.json", SMD_DATABASE_URL=dsn)
        assert done.returncode == 0, done.stderr
        doc = json.loads((tmp_path / "h.json").read_text())
        keys = [t["target"] for t in doc["targets"]]
        assert any(k.startswith(f"db_only/postgres://{pg.host}:{pg.port}/postgres@") for k in keys)
        ready = [s for t in doc["targets"] for s in t["samples"] if s["series"] == "ready"]
        assert len(ready) == i + 1  # the runs' own samples, learned and exported
        text = (tmp_path / "h.json").read_text() + done.stdout + done.stderr
        for needle in needles(secret) | {role}:
            assert needle not in text


# -- the PostgreSQL store --------------------------------------------------------------

DB = "smd_transfer_tests"


@pytest.fixture(scope="module")
def store_dsn(pg: PgCluster, pg_app: AppCredentials) -> str:
    pg.create_database(DB, owner=pg_app.user)
    return pg.dsn(pg_app.user, pg_app.password, DB)


@pytest.mark.postgres
def test_history_export_import_and_replay_against_the_postgresql_store(
    pg: PgCluster, store_dsn: str, pg_app: AppCredentials, tmp_path: Path
) -> None:
    schema = f"t{time.time_ns() % 10**12}"
    shared = {"SMD_HISTORY_URL": store_dsn, "SMD_HISTORY_SCHEMA": schema}
    # SQLite -> file -> PostgreSQL.
    filled(tmp_path / "h.sqlite3")
    assert smd(tmp_path, "history", "export", "local.json").returncode == 0
    done = smd(tmp_path, "history", "import", "local.json", history="empty.sqlite3", **shared)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert f"into PostgreSQL history store postgres://{pg.host}:{pg.port}/{DB}" in first
    assert "2 targets, 7 samples added" in first
    rows = pg.sql(f"SELECT count(*) FROM {schema}.samples", database=DB)
    assert rows == "7"
    again = smd(tmp_path, "history", "import", "local.json", history="empty.sqlite3", **shared)
    assert "0 samples added, 7 already present" in again.stdout
    assert pg.sql(f"SELECT count(*) FROM {schema}.samples", database=DB) == "7"
    assert not (tmp_path / "empty.sqlite3").exists()  # the shared store alone was used
    # The view, replay and export read the shared store.
    view = smd(tmp_path, "history", "--format", "json", history="empty.sqlite3", **shared)
    assert view.returncode == 0, view.stderr
    assert [t["target"] for t in json.loads(view.stdout)] == sorted([KEY, CACHE])
    shown = smd(tmp_path, "history", history="empty.sqlite3", **shared)
    assert shown.returncode == 0, shown.stderr
    assert "postgres://db.internal:5432/app  [production]  (startup shop, phase database)" in (
        shown.stdout
    )
    replay = smd(
        tmp_path,
        "history",
        "replay",
        "--target",
        KEY,
        "--format",
        "json",
        history="empty.sqlite3",
        **shared,
    )
    assert replay.returncode == 0, replay.stderr
    (target,) = json.loads(replay.stdout)
    assert (target["starts"], target["successes"], target["censored"]) == (3, 2, 1)
    out = smd(tmp_path, "history", "export", "shared.json", history="empty.sqlite3", **shared)
    assert out.returncode == 0, out.stderr
    local = json.loads((tmp_path / "local.json").read_text())
    remote = json.loads((tmp_path / "shared.json").read_text())
    assert remote["targets"] == local["targets"]  # every sample and target, as they were
    # PostgreSQL -> file -> a brand-new SQLite store.
    back = smd(tmp_path, "history", "import", "shared.json", history="new.sqlite3")
    assert "2 targets, 7 samples added" in back.stdout
    text = (tmp_path / "shared.json").read_text() + out.stdout + out.stderr + done.stdout
    assert pg_app.password not in text


def test_a_damaged_history_file_is_one_line_not_an_empty_history(tmp_path: Path) -> None:
    # A run reads a damaged file as empty (with a warning) and goes on; a command
    # that shows or exports the history must not pass that off as "nothing learned".
    damaged = tmp_path / "h.sqlite3"
    damaged.write_bytes(b"not a database" * 300)
    before = damaged.read_bytes()
    for args in ((), ("--format", "json"), ("export", "out.json"), ("replay",)):
        done = smd(tmp_path, "history", *args)
        assert done.returncode == 78, (args, done.stderr)
        assert done.stderr.splitlines() == [
            f"smd: the history file {damaged} cannot be read (corrupt: file is not a database "
            "(SQLITE_NOTADB)); accepted: an smd history file: move this one aside, or point "
            "SMD_HISTORY_PATH elsewhere"
        ], args
        assert done.stdout == ""
    assert damaged.read_bytes() == before  # read-only: left in place
    assert not (tmp_path / "out.json").exists()


def test_an_output_that_cannot_be_written_is_exit_74_in_one_line(
    tmp_path: Path,
) -> None:
    # /dev/full is a real device that answers every write with ENOSPC: a full disk.
    filled(tmp_path / "h.sqlite3")
    for args in (("export", "/dev/full"), ("--html", "/dev/full")):
        done = smd(tmp_path, "history", *args)
        assert done.returncode == 74, (args, done.stderr)
        assert done.stderr.splitlines() == [
            "smd: cannot write '/dev/full': No space left on device"
        ], args
    # A regular file is written through a temporary file beside it that then
    # replaces it: afterwards only the export is there.
    out = tmp_path / "out"
    out.mkdir()
    done = smd(tmp_path, "history", "export", str(out / "h.json"))
    assert done.returncode == 0, done.stderr
    before = (out / "h.json").read_bytes()
    assert [p.name for p in out.iterdir()] == ["h.json"]  # no temporary file left beside it
    assert json.loads(before)["targets"]


@pytest.mark.postgres
def test_a_shared_store_that_is_down_is_exit_75_without_falling_back(tmp_path: Path) -> None:
    secret = password()
    url = f"postgresql://smd_app:{quote(secret, safe='')}@127.0.0.1:{free_port()}/smd_app"
    write_export(str(tmp_path / "h.json"), export_document(filled(tmp_path / "a.sqlite3")))
    # An empty file too: "imported 0 targets" into a store never reached would be a lie.
    write_export(str(tmp_path / "empty.json"), export_document(MemoryHistoryStore()))
    for args in (
        ("export", "out.json"),
        ("import", "h.json"),
        ("import", "empty.json"),
        ("replay",),
    ):
        done = smd(tmp_path, "history", *args, SMD_HISTORY_URL=url)
        assert done.returncode == 75, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(
            f"smd: history {args[0]}: PostgreSQL history store postgres://127.0.0.1"
        )
        assert "connection refused" in last
        for needle in needles(secret):
            assert needle not in done.stdout + done.stderr
    assert not (tmp_path / "out.json").exists()
    assert not (tmp_path / "h.sqlite3").exists()  # nothing went to the embedded store instead


@pytest.mark.postgres
def test_the_view_of_a_shared_store_that_is_down_is_exit_75_without_falling_back(
    tmp_path: Path,
) -> None:
    # The embedded store has history: showing it instead of the fleet's would
    # pass the wrong store off as the shared one.
    filled(tmp_path / "h.sqlite3")
    secret = password()
    url = f"postgresql://smd_app:{quote(secret, safe='')}@127.0.0.1:{free_port()}/smd_app"
    for args in ((), ("--format", "json"), ("--html", "d.html")):
        done = smd(tmp_path, "history", *args, SMD_HISTORY_URL=url)
        assert done.returncode == 75, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("smd: history: PostgreSQL history store postgres://127.0.0.1:"), line
        assert "connection refused" in line
        assert done.stdout == ""
        for needle in needles(secret):
            assert needle not in done.stdout + done.stderr
    assert not (tmp_path / "d.html").exists()


@pytest.mark.postgres
def test_a_large_import_into_postgresql_keeps_the_store_bound_in_one_write(
    pg: PgCluster, store_dsn: str, tmp_path: Path
) -> None:
    # 12 targets x (300 ready + 300 attempt) samples: the store keeps 256 per
    # target and series, so 44 + 44 per target, 1056 in all, are past the bound.
    schema = f"t{time.time_ns() % 10**12}"
    source = MemoryHistoryStore(bound=300)
    names = [f"shop/phase:p{i:02d}@production" for i in range(12)]
    source.append_many(
        {
            name: [Sample(Series.READY, T0 + j, 0.01 * (j % 7)) for j in range(300)]
            + [Sample(Series.ATTEMPT, T0 + j, 0.001 * (j % 5)) for j in range(300)]
            for name in names
        }
    )
    write_export(str(tmp_path / "big.json"), export_document(source))
    shared = {"SMD_HISTORY_URL": store_dsn, "SMD_HISTORY_SCHEMA": schema}
    done = smd(tmp_path, "history", "import", "big.json", **shared)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith(
        "12 targets, 6144 samples added, 0 already present, 1056 past the bound "
        "(256 per target and series)"
    )
    counts = pg.sql(
        f"SELECT DISTINCT count(*) FROM {schema}.samples GROUP BY target, series", database=DB
    )
    assert counts == "256"
    oldest = pg.sql(f"SELECT min(at) FROM {schema}.samples", database=DB)
    assert float(oldest) == pytest.approx(T0 + 44)  # the newest 256 were kept
    again = smd(tmp_path, "history", "import", "big.json", **shared)
    assert "0 samples added, 6144 already present, 1056 past the bound" in again.stdout


def test_an_unusable_history_path_is_an_invalid_setting_in_one_line(tmp_path: Path) -> None:
    # /dev/full is not a regular file: the embedded store is never opened there,
    # so an import would land nowhere. A run goes on with a warning; a command
    # asked to use the path stops: one line, exit 78 (fix the setting), not 75.
    write_export(str(tmp_path / "h.json"), export_document(filled(tmp_path / "a.sqlite3")))
    accepted = "accepted: the path of a regular file, in a directory smd can create"
    for path, what in (("/dev/full", "a character device"), (str(tmp_path), "a directory")):
        for args in (("import", "h.json"), ("export", "out.json"), ("replay",), ()):
            done = smd(tmp_path, "history", *args, SMD_HISTORY_PATH=path)
            assert done.returncode == 78, (args, done.stderr)
            assert done.stderr.splitlines() == [
                f"smd: the history path {path} is {what} (SMD_HISTORY_PATH); {accepted}"
            ], args
            assert done.stdout == ""
    assert not (tmp_path / "out.json").exists()


@pytest.mark.postgres
@pytest.mark.slow
def test_the_commands_budget_is_generous_unless_the_settings_set_one(
    store_dsn: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    # A blackholed store: with SMD_HISTORY_READ_BUDGET set, that budget is the one
    # used (the command's own default, 10 s, applies only when it is not set).
    fault_proxy.set_mode("blackhole")
    url = fault_proxy.dsn(store_dsn)
    done = smd(tmp_path, "history", "replay", SMD_HISTORY_URL=url, SMD_HISTORY_READ_BUDGET="0.5")
    assert done.returncode == 75, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("no answer within the read budget of 0.5s")
    done = smd(tmp_path, "history", "replay", SMD_HISTORY_URL=url)
    assert done.returncode == 75, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("no answer within the read budget of 10s")
