"""The engine runs where ``fcntl`` does not exist (Windows): plan, run, history, damage.

A real ``smd`` process runs with ``fcntl`` hidden (a module on the path that
refuses to import, as on Windows); the history store must still be created,
written, read, and a damaged file moved aside, with no "internal error".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = str(ROOT / "tests" / "targets" / "kinds.py") + ":startup"


def smd(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    hide = tmp / "hide"
    hide.mkdir(exist_ok=True)
    (hide / "fcntl.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'fcntl' (hidden by the test)\", name='fcntl')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    env.update(
        PYTHONPATH=str(hide),
        SMD_HISTORY_PATH=str(tmp / "state" / "history.sqlite3"),
        SMD_ENVIRONMENT="development",
        SMD_LOG_FORMAT="json",
        SMDTEST_KIND="ok",
    )
    return subprocess.run(
        [sys.executable, "-m", "smd", *args], cwd=tmp, env=env, capture_output=True, text=True
    )


def test_fcntl_is_really_hidden(tmp_path: Path) -> None:
    out = smd(tmp_path, "--version")
    assert out.returncode == 0, out.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import fcntl"],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "hide")},
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0
    assert "hidden by the test" in probe.stderr


def test_plan_run_and_history_work_without_fcntl(tmp_path: Path) -> None:
    plan = smd(tmp_path, "plan", KINDS)
    assert plan.returncode == 0, plan.stderr
    assert "internal error" not in plan.stderr
    for _ in range(2):
        run = smd(tmp_path, "run", KINDS)
        assert run.returncode == 0, run.stderr
    history = smd(tmp_path, "history", "--format", "json")
    assert history.returncode == 0, history.stderr
    targets = {t["target"]: t for t in json.loads(history.stdout)}
    work = targets["kinds/phase:work@development"]
    assert work["counts"]["ready"] == 2


def test_a_damaged_store_is_moved_aside_without_fcntl(tmp_path: Path) -> None:
    assert smd(tmp_path, "run", KINDS).returncode == 0
    store = tmp_path / "state" / "history.sqlite3"
    store.write_bytes(b"this is not a database" * 100)
    run = smd(tmp_path, "run", KINDS)
    assert run.returncode == 0, run.stderr
    assert "smd.history.corrupt" in run.stderr
    assert list((tmp_path / "state").glob("history.sqlite3.corrupt-*"))
