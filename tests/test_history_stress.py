"""The history store under stress, with real processes and real files.

- an unwritable store directory (as ``nobody`` when the suite runs as root,
  since root ignores permission bits);
- a full disk, two ways: a file-size limit (``RLIMIT_FSIZE``, writes fail with
  EFBIG) and, where mounting is allowed, a tiny tmpfs filled to the brim;
- 20 processes started at once against three stores: fresh with a bound
  above everything written, fresh with a bound below it, and a corrupt file;
- the real ``smd run`` with a damaged store, a store of the previous schema,
  an uncreatable store directory, a full disk, and a history path that is not
  a regular file (``/dev/null``, ``/dev/full``, a FIFO, a directory):
  startup completes, with one warning, and nothing is created next to it.

Every scenario asserts: no exception, at most one warning, the file intact
(``PRAGMA integrity_check``), and no sample lost within the bound.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from structlog.testing import capture_logs

from smd.history import SQLiteHistoryStore, TargetInfo, target_key
from smd.timeouts import Sample, Series

TARGET = target_key("api", "postgres://db.internal:5432/app", "production")
NOBODY = 65534
IS_ROOT = os.geteuid() == 0


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def rows(path: Path, target: str, series: Series) -> list[tuple[float, float]]:
    conn = sqlite3.connect(path)
    try:
        return [
            (float(at), float(sec))
            for at, sec in conn.execute(
                "SELECT at, seconds FROM samples WHERE target = ? AND series = ? ORDER BY at",
                (target, series.value),
            )
        ]
    finally:
        conn.close()


def seed(path: Path, n: int = 10) -> list[Sample]:
    store = SQLiteHistoryStore(path)
    samples = [Sample(Series.READY, 1000.0 + i, 0.1 * i) for i in range(n)]
    store.append(TARGET, samples)
    assert not store.degraded
    return samples


def in_child(
    body: Callable[[], dict[str, Any]],
    *,
    uid: int | None = None,
    fsize: int | None = None,
) -> dict[str, Any]:
    """Run ``body`` in a forked child (optionally as ``uid``, with a file-size limit).

    The child captures structlog output; returns ``body``'s result plus
    ``warnings`` (the captured warning events) and ``error`` (an exception
    that escaped, which must never happen).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        out: dict[str, Any] = {"error": None}
        try:
            if fsize is not None:
                # Without this the kernel kills the writer with SIGXFSZ;
                # ignored, the write fails with EFBIG like a full disk.
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            with capture_logs() as logs:
                try:
                    out.update(body())
                except BaseException as err:
                    out["error"] = f"{type(err).__name__}: {err}"
            out["warnings"] = [
                {k: str(v) for k, v in e.items()} for e in logs if e.get("log_level") == "warning"
            ]
            data = json.dumps(out).encode()
        except BaseException as err:
            data = json.dumps({"error": f"child setup: {type(err).__name__}: {err}"}).encode()
        with os.fdopen(write_fd, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, Any] = json.loads(data)
    return result


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that ``nobody`` can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="smd-history-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for p in base.rglob("*"):
            with contextlib.suppress(OSError):
                p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(base, ignore_errors=True)


def make_unwritable(directory: Path) -> int | None:
    """Deny writes in ``directory``, keep its files readable; the uid the child
    must run as (None: this one)."""
    if IS_ROOT:
        # Root ignores permission bits: the child runs as nobody, who does not
        # own the directory. The store made its file 0600 (root's); let nobody
        # read it, as the owner of an unwritable directory could.
        for p in directory.iterdir():
            p.chmod(0o644)
        return NOBODY
    directory.chmod(0o500)
    for p in directory.iterdir():
        p.chmod(0o400)
    return None


# -- unwritable location ---------------------------------------------------------


def test_unwritable_directory_with_history_reads_it_and_warns_once(shared_dir: Path) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    path = state / "history.sqlite3"
    seeded = seed(path)
    before = path.read_bytes()
    names_before = sorted(p.name for p in state.iterdir())
    uid = make_unwritable(state)

    def body() -> dict[str, Any]:
        store = SQLiteHistoryStore(path)
        first = store.load(TARGET)
        first.record_success(0.7, at=5000.0)
        store.append(TARGET, first.pending)
        store.append(TARGET, [Sample(Series.ATTEMPT, 5001.0, 0.01)])
        again = store.load(TARGET)
        return {
            "first": [s.at for s in first.ready],
            "again_ready": [s.at for s in again.ready],
            "again_attempts": len(again.attempts),
            "targets": list(store.targets()),
            "degraded": store.degraded,
        }

    out = in_child(body, uid=uid)
    assert out["error"] is None
    # What the file holds is still used to learn from...
    assert out["first"][:-1] == [s.at for s in seeded]
    # ...and what this process records is kept for its own lifetime.
    assert out["again_ready"] == [*(s.at for s in seeded), 5000.0]
    assert out["again_attempts"] == 1
    assert out["targets"] == [TARGET]
    assert out["degraded"] is True
    assert [w["event"] for w in out["warnings"]] == ["smd.history.unwritable"]
    assert out["warnings"][0]["path"] == str(path)
    assert "memory" in out["warnings"][0]["action"]
    # Nothing was written, created or moved.
    assert path.read_bytes() == before
    assert sorted(p.name for p in state.iterdir()) == names_before


