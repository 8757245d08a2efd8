"""The README's example runs against a real PostgreSQL, and its claims match the code.

What the README used to carry besides (the settings table, the guarantees, the
bypass and fault matrices, the own-check example) lives in docs/ now, and is
checked there: tests/test_docs.py, tests/test_matrix.py, tests/test_fault_matrix.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from smd._exit import EXIT_CODES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
TIMEOUT = 60


def _tested_blocks() -> list[str]:
    return re.findall(r"<!-- readme-test -->\n```python\n(.*?)```", README, flags=re.S)


def _section(title: str) -> str:
    return README.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "SMD_HISTORY_ENABLED": "false", "HOME": str(home), **extra}


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def test_there_is_a_tested_example() -> None:
    assert len(_tested_blocks()) >= 1


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """The README's example, saved as shop.py (the name its commands use)."""
    (example,) = _tested_blocks()
    (tmp_path / "shop.py").write_text(example, encoding="utf-8")
    return tmp_path


_SERVE = """
from fastapi.testclient import TestClient

from shop import app

with TestClient(app) as client:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["state"] == "ready", ready.text
    items = client.get("/items")
    assert items.status_code == 200, items.text
    assert items.json() == {"items": 42}, items.text
print("served")
"""


def test_the_example_serves_from_what_its_phases_returned(shop: Path, pg_dsn: str) -> None:
    """Its lifespan waits for the real database; the route serves the phase's value."""
    out = _run([sys.executable, "-c", _SERVE], shop, _env(shop, SMD_DATABASE_URL=pg_dsn))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "served" in out.stdout


def test_the_example_plans_as_its_command_says(shop: Path) -> None:
    """``smd plan shop.py:startup``: the order, no database needed (no network I/O)."""
    env = _env(shop, SMD_DATABASE_URL="postgresql://app:secret@127.0.0.1:1/app")
    out = _run([sys.executable, "-m", "smd", "plan", "shop.py:startup"], shop, env)
    assert out.returncode == 0, out.stderr
    assert "order: database -> catalogue" in out.stdout
    assert "secret" not in out.stdout + out.stderr


def test_a_wrong_password_stops_after_one_attempt_with_78(shop: Path, pg_dsn: str) -> None:
    """The README's claim for production: configuration is final (exit 78), not waited for."""
    wrong = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1not-the-password@", pg_dsn, count=1)
    assert wrong != pg_dsn
    env = _env(shop, SMD_DATABASE_URL=wrong, SMD_LOG_LEVEL="warning")
    out = _run([sys.executable, "-m", "smd", "run", "shop.py:startup"], shop, env)
    assert out.returncode == 78, out.stdout + out.stderr
    assert "STARTUP FAILED" in out.stderr
    assert "not-the-password" not in out.stdout + out.stderr


def test_the_own_check_example_is_the_tested_file() -> None:
    """Issue 15: the README shows how to write a check in under 25 lines, and
    that example is tests/examples/own_check.py, which the suite runs end to
    end (tests/test_checks_more.py: through `smd check file` and as a phase)."""
    section = README.split("## Your own check", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert block is not None
    code = (ROOT / "tests" / "examples" / "own_check.py").read_text(encoding="utf-8")
    assert block.group(1) == code.split('"""', 2)[2].lstrip("\n")
    # The code, blank lines and comments aside, and not counting the imports.
    lines = [
        ln
        for ln in block.group(1).splitlines()
        if ln.strip() and not ln.strip().startswith("#") and not ln.startswith(("import ", "from "))
    ]
    assert len(lines) < 25, len(lines)


def test_quickstart_has_exactly_the_two_commands() -> None:
    section = _section("Quickstart")
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["bash examples/run_quickstart.sh", "bash tests/run.sh"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file()
    # CI runs the README's test command and nothing else.
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci[-1] == "exec bash tests/run.sh", ci


def test_exit_code_table_matches_the_code() -> None:
    table = README.split("| exit code | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {
        int(code)
        for row in re.findall(r"^\| ([\d /]+) \|", table, flags=re.M)
        for code in row.split(" / ")
    }
    assert documented == set(EXIT_CODES.values())


def _anchors(page: Path) -> set[str]:
    """The heading ids MkDocs gives a page (toc's slugify: lower case, words joined by '-')."""
    ids: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", page.read_text(encoding="utf-8"), flags=re.M):
        text = re.sub(r"[`*_]", "", heading).strip().lower()
        text = re.sub(r"[^\w\s-]", "", text)
        ids.add(re.sub(r"[-\s]+", "-", text).strip("-"))
    return ids


def test_every_link_points_at_a_file_that_exists() -> None:
    """Relative links (docs pages, images) resolve from the repository root, as GitHub does."""
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    assert len([link for link in links if link.startswith("docs/")]) >= 15
    for link in links:
        assert not re.match(r"[a-z]+://", link), f"{link}: the README links into the repository"
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README links to {link}, which does not exist"
        if path.startswith("docs/"):
            assert target.suffix == ".md", link
        if anchor:
            assert anchor in _anchors(target), f"README links to {link}: no such heading"


def test_every_measured_table_names_its_script_and_date() -> None:
    """Each figure says how to reproduce it and when it was measured, on which machine."""
    section = _section("Measured")
    assert "2-CPU AMD EPYC VM, Python 3.11.7" in section
    headings = re.findall(r"^### (.+)$", section, flags=re.M)
    assert len(headings) >= 6
    for heading in headings:
        script = re.search(r"`\.venv/bin/python (benchmarks/\w+\.py)`", heading)
        assert script is not None, f"{heading}: no script"
        assert (ROOT / script.group(1)).is_file(), heading
        assert re.search(r"\(\d{4}-\d{2}-\d{2}\)$", heading), f"{heading}: no date"
