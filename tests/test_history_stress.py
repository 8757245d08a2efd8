"""The history store under stress, with real processes and real files.

- an unwritable store directory (as ``nobody`` when the suite runs as root,
  since root ignores permission bits);
- a full disk, two ways: a file-size limit (``RLIMIT_FSIZE``, writes fail with
  EFBIG) and, where mounting is allowed, a tiny tmpfs filled to the brim;
- 20 processes started at once against one store (fresh, and corrupt).

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

from smd import Sample, Series, TimingHistory
from smd._sqlite_store import SQLiteHistoryStore

TARGET = "postgres://db.internal:5432/app@production"
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
    """Deny writes in ``directory``; the uid the child must run as (None: this one)."""
    if IS_ROOT:
        return NOBODY  # root ignores permission bits; nobody does not own the dir
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
            "targets": store.targets(),
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
        return {"ready": len(store.load(TARGET).ready), "targets": store.targets()}

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
            store.append(f"phase:bulk{t}@production", big)
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
    assert SQLiteHistoryStore(path).targets() == [TARGET]


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
                store.append(f"phase:bulk{t}@production", h.pending)
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
    from smd._sqlite_store import SQLiteHistoryStore

    big_path, small_path, small_bound, k, index, target = sys.argv[1:7]
    k, index = int(k), int(index)
    print("ready", flush=True)
    sys.stdin.readline()  # the start gun: every process begins together
    with capture_logs() as logs:
        big = SQLiteHistoryStore(big_path, bound=100_000)
        small = SQLiteHistoryStore(small_path, bound=int(small_bound)) if small_path != "-" else None
        for i in range(k):
            # Unique, interleaved timestamps: process `index`, round `i`.
            at = 1_000_000.0 + i * 100 + index
            for store in (big, small):
                if store is None:
                    continue
                h = store.load(target)
                h.record_attempt(index + i / 1000, at=at)
                h.record_success(index + i / 1000, at=at + 0.5)
                store.append(target, h.pending)
                store.append(f"phase:worker{index}@test", [h.pending[0]])
    print(json.dumps({
        "warnings": [dict(event=e["event"], **{k: str(v) for k, v in e.items() if k != "event"})
                     for e in logs if e.get("log_level") == "warning"],
        "degraded": [s.problem for s in (big, small) if s is not None and s.degraded],
    }), flush=True)
    """
)


def run_fleet(
    big: Path, small: Path | None, *, small_bound: int, k: int, n: int = 20
) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(big),
                str(small) if small else "-",
                str(small_bound),
                str(k),
                str(i),
                TARGET,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
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
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            assert err == "", err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def expected(k: int, n: int = 20) -> dict[Series, list[tuple[float, float]]]:
    attempts = sorted(
        (1_000_000.0 + i * 100 + idx, idx + i / 1000) for idx in range(n) for i in range(k)
    )
    ready = sorted((at + 0.5, sec) for at, sec in attempts)
    return {Series.ATTEMPT: attempts, Series.READY: ready}


def test_twenty_processes_at_once_lose_no_sample_within_the_bound(tmp_path: Path) -> None:
    big, small = tmp_path / "big.sqlite3", tmp_path / "small.sqlite3"
    k, small_bound, n = 10, 100, 20
    results = run_fleet(big, small, small_bound=small_bound, k=k, n=n)

    assert all(r["warnings"] == [] for r in results), results
    assert all(r["degraded"] == [] for r in results), results
    want = expected(k, n)
    for path in (big, small):
        assert integrity(path) == "ok"
    for series, samples in want.items():
        # Within the bound: every sample of every process, exactly once.
        assert rows(big, TARGET, series) == samples
        # Over the bound: exactly the newest `bound`, whoever wrote them.
        assert len(samples) > small_bound
        assert rows(small, TARGET, series) == samples[-small_bound:]
    for idx in range(n):
        assert len(rows(big, f"phase:worker{idx}@test", Series.ATTEMPT)) == k
        assert len(rows(small, f"phase:worker{idx}@test", Series.ATTEMPT)) == k
    assert SQLiteHistoryStore(big).targets() == sorted(
        [TARGET, *(f"phase:worker{i}@test" for i in range(n))]
    )


def test_twenty_processes_on_a_corrupt_file_move_it_aside_once(tmp_path: Path) -> None:
    big = tmp_path / "history.sqlite3"
    junk = os.urandom(32 * 1024)
    big.write_bytes(junk)
    k, n = 5, 20
    results = run_fleet(big, None, small_bound=1, k=k, n=n)

    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    main_aside = [p for p in aside if not p.name.endswith(("-wal", "-shm"))]
    assert len(main_aside) == 1, sorted(p.name for p in tmp_path.iterdir())
    assert main_aside[0].read_bytes() == junk
    events = [w["event"] for r in results for w in r["warnings"]]
    assert set(events) == {"smd.history.corrupt"}
    assert all(len(r["warnings"]) <= 1 for r in results), results
    assert all(r["degraded"] == [] for r in results), results
    assert integrity(big) == "ok"
    for series, samples in expected(k, n).items():
        assert rows(big, TARGET, series) == samples


def test_timing_history_matches_the_store_bound() -> None:
    # The in-memory history and the store trim the same way: newest by time.
    h = TimingHistory([Sample(Series.READY, float(i), 0.1) for i in range(10, 0, -1)], bound=3)
    assert [s.at for s in h.ready] == [8.0, 9.0, 10.0]