@pytest.mark.skipif(not IS_ROOT, reason="needs another user's private file")
def test_another_users_private_store_is_skipped_with_one_warning(shared_dir: Path) -> None:
    """The store is 0600: another user (here nobody) can neither read nor write it."""
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    path = state / "history.sqlite3"
    seed(path)
    assert path.stat().st_mode & 0o077 == 0  # private to its owner
    before = path.read_bytes()
    names_before = sorted(p.name for p in state.iterdir())

    def body() -> dict[str, Any]:
        store = SQLiteHistoryStore(path)
        h = store.load(TARGET)
        h.record_success(0.7, at=5000.0)
        store.append(TARGET, h.pending)
        return {"ready": [s.at for s in store.load(TARGET).ready], "degraded": store.degraded}

    out = in_child(body, uid=NOBODY)
    assert out["error"] is None
    assert out["ready"] == [5000.0]  # nothing could be read; this process's sample kept
    assert out["degraded"] is True
    assert [w["event"] for w in out["warnings"]] == ["smd.history.unwritable"]
    assert path.read_bytes() == before
    assert sorted(p.name for p in state.iterdir()) == names_before


def test_unwritable_directory_without_history_warns_once(shared_dir: Path) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    path = state / "history.sqlite3"
    uid = make_unwritable(state)

    def body() -> dict[str, Any]:
        store = SQLiteHistoryStore(path)
        h = store.load(TARGET)
        h.record_timeout(30.0, at=1.0)
        store.append(TARGET, h.pending)
        return {"ready": len(store.load(TARGET).ready), "targets": list(store.targets())}

    out = in_child(body, uid=uid)
    assert out["error"] is None
    assert out["ready"] == 1
    assert out["targets"] == [TARGET]
    assert [w["event"] for w in out["warnings"]] == ["smd.history.unwritable"]
    assert list(state.iterdir()) == []


# -- full disk ---------------------------------------------------------------------


