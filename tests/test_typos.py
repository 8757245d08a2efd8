"""Typos are named (issue 11): unknown keys in smd.toml, [tool.smd] and .env stop
with exit 78 naming the closest valid key; an unknown SMD_* variable warns once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGET = str(ROOT / "tests" / "targets" / "kinds.py") + ":startup"


def smd(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SMD")}
    base.update(SMD_HISTORY_ENABLED="false", SMD_LOG_FORMAT="json", **env)
    return subprocess.run(
        [sys.executable, "-m", "smd", *args], cwd=cwd, env=base, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "smd.toml",
            "startup_budgett = 7\n",
            "unknown setting 'startup_budgett' in {path}/smd.toml; did you mean 'startup_budget'?",
        ),
        (
            "pyproject.toml",
            '[tool.smd]\nenviroment = "development"\n',
            "unknown setting 'enviroment' in [tool.smd] of {path}/pyproject.toml; did you mean 'environment'?",
        ),
        (
            "smd.toml",
            "[timeouts.production]\nceilling = 60\n",
            "unknown setting 'timeouts.production.ceilling' in {path}/smd.toml; did you mean 'timeouts.production.ceiling'?",
        ),
        (
            "smd.toml",
            "[bypass]\nmin_sucess_rate = 0.9\n",
            "unknown setting 'bypass.min_sucess_rate' in {path}/smd.toml; did you mean 'bypass.min_success_rate'?",
        ),
        (
            ".env",
            "SMD_PHASE_TIMEOT=3\nAPP_OTHER=1\n",
            "unknown setting 'SMD_PHASE_TIMEOT' in {path}/.env; did you mean 'SMD_PHASE_TIMEOUT'?",
        ),
        (
            "smd.toml",
            "zzzz = 1\n",
            "unknown setting 'zzzz' in {path}/smd.toml; "
            "accepted: the keys listed in docs/reference/settings.md",
        ),
    ],
)
def test_an_unknown_key_in_a_settings_file_stops_naming_the_closest(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    (tmp_path / name).write_text(content)
    out = smd(tmp_path, "plan", TARGET)
    assert out.returncode == 78, out.stderr
    assert out.stderr.strip().splitlines() == ["smd: " + expected.format(path=tmp_path)]
    assert out.stdout == ""


def test_a_quoted_multi_line_value_in_dotenv_holds_no_setting_names(tmp_path: Path) -> None:
    # The second line belongs to APP_NOTE's value: it is not a setting smd must know.
    (tmp_path / ".env").write_text('APP_NOTE="first line\nSMD_NOT_A_KEY=inside the quote"\n')
    out = smd(tmp_path, "plan", TARGET)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_a_typo_in_the_environment_warns_once_and_runs(tmp_path: Path) -> None:
    out = smd(tmp_path, "plan", TARGET, SMD_STARTUP_BUGDET="1")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines() == [
        "smd: warning: unknown setting 'SMD_STARTUP_BUGDET' in the environment; "
        "did you mean 'SMD_STARTUP_BUDGET'?"
    ]
    assert "budget 120s" in out.stdout  # the misspelt value was not used


def test_a_nested_typo_in_the_environment_is_an_error_naming_the_closest(tmp_path: Path) -> None:
    out = smd(tmp_path, "plan", TARGET, SMD_BYPASS__PRODUCTON__TIMEOUT="continue")
    assert out.returncode == 78
    assert out.stderr.strip().splitlines() == [
        "smd: unknown setting 'SMD_BYPASS__PRODUCTON__TIMEOUT' in the environment; "
        "did you mean 'SMD_BYPASS__PRODUCTION'?"
    ]


def test_variables_smd_sets_for_the_server_are_not_settings(tmp_path: Path) -> None:
    out = smd(
        tmp_path,
        "plan",
        TARGET,
        SMD_STARTUP_STATE="ready",
        SMD_STARTUP_REASONS="[]",
        SMD_STARTUP_REPORT="/tmp/r.json",
        SMD_PG_BINDIR="/usr/lib/postgresql/15/bin",
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_valid_keys_of_every_kind_pass_silently(tmp_path: Path) -> None:
    (tmp_path / "smd.toml").write_text(
        'environment = "staging"\nstartup_budget = 60\n'
        '[bypass]\nmode = "conditional"\n[bypass.production]\ninfrastructure = "continue"\n'
        "[timeouts.production]\nceiling = 60\n[otel]\nenabled = false\n"
    )
    out = smd(
        tmp_path,
        "plan",
        TARGET,
        SMD_TIMEOUTS__MIN_SAMPLES="4",
        SMD_DATABASE_URL="postgresql://u@h/d",
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "environment staging, budget 60s" in out.stdout
