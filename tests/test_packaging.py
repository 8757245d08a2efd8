"""The distribution as users get it: one wheel, one top-level package, true layers.

Builds the real wheel, installs it outside the repository (no editable
hook, no source tree on the path), and checks what a user would: the
top-level names, the imports, the version, the plugin entry points. Then
runs the import-linter contracts against a staged tree with a deliberate
violation, to show that they catch one.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from stage_tree import stage  # noqa: E402


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("smd_startup-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return target


def run_outside(installed: Path, tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Python in an empty directory, the installed wheel first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMD_", "PYTHON"))}
    env["PYTHONPATH"] = str(installed)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def test_the_wheel_installs_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        tops = {n.split("/", 1)[0] for n in names}
        (dist_info,) = [t for t in tops if t.endswith(".dist-info")]
        assert tops == {"smd", dist_info}
        assert zf.read(f"{dist_info}/top_level.txt").decode().split() == ["smd"]
        entry_points = configparser.ConfigParser()
        entry_points.read_string(zf.read(f"{dist_info}/entry_points.txt").decode())
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "smd/checks/postgres.py" in names
    assert "smd/phases/database.py" in names
    assert "smd/py.typed" in names
    assert "smd/checks/py.typed" in names
    assert entry_points["console_scripts"]["smd"] == "smd._cli:main"
    assert dict(entry_points["smd.plugins"]) == {
        "database": "smd.phases._settings:plugin",
        "fleet": "smd.checks._plugins:fleet",
        "http": "smd.checks._plugins:http",
        "postgres": "smd.checks._plugins:postgres",
        "redis": "smd.checks._plugins:redis",
        "tcp": "smd.checks._plugins:tcp",
    }
    assert entry_points["pytest11"]["smd"] == "smd._pytest_plugin"
    assert "Name: smd-startup" in metadata
    assert "License-Expression: MIT" in metadata or "License: MIT" in metadata
    assert "Project-URL: Changelog" in metadata
    assert "Classifier: Typing :: Typed" in metadata


def test_installed_outside_the_repository_imports_as_documented(
    installed: Path, tmp_path: Path
) -> None:
    code = (
        "import importlib.metadata as m, smd\n"
        "from smd.phases import DatabasePhase\n"
        "from smd.checks.postgres import PostgresCheck, PostgresOptions\n"
        f"assert smd.__file__.startswith({str(installed)!r}), smd.__file__\n"
        "assert smd.__version__ == m.version('smd-startup'), smd.__version__\n"
        "for name in ('phases', 'checks'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(f'import {name} worked')\n"
        "print(smd.__version__)\n"
    )
    out = run_outside(installed, tmp_path, code)
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.strip()
        == run_outside(
            installed, tmp_path, "import importlib.metadata as m; print(m.version('smd-startup'))"
        ).stdout.strip()
    )


def test_smd_version_prints_the_metadata_version(installed: Path, tmp_path: Path) -> None:
    out = run_outside(
        installed, tmp_path, "import sys; from smd._cli import main; sys.exit(main(['--version']))"
    )
    version = run_outside(
        installed, tmp_path, "import importlib.metadata as m; print(m.version('smd-startup'))"
    ).stdout.strip()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"smd {version}"
    assert version
    assert version != "0+unknown"


def test_smd_exports_at_most_25_names() -> None:
    import smd

    assert len(smd.__all__) <= 25
    for name in smd.__all__:
        assert getattr(smd, name) is not None


@pytest.fixture
def staged(tmp_path: Path) -> Iterator[Path]:
    tree = stage(tmp_path / "stage")
    yield tree
    shutil.rmtree(tree, ignore_errors=True)


def lint_imports(stage_root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=stage_root,
        capture_output=True,
        text=True,
    )


def test_the_layer_contracts_hold(staged: Path) -> None:
    out = lint_imports(staged)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(
    ("line", "contract"),
    [
        ("import asyncpg", "The engine knows nothing of checks, phases or asyncpg"),
        (
            "from smd.checks import postgres",
            "The engine knows nothing of checks, phases or asyncpg",
        ),
        (
            "def f():\n    from smd.phases import database",
            "The engine knows nothing of checks, phases or asyncpg",
        ),
    ],
)
def test_the_contracts_catch_an_engine_module_importing_a_plugin(
    staged: Path, line: str, contract: str
) -> None:
    # A real engine module gains the import (a copy, not the repository's file).
    victim = staged / "smd" / "_units.py"
    text = victim.read_text()
    victim.unlink()
    victim.write_text(text + "\n" + line + "\n")
    out = lint_imports(staged)
    assert out.returncode != 0
    assert f"{contract} BROKEN" in out.stdout


def test_the_contracts_catch_a_cycle_through_a_function_level_import(staged: Path) -> None:
    victim = staged / "smd" / "_units.py"  # imported by smd._phase, among others
    text = victim.read_text()
    victim.unlink()
    victim.write_text(text + "\n\ndef _late():\n    from smd import _phase\n")
    out = lint_imports(staged)
    assert out.returncode != 0
    assert "No import cycles among smd's modules BROKEN" in out.stdout


def test_every_engine_module_is_under_the_layer_contract() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (engine,) = [c for c in config["contracts"] if c["name"].startswith("The engine")]
    modules = {
        f"smd.{p.stem}"
        for p in (ROOT / "smd").glob("*.py")
        if p.stem not in ("__init__", "__main__")
    }
    assert set(engine["source_modules"]) == modules