def test_file_size_limit_keeps_committed_history_and_warns_once(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    seeded = seed(path)
    limit = 64 * 1024

    def body() -> dict[str, Any]:
        store = SQLiteHistoryStore(path)
        store.append(TARGET, [Sample(Series.READY, 2000.0, 0.5)])  # fits
        ok_before = not store.degraded
        big = [
            Sample(Series.ATTEMPT, 3000.0 + i, 0.01)
            for i in range(4000)  # several hundred KiB of WAL: over the limit
        ]
        for t in range(5):
            store.append(target_key("api", f"phase:bulk{t}", "production"), big)
        store.append(TARGET, [Sample(Series.READY, 4000.0, 0.6)])
        return {
            "ok_before": ok_before,
            "degraded": store.degraded,
            "ready": [s.at for s in store.load(TARGET).ready],
        }

    out = in_child(body, fsize=limit)
    assert out["error"] is None
    assert out["ok_before"] is True
    assert out["degraded"] is True
    assert [w["event"] for w in out["warnings"]] == ["smd.history.unwritable"]
    assert out["ready"] == [*(s.at for s in seeded), 2000.0, 4000.0]
    # On disk: intact, the committed samples all there, the failed batch
    # entirely absent (a transaction, not a partial write).
    assert integrity(path) == "ok"
    assert [at for at, _ in rows(path, TARGET, Series.READY)] == [
        *(s.at for s in seeded),
        2000.0,
    ]
    assert list(SQLiteHistoryStore(path).targets()) == [TARGET]


@contextlib.contextmanager
def tiny_tmpfs(size: str) -> Iterator[Path]:
    if not IS_ROOT or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = Path(tempfile.mkdtemp(prefix="smd-tmpfs-"))
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
        mnt.rmdir()


def fill(directory: Path) -> None:
    """Write a filler file until the filesystem is full."""

    def write_forever(f: BinaryIO) -> None:
        while True:
            f.write(b"\0" * 4096)

    with open(directory / "filler", "wb", buffering=0) as f, pytest.raises(OSError) as info:
        write_forever(f)
    assert info.value.errno == errno.ENOSPC


def test_full_tmpfs_keeps_committed_history_and_warns_once() -> None:
    with tiny_tmpfs("1m") as mnt:
        path = mnt / "history.sqlite3"
        seeded = seed(path)
        fill(mnt)

        def body() -> dict[str, Any]:
            store = SQLiteHistoryStore(path)
            h = store.load(TARGET)
            loaded = [s.at for s in h.ready]
            for i in range(300):
                h.record_attempt(0.01, at=3000.0 + i)
            h.record_success(0.4, at=4000.0)
            for t in range(5):
                store.append(target_key("api", f"phase:bulk{t}", "production"), h.pending)
            store.append(TARGET, h.pending)
            return {
                "loaded": loaded,
                "degraded": store.degraded,
                "ready": [s.at for s in store.load(TARGET).ready],
            }

        out = in_child(body)
        assert out["error"] is None
        assert out["loaded"] == [s.at for s in seeded]
        assert out["degraded"] is True
        assert [w["event"] for w in out["warnings"]] == ["smd.history.unwritable"]
        assert out["ready"] == [*(s.at for s in seeded), 4000.0]
        (mnt / "filler").unlink()
        assert integrity(path) == "ok"
        assert [at for at, _ in rows(path, TARGET, Series.READY)] == [s.at for s in seeded]


# -- 20 processes at once ----------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, sys
    from structlog.testing import capture_logs
    from smd.history import SQLiteHistoryStore

    k, index, target = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    specs = [arg.rsplit("=", 1) for arg in sys.argv[4:]]  # path=bound
    print("ready", flush=True)
    sys.stdin.readline()  # the start gun: every process begins together
    with capture_logs() as logs:
        stores = [SQLiteHistoryStore(path, bound=int(bound)) for path, bound in specs]
        for i in range(k):
            # Unique, interleaved timestamps: process `index`, round `i`.
            at = 1_000_000.0 + i * 100 + index
            for store in stores:
                h = store.load(target)
                h.record_attempt(index + i / 1000, at=at)
                h.record_success(index + i / 1000, at=at + 0.5)
                store.append(target, h.pending)
                store.append(f"api/phase:worker{index}@test", [h.pending[0]])
    print(json.dumps({
        "warnings": [{k: str(v) for k, v in e.items()}
                     for e in logs if e.get("log_level") == "warning"],
        "degraded": {str(s.path): s.problem for s in stores if s.degraded},
    }), flush=True)
    """
)

FLEET = 20  # processes
ROUNDS = 10  # load + record + append rounds per process and store
SMALL_BOUND = 100  # below FLEET * ROUNDS: shows the bound
BIG_BOUND = 100_000  # above it: shows that no sample is lost


def run_fleet(stores: dict[Path, int]) -> list[dict[str, Any]]:
    """FLEET processes, released together, each running ROUNDS on every store."""
    specs = [f"{path}={bound}" for path, bound in stores.items()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(ROUNDS), str(i), TARGET, *specs],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(FLEET)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            assert err == "", err  # no traceback, no stray warning
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def worker_key(index: int) -> str:
    """The second target each fleet process writes (its own)."""
    return target_key("api", f"phase:worker{index}", "test")


def expected() -> dict[Series, list[tuple[float, float]]]:
    """Every sample the fleet writes to TARGET, oldest first."""
    attempts = sorted(
        (1_000_000.0 + i * 100 + idx, idx + i / 1000) for idx in range(FLEET) for i in range(ROUNDS)
    )
    ready = sorted((at + 0.5, sec) for at, sec in attempts)
    return {Series.ATTEMPT: attempts, Series.READY: ready}


class Fleet:
    def __init__(self, base: Path) -> None:
        self.big = base / "big.sqlite3"  # fresh file, bound above the total
        self.small = base / "small.sqlite3"  # fresh file, bound below the total
        self.corrupt = base / "corrupt" / "history.sqlite3"  # starts as random bytes
        self.corrupt.parent.mkdir()
        self.junk = os.urandom(32 * 1024)
        self.corrupt.write_bytes(self.junk)
        # The corrupt store first: every process meets it in its first call,
        # at the same moment, which is when two of them could both try to
        # move it aside.
        self.results = run_fleet(
            {self.corrupt: BIG_BOUND, self.big: BIG_BOUND, self.small: SMALL_BOUND}
        )

    def warnings(self, path: Path) -> list[list[dict[str, str]]]:
        """Per process, the warnings about one store."""
        return [[w for w in r["warnings"] if w.get("path") == str(path)] for r in self.results]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """One run of 20 processes started at once against three stores."""
    return Fleet(tmp_path_factory.mktemp("fleet"))


def test_fleet_raises_nothing_and_never_degrades(fleet: Fleet) -> None:
    assert all(r["degraded"] == {} for r in fleet.results), fleet.results
    assert fleet.warnings(fleet.big) == [[]] * FLEET
    assert fleet.warnings(fleet.small) == [[]] * FLEET
    for path in (fleet.big, fleet.small, fleet.corrupt):
        assert integrity(path) == "ok"


def test_fleet_loses_no_sample_within_the_bound(fleet: Fleet) -> None:
    for series, samples in expected().items():
        # Every sample of every process, exactly once.
        assert rows(fleet.big, TARGET, series) == samples
    for idx in range(FLEET):
        assert len(rows(fleet.big, worker_key(idx), Series.ATTEMPT)) == ROUNDS
    assert list(SQLiteHistoryStore(fleet.big).targets()) == sorted(
        [TARGET, *(worker_key(i) for i in range(FLEET))]
    )


def test_fleet_keeps_exactly_the_newest_samples_over_the_bound(fleet: Fleet) -> None:
    for series, samples in expected().items():
        assert len(samples) > SMALL_BOUND
        # Exactly the newest `bound`, whichever process wrote them.
        assert rows(fleet.small, TARGET, series) == samples[-SMALL_BOUND:]
    for idx in range(FLEET):
        assert len(rows(fleet.small, worker_key(idx), Series.ATTEMPT)) == ROUNDS


def test_fleet_moves_a_corrupt_file_aside_exactly_once(fleet: Fleet) -> None:
    directory = fleet.corrupt.parent
    aside = [p for p in directory.iterdir() if ".corrupt-" in p.name]
    main_aside = [p for p in aside if not p.name.endswith(("-wal", "-shm"))]
    assert len(main_aside) == 1, sorted(p.name for p in directory.iterdir())
    assert main_aside[0].read_bytes() == fleet.junk
    per_process = fleet.warnings(fleet.corrupt)
    # Whoever met the damaged file says so once; the rest found a fresh one.
    assert all(len(ws) <= 1 for ws in per_process), per_process
    events = {w["event"] for ws in per_process for w in ws}
    assert events == {"smd.history.corrupt"}
    for series, samples in expected().items():
        assert rows(fleet.corrupt, TARGET, series) == samples


# -- the real `smd run`: startup completes, with one warning ------------------------

APP = textwrap.dedent(
    """
    from smd import Startup

    startup = Startup("demo")

    @startup.phase()
    async def config(ctx):
        return None

    @startup.phase(requires=["config"])
    async def cache(ctx):
        return None
    """
)


def smd_run(
    workdir: Path, history: Path, *, fsize: int | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """``smd run app.py:startup`` in a subprocess; exit code and its JSON log events."""
    (workdir / "app.py").write_text(APP)
    env = {
        **os.environ,
        "SMD_ENVIRONMENT": "development",
        "SMD_LOG_FORMAT": "json",
        "SMD_HISTORY_PATH": str(history),
        "PYTHONDONTWRITEBYTECODE": "1",
    }

    def limit() -> None:  # pragma: no cover - runs in the child
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    smd = Path(sys.executable).with_name("smd")
    proc = subprocess.run(
        [str(smd), "run", "app.py:startup"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        check=False,
    )
    events = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, events


def history_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if str(e.get("event", "")).startswith("smd.history.")]


def assert_ready(code: int, events: list[dict[str, Any]]) -> None:
    assert code == 0, events
    finished = [e for e in events if e["event"] == "smd.startup.finished"]
    assert [e["state"] for e in finished] == ["ready"]


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_smd_run_with_a_damaged_store_completes_with_one_warning(
    tmp_path: Path, damage: str
) -> None:
    history = tmp_path / "history.sqlite3"
    if damage == "random bytes":
        history.write_bytes(os.urandom(20_000))
    else:
        store = SQLiteHistoryStore(history)
        for t in range(6):  # enough pages that half the file is real damage
            store.append(
                target_key("demo", f"phase:bulk{t}", "development"),
                [Sample(Series.ATTEMPT, float(i), 0.01) for i in range(200)],
            )
        os.truncate(history, history.stat().st_size // 2)
    damaged = history.read_bytes()

    code, events = smd_run(tmp_path, history)
    assert_ready(code, events)
    warnings = history_events(events)
    assert [(w["event"], w["level"]) for w in warnings] == [("smd.history.corrupt", "warning")]
    moved = Path(warnings[0]["moved_to"])
    assert moved.read_bytes() == damaged  # kept aside for inspection
    # The fresh store learned from this run.
    assert integrity(history) == "ok"
    assert_learned_from_the_run(history)


def assert_learned_from_the_run(history: Path) -> None:
    """The store holds this run's two phases, keyed by the startup's name."""
    assert SQLiteHistoryStore(history).targets() == {
        f"demo/phase:{name}@development": TargetInfo(
            f"demo/phase:{name}@development",
            "demo",
            f"phase:{name}",
            "development",
            name,
            {"type": "default"},
        )
        for name in ("cache", "config")
    }


def make_v1(path: Path) -> None:
    """A history file as smd wrote it before schema 2 (keys without the startup)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE samples (id INTEGER PRIMARY KEY, target TEXT NOT NULL, "
            "series TEXT NOT NULL, at REAL NOT NULL, seconds REAL, "
            "censored INTEGER NOT NULL DEFAULT 0, kind TEXT)"
        )
        conn.execute("CREATE INDEX samples_by_target ON samples (target, series, at)")
        conn.executemany(
            "INSERT INTO samples (target, series, at, seconds) VALUES (?, 'ready', ?, 0.01)",
            [
                (f"phase:{name}@development", float(i))
                for name in ("cache", "config")
                for i in range(8)
            ],
        )
        conn.execute("PRAGMA user_version = 1")
    finally:
        conn.close()


def test_smd_run_with_a_v1_store_moves_it_aside_with_one_warning(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    make_v1(history)
    old = history.read_bytes()
    code, events = smd_run(tmp_path, history)
    assert_ready(code, events)
    warnings = history_events(events)
    assert [(w["event"], w["level"]) for w in warnings] == [("smd.history.replaced", "warning")]
    moved = Path(warnings[0]["moved_to"])
    assert moved.parent == tmp_path
    assert moved.name.startswith("history.sqlite3.v1-")
    assert moved.read_bytes() == old
    assert integrity(history) == "ok"
    assert_learned_from_the_run(history)
    # The next run uses the fresh store quietly, and adds to it.
    code, events = smd_run(tmp_path, history)
    assert_ready(code, events)
    assert history_events(events) == []
    assert len(rows(history, "demo/phase:cache@development", Series.READY)) == 2


@pytest.mark.parametrize("kind", ["/dev/null", "/dev/full", "fifo", "directory"])
def test_smd_run_with_a_history_path_that_is_not_a_file_creates_nothing(
    tmp_path: Path, kind: str
) -> None:
    if kind.startswith("/dev/"):
        history = Path(kind)
        if not history.exists():
            pytest.skip(f"{kind} does not exist here")
    else:
        history = tmp_path / "state" / "history.sqlite3"
        history.parent.mkdir()
        if kind == "fifo":
            os.mkfifo(history)
        else:
            history.mkdir()
    around = history.parent
    sidecars = [Path(f"{history}{suffix}") for suffix in ("-journal", "-wal", "-shm")]
    assert [p for p in sidecars if p.exists()] == [], "left by an earlier run"
    before = sorted(p.name for p in around.iterdir())

    code, events = smd_run(tmp_path, history)
    assert_ready(code, events)
    warnings = history_events(events)
    assert [(w["event"], w["level"]) for w in warnings] == [("smd.history.unwritable", "warning")]
    assert warnings[0]["path"] == str(history)
    assert [p for p in sidecars if p.exists()] == []
    assert sorted(p.name for p in around.iterdir()) == before
    if kind == "directory":
        assert list(history.iterdir()) == []


def test_smd_run_with_an_uncreatable_store_directory_completes_with_one_warning(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    code, events = smd_run(tmp_path, blocker / "smd" / "history.sqlite3")
    assert_ready(code, events)
    warnings = history_events(events)
    assert [(w["event"], w["level"]) for w in warnings] == [("smd.history.unwritable", "warning")]
    assert blocker.read_text() == "a file where the state directory should be"


def test_smd_run_on_a_full_disk_completes_with_one_warning(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    seeded = seed(history)
    before = history.read_bytes()
    code, events = smd_run(tmp_path, history, fsize=1024)  # not even one WAL frame fits
    assert_ready(code, events)
    warnings = history_events(events)
    assert [(w["event"], w["level"]) for w in warnings] == [("smd.history.unwritable", "warning")]
    assert history.read_bytes() == before
    assert integrity(history) == "ok"
    assert [at for at, _ in rows(history, TARGET, Series.READY)] == [s.at for s in seeded]
