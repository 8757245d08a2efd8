"""Settings: every source, their priority, and one-line errors naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smd import Environment, FailureKind, SettingsError, load_settings
from smd.bypass import BypassMode
from smd.phases._settings import DatabaseSettings


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no SMD_* variables from the outer world."""
    for key in list(os.environ):
        if key.upper().startswith("SMD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def error_of(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text, "a settings error is one line"
    return text


# -- sources ---------------------------------------------------------------------


def test_defaults() -> None:
    s = load_settings()
    assert s.environment is Environment.PRODUCTION
    assert s.startup_budget == 120.0
    assert s.log_format == "auto"
    assert s.log_level == "info"
    assert s.bypass.mode is None
    assert s.timeouts.production.ceiling == 120.0


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMD_ENVIRONMENT", "staging")
    monkeypatch.setenv("SMD_STARTUP_BUDGET", "45.5")
    monkeypatch.setenv("SMD_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("SMD_LOG_FORMAT", "json")
    s = load_settings()
    assert s.environment is Environment.STAGING
    assert s.startup_budget == 45.5
    assert s.log_level == "warning"
    assert s.log_format == "json"


def test_nested_variables_with_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMD_BYPASS__PRODUCTION__INFRASTRUCTURE", "continue")
    monkeypatch.setenv("SMD_BYPASS__MODE", "Permissive")
    monkeypatch.setenv("SMD_TIMEOUTS__STAGING__CEILING", "60")
    s = load_settings()
    assert s.bypass.production == {FailureKind.INFRASTRUCTURE: "continue"}
    assert s.bypass.mode is BypassMode.PERMISSIVE
    # One nested bound set; the environment's other defaults are kept.
    assert s.timeouts.staging.ceiling == 60
    assert s.timeouts.staging.floor == 1.0
    assert s.timeouts.staging.default == 30.0
    assert s.timeouts.production.ceiling == 120.0


@pytest.mark.parametrize("value", ["production", "PRODUCTION", "Production", " production "])
def test_environment_name_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SMD_ENVIRONMENT", value)
    assert load_settings().environment is Environment.PRODUCTION


def test_environment_argument_is_case_insensitive() -> None:
    assert load_settings(environment="DeVeLoPmEnT").environment is Environment.DEVELOPMENT
    assert load_settings(environment=Environment.TEST).environment is Environment.TEST


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("smd_environment", "test")
    assert load_settings().environment is Environment.TEST


def test_dotenv_file(isolated: Path) -> None:
    write(isolated / ".env", "SMD_ENVIRONMENT=development\nSMD_STARTUP_BUDGET=12\nOTHER=1\n")
    s = load_settings()
    assert s.environment is Environment.DEVELOPMENT
    assert s.startup_budget == 12


def test_smd_toml(isolated: Path) -> None:
    write(
        isolated / "smd.toml",
        'environment = "staging"\nstartup_budget = 33\n\n'
        '[bypass.staging]\ntimeout = "fail"\n\n[timeouts.staging]\nfloor = 2\n',
    )
    s = load_settings()
    assert s.environment is Environment.STAGING
    assert s.startup_budget == 33
    assert s.bypass.staging == {FailureKind.TIMEOUT: "fail"}
    assert s.timeouts.staging.floor == 2
    assert s.timeouts.staging.ceiling == 120.0


def test_pyproject_tool_smd(isolated: Path) -> None:
    write(
        isolated / "pyproject.toml",
        '[project]\nname = "svc"\n\n[tool.smd]\nenvironment = "test"\nphase_timeout = 7\n\n'
        '[tool.smd.bypass]\nmode = "conditional"\n\n[tool.other]\nenvironment = "staging"\n',
    )
    s = load_settings()
    assert s.environment is Environment.TEST
    assert s.phase_timeout == 7
    assert s.bypass.mode is BypassMode.CONDITIONAL


def test_priority_args_env_dotenv_smd_toml_pyproject(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(isolated / "pyproject.toml", "[tool.smd]\nstartup_budget = 1\n")
    write(isolated / "smd.toml", "startup_budget = 2\n")
    write(isolated / ".env", "SMD_STARTUP_BUDGET=3\n")
    monkeypatch.setenv("SMD_STARTUP_BUDGET", "4")
    assert load_settings(startup_budget=5).startup_budget == 5
    assert load_settings().startup_budget == 4
    monkeypatch.delenv("SMD_STARTUP_BUDGET")
    assert load_settings().startup_budget == 3
    (isolated / ".env").unlink()
    assert load_settings().startup_budget == 2
    (isolated / "smd.toml").unlink()
    assert load_settings().startup_budget == 1
    (isolated / "pyproject.toml").unlink()
    assert load_settings().startup_budget == 120


def test_sources_merge_field_by_field(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated / "smd.toml", 'environment = "staging"\nphase_timeout = 9\n')
    monkeypatch.setenv("SMD_PHASE_TIMEOUT", "4")
    s = load_settings()
    assert s.environment is Environment.STAGING  # from smd.toml
    assert s.phase_timeout == 4  # the environment wins for this one field


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.startup_budget = 1  # type: ignore[misc]


def test_database_url_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMD_DATABASE_URL", "postgresql://app:hunter2-secret@db/app")
    s = load_settings()
    # Owned by the PostgreSQL side (smd.phases), merged into the loaded settings.
    assert isinstance(s, DatabaseSettings)
    assert s.database_url is not None
    assert s.database_url.get_secret_value().endswith("@db/app")
    assert "hunter2-secret" not in repr(s)
    assert "hunter2-secret" not in str(s)
    assert "hunter2-secret" not in s.model_dump_json()


# -- errors: one line naming the variable and what it accepts ----------------------------


def test_unknown_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    text = error_of(monkeypatch, SMD_ENVIRONMENT="qa")
    assert "SMD_ENVIRONMENT" in text
    assert "'qa'" in text
    assert "development, staging, production, test" in text


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf", "-inf", "soon"])
def test_startup_budget_must_be_positive_finite(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    text = error_of(monkeypatch, SMD_STARTUP_BUDGET=value)
    assert text.startswith("invalid setting SMD_STARTUP_BUDGET")
    assert repr(value) in text
    if value != "soon":
        assert "positive finite number of seconds" in text


def test_phase_timeout_zero_argument_names_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"^invalid setting SMD_PHASE_TIMEOUT .*positive"):
        load_settings(phase_timeout=0)


def test_floor_above_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    text = error_of(monkeypatch, SMD_TIMEOUTS__PRODUCTION__FLOOR="200")
    assert "SMD_TIMEOUTS__PRODUCTION" in text
    assert "floor (200s) is above ceiling (120s)" in text


def test_nan_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    text = error_of(monkeypatch, SMD_TIMEOUTS__TEST__CEILING="nan")
    assert "SMD_TIMEOUTS__TEST__CEILING" in text
    assert "positive finite" in text


def test_unknown_bypass_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    text = error_of(monkeypatch, SMD_BYPASS__PRODUCTION__DISK="continue")
    assert "SMD_BYPASS__PRODUCTION__DISK" in text
    for kind in FailureKind:
        assert kind.value in text


def test_unknown_bypass_cell_action(monkeypatch: pytest.MonkeyPatch) -> None:
    text = error_of(monkeypatch, SMD_BYPASS__STAGING__TIMEOUT="maybe")
    assert "SMD_BYPASS__STAGING__TIMEOUT" in text
    assert "'fail', 'continue' or 'conditional'" in text


def test_unknown_bypass_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    text = error_of(monkeypatch, SMD_BYPASS__MODE="lenient")
    assert "SMD_BYPASS__MODE" in text
    assert "'lenient'" in text
    assert "'strict', 'permissive' or 'conditional'" in text


def test_unknown_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    text = error_of(monkeypatch, SMD_LOG_LEVEL="loud")
    assert "SMD_LOG_LEVEL" in text
    assert "'debug', 'info', 'warning' or 'error'" in text


def test_invalid_value_in_smd_toml_names_the_key_and_the_file(isolated: Path) -> None:
    write(isolated / "smd.toml", 'environment = "qa"\n')
    with pytest.raises(
        SettingsError, match=r"^invalid setting environment in .*smd\.toml .*accepted"
    ):
        load_settings()


def test_several_problems_are_counted_on_the_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    text = error_of(monkeypatch, SMD_STARTUP_BUDGET="-1", SMD_LOG_LEVEL="loud")
    assert "(and 1 more problem)" in text


def test_secret_value_is_not_echoed_in_errors(isolated: Path) -> None:
    write(isolated / "smd.toml", "database_url = 987654321\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "database_url in " in str(info.value)  # the key the file set, and the file
    assert "987654321" not in str(info.value)


@pytest.mark.parametrize("filename", ["smd.toml", "pyproject.toml"])
def test_malformed_toml(isolated: Path, filename: str) -> None:
    prefix = "[tool.smd]\n" if filename == "pyproject.toml" else ""
    write(isolated / filename, prefix + "environment = \n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("malformed TOML in smd.toml or pyproject.toml")
    assert "\n" not in str(info.value)
