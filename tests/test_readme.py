"""The README's examples run, and its tables match the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from smd._exit import EXIT_CODES
from smd.settings import settings_class

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _tested_blocks() -> list[str]:
    return re.findall(r"<!-- readme-test -->\n```python\n(.*?)```", README, flags=re.S)


def test_there_are_tested_examples() -> None:
    assert len(_tested_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_tested_blocks())))
def test_python_example_runs(index: int, tmp_path: Path) -> None:
    code = _tested_blocks()[index]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SMD_HISTORY_ENABLED": "false", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr


def test_quickstart_has_exactly_the_two_commands() -> None:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["bash examples/run_quickstart.sh", "bash tests/run.sh"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash tests/run.sh" in ci


def test_exit_code_table_matches_the_code() -> None:
    table = README.split("| exit code | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {
        int(code)
        for row in re.findall(r"^\| ([\d /]+) \|", table, flags=re.M)
        for code in row.split(" / ")
    }
    assert documented == set(EXIT_CODES.values())


def test_every_setting_is_documented() -> None:
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    # The engine's settings and those plugins own (SMD_DATABASE_URL).
    fields = settings_class().model_fields
    assert "database_url" in fields
    for name in fields:
        assert f"SMD_{name.upper()}" in section, name


def test_every_test_named_in_guarantees_exists() -> None:
    section = README.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    refs = re.findall(r"`(tests/[\w/]+\.py)(?:::([\w*\[\]-]+))?`", section)
    assert len(refs) >= 20
    for path, name in refs:
        source = (ROOT / path).read_text()
        if name:
            pattern = re.escape(name.split("[")[0]).replace(r"\*", r"\w*")
            assert re.search(rf"def {pattern}\(", source), f"{path}::{name}"


def test_the_own_check_example_is_the_tested_file() -> None:
    section = README.split("## Other checks, and writing your own", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert block is not None
    code = (ROOT / "tests" / "examples" / "own_check.py").read_text()
    assert block.group(1) == code.split('"""', 2)[2].lstrip("\n")
    # "in under 25 lines" (issue 15): the code, blank lines and comments aside.
    lines = [
        ln for ln in block.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    assert len(lines) < 25 + 6  # the 6 import lines are not the check
