"""The docs site: it builds with ``mkdocs build --strict``, offline, and every sample in it works.

Every fenced block in ``docs/**/*.md`` is a test, chosen by its language:

- ``python``: run in a subprocess (cwd a fresh directory holding the page's
  ``file=`` blocks and a link to ``examples/``, ``SMD_HISTORY_ENABLED=false``);
  a block that defines ``test_*`` functions is run with pytest instead (smd's
  pytest plugin loads through its entry point, as for a user). Samples that
  talk to PostgreSQL get ``SMD_DATABASE_URL`` from the suite's real cluster.
- ``toml``: written as ``smd.toml`` (``pyproject.toml`` when it has ``[tool.smd]``
  or ``[project]`` tables) and loaded with ``smd.load_settings()`` in a
  subprocess; every key the sample sets must come back with the value it set,
  so a misspelt or silently ignored key fails. Entry points must be ``module:attr``.
- ``console``: a session. Each ``$ command`` is run (bash, in the page's
  directory, with a history file of its own); the lines after it must appear
  in its output, in order (``...`` inside a line matches anything). A command
  must exit 0 unless the next one is ``echo $?`` showing its code.
- ``sh``: commands for the reader's machine, validated without running them:
  ``smd`` command lines are parsed by smd's own argument parser, their TARGET
  imported and their check TARGET parsed; ``uvicorn`` targets are imported;
  files named (``bash FILE``, ``-f FILE``) must exist; pip extras must exist;
  any other program must be on a short list of known tools.
- ``json`` is parsed; ``yaml``, ``dockerfile`` and ``ini`` blocks must be
  ``--8<--`` includes of repository files (tested where they live).

A comment on the line before a fence sets options: ``<!-- docs-test: postgres -->``
(needs the cluster), ``file=NAME`` (also write the block there for the page's
other samples), ``part`` (not run alone: prepended to the page's next python block).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from faults import FAULTS

from smd._exit import EXIT_CODES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
TIMEOUT = 120

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^`]*$")
_OPTIONS = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<opts>.*?)\s*-->\s*$")
_SNIPPET = re.compile(r'^\s*-+8<-+\s+"(?P<spec>[^"]+)"\s*$')
_KNOWN_OPTIONS = {"postgres", "file", "part"}
_NEEDS_PG = re.compile(
    r"DatabasePhase|PostgresCheck|SMD_DATABASE_URL|smd check postgres|quickstart\.py|fastapi_app"
)


# ------------------------------------------------------------------ reading the docs


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str  # relative to docs/
    line: int  # 1-based line of the opening fence
    lang: str
    source: str  # the block's text as written (dedented)
    options: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def code(self) -> str:
        """The text with ``--8<--`` includes resolved, as the site shows it."""
        return resolve_snippets(self.source, where=self.id)

    def option(self, key: str) -> str | None:
        for opt in self.options:
            name, sep, value = opt.partition("=")
            if name == key:
                return value if sep else ""
        return None

    def needs_postgres(self, page_blocks: list[Block]) -> bool:
        if self.option("postgres") is not None:
            return True
        texts = [self.code, *(b.code for b in page_blocks if b.option("file"))]
        return any(_NEEDS_PG.search(t) for t in texts)


def _section(text: str, name: str, where: str) -> str:
    start = re.search(rf"^.*--8<-- \[start:{re.escape(name)}\].*\n", text, flags=re.M)
    end = re.search(rf"^.*--8<-- \[end:{re.escape(name)}\].*$", text, flags=re.M)
    assert start, f"{where}: no '--8<-- [start:{name}]' marker"
    assert end, f"{where}: no '--8<-- [end:{name}]' marker"
    assert start.end() <= end.start(), f"{where}: section {name!r} ends before it starts"
    inner = text[start.end() : end.start()]
    # Markers of other sections inside are dropped, as pymdownx.snippets does.
    return re.sub(r"^.*--8<-- \[(start|end):[\w-]+\].*\n?", "", inner, flags=re.M)


def resolve_snippets(text: str, *, where: str) -> str:
    """Replace each ``--8<-- "path[:section | :start:end]"`` line with what it names."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        m = _SNIPPET.match(line)
        if m is None:
            out.append(line)
            continue
        spec = m.group("spec")
        path, _, rest = spec.partition(":")
        file = ROOT / path
        assert file.is_file(), f"{where}: the included file {path!r} does not exist"
        content = file.read_text(encoding="utf-8")
        if rest and re.fullmatch(r"\d+:\d+", rest):
            a, b = (int(x) for x in rest.split(":"))
            content = "".join(content.splitlines(keepends=True)[a - 1 : b])
        elif rest:
            content = _section(content, rest, where)
        assert content.strip(), f"{where}: the include {spec!r} is empty"
        out.append(content if content.endswith("\n") else content + "\n")
    return "".join(out)


def parse_page(path: Path) -> list[Block]:
    """Every fenced block of one page, with the options of the comment before it."""
    rel = path.relative_to(DOCS).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        closing = re.compile(rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            j += 1
        assert j < len(lines), f"{rel}:{i + 1}: fence never closed"
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        opts = _OPTIONS.match(lines[k]) if k >= 0 else None
        options = tuple(opts.group("opts").split()) if opts else ()
        body = textwrap.dedent("\n".join(lines[i + 1 : j]))
        blocks.append(Block(rel, i + 1, m.group("lang").lower(), body + "\n", options))
        i = j + 1
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


ALL_BLOCKS = [b for p in pages() for b in parse_page(p)]


def page_blocks(block: Block) -> list[Block]:
    return [b for b in ALL_BLOCKS if b.page == block.page]


# ------------------------------------------------------------------ running samples


def base_env(home: Path) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "SMD_HISTORY_ENABLED": "false",
        "COLUMNS": "100",
    }


def workspace(block: Block, tmp: Path) -> Path:
    """A directory with the page's ``file=`` blocks and a link to ``examples/``."""
    ws = tmp / "ws"
    ws.mkdir()
    (ws / "examples").symlink_to(ROOT / "examples")
    for other in page_blocks(block):
        name = other.option("file")
        if name:
            target = ws / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(other.code, encoding="utf-8")
    return ws


def run(argv: list[str], ws: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ws,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def python_code(block: Block) -> str:
    """The block's code, after the page's ``part`` blocks that lead up to it."""
    blocks = page_blocks(block)
    before: list[str] = []
    for other in blocks[: blocks.index(block)]:
        if other.lang != "python":
            continue
        if other.option("part") is not None:
            before.append(other.code)
        else:
            before = []
    return "".join(before) + block.code


def check_python(block: Block, ws: Path, env: dict[str, str]) -> None:
    if block.option("part") is not None:
        later = [b for b in page_blocks(block) if b.lang == "python" and b.line > block.line]
        assert later, f"{block.id}: a 'part' block needs a python block after it"
        return  # run as the beginning of the next block
    code = python_code(block)
    if re.search(r"^\s*(async\s+)?def test_", code, flags=re.M):
        (ws / "test_sample.py").write_text(code, encoding="utf-8")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        argv += ["-o", "asyncio_mode=auto", "test_sample.py"]
        out = run(argv, ws, env)
        assert out.returncode == 0, f"{block.id}: pytest failed:\n{out.stdout}"
        assert re.search(r"\b[1-9]\d* passed\b", out.stdout), out.stdout
        return
    (ws / "sample.py").write_text(code, encoding="utf-8")
    out = run([sys.executable, "sample.py"], ws, env)
    assert out.returncode == 0, f"{block.id}: the sample failed:\n{out.stdout}"


# -- toml


def _leaves(data: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, (*path, str(key)))
    else:
        yield path, data


def _same(given: Any, loaded: Any) -> bool:
    if isinstance(given, list) and isinstance(loaded, list):
        return sorted(map(str, given)) == sorted(map(str, loaded))
    if isinstance(given, str) and isinstance(loaded, str):
        return given.strip().lower() == loaded.lower()
    if isinstance(given, bool) or isinstance(loaded, bool):
        return given is loaded
    if isinstance(given, int | float) and isinstance(loaded, int | float):
        return float(given) == float(loaded)
    return bool(given == loaded)


_LOAD = (
    "import json\n"
    "from smd import load_settings\n"
    "print(json.dumps(load_settings().model_dump(mode='json')))\n"
)


def check_toml(block: Block, ws: Path, env: dict[str, str]) -> None:
    data = tomllib.loads(block.code)
    pyproject = "tool" in data or "project" in data
    settings = data.get("tool", {}).get("smd", {}) if pyproject else data
    eps = data.get("project", {}).get("entry-points", {})
    for group, entries in eps.items():
        for name, value in entries.items():
            assert re.fullmatch(r"[\w.]+:[\w.]+", value), f"{block.id}: {group}.{name} = {value!r}"
    assert settings or eps, f"{block.id}: neither smd settings nor entry points"
    if not settings:
        return
    (ws / ("pyproject.toml" if pyproject else "smd.toml")).write_text(block.code, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-c", _LOAD],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert out.returncode == 0, f"{block.id}: load_settings() refused it:\n{out.stderr}"
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    for path, value in _leaves(settings):
        node: Any = loaded
        for part in path:
            assert isinstance(node, dict), f"{block.id}: {'.'.join(path)} is not a setting"
            assert part in node, (
                f"{block.id}: {'.'.join(path)} is not a setting (the loaded settings have no "
                f"{part!r} there)"
            )
            node = node[part]
        if path == ("database_url",):
            assert node is not None, f"{block.id}: database_url was not loaded"
            continue
        assert _same(value, node), f"{block.id}: {'.'.join(path)} = {value!r} loaded as {node!r}"


# -- console


def _matches(pattern: str, line: str) -> bool:
    norm = " ".join(line.split())
    parts = [re.escape(" ".join(p.split())) for p in pattern.split("...")]
    return re.fullmatch(".*".join(parts), norm) is not None


def assert_output(expected: list[str], output: str, where: str) -> None:
    """Each expected line appears in ``output``, in order (gaps allowed)."""
    actual = output.splitlines()
    pos = 0
    for want in (e for e in expected if e.strip()):
        while pos < len(actual) and not _matches(want.strip(), actual[pos]):
            pos += 1
        assert pos < len(actual), (
            f"{where}: expected line not found (in order): {want!r}\n--- output ---\n{output}"
        )
        pos += 1


def console_commands(code: str) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` for each ``$ `` line of a session."""
    session: list[tuple[str, list[str]]] = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            session.append((command, []))
        else:
            assert session, f"output before the first command: {line!r}"
            session[-1][1].append(line)
        i += 1
    return session


_CONSOLE_PROGRAMS = {"smd", "python", "export", "echo", "cat"}


def expand(text: str, env: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from the sample's environment (unknown ones stay)."""
    return re.sub(
        r"\$(?:(\w+)|\{(\w+)\})",
        lambda m: env.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def _exited(unchecked: tuple[str, int, str]) -> str:
    command, code, output = unchecked
    return f"'{command}' exited {code}:\n{output}"


def check_console(block: Block, ws: Path, env: dict[str, str]) -> None:
    env = {**env, "SMD_HISTORY_PATH": str(ws / ".smd" / "history.sqlite3")}
    env.pop("SMD_HISTORY_ENABLED")
    session = console_commands(block.code)
    assert session, f"{block.id}: a console block needs '$ ' commands"
    unchecked: tuple[str, int, str] | None = None
    for command, expected in session:
        where = f"{block.id}: $ {command}"
        words = shlex.split(command)
        while len(words) > 1 and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            words.pop(0)  # VAR=value before the command: bash sets it for that command
        assert words[0] in _CONSOLE_PROGRAMS, f"{where}: not a command the docs may run"
        if words[0] == "echo" and words[1:] == ["$?"]:
            assert unchecked is not None, f"{where}: no command before it"
            assert [e.strip() for e in expected] == [str(unchecked[1])], (
                f"{where}: '{unchecked[0]}' exited {unchecked[1]}"
            )
            unchecked = None
            continue
        if unchecked is not None:
            assert unchecked[1] == 0, f"{block.id}: {_exited(unchecked)}"
        if words[0] == "export":
            for assignment in words[1:]:
                key, _, value = assignment.partition("=")
                env[key] = expand(value, env)
            unchecked = None
            continue
        if words[0] == "python":
            assert words[1:3] == ["-m", "smd"], f"{where}: only 'python -m smd' is run"
        out = run(["bash", "-o", "pipefail", "-c", command], ws, env)
        assert_output(expected, out.stdout, where)
        unchecked = (command, out.returncode, out.stdout)
    if unchecked is not None:
        assert unchecked[1] == 0, f"{block.id}: {_exited(unchecked)}"


# -- sh


_VALIDATE_SMD = """
import shutil, sys
from smd._cli import _parser
from smd._settings import Environment
argv = sys.argv[1:]
cmd = []
if "--" in argv:
    i = argv.index("--")
    argv, cmd = argv[:i], argv[i + 1:]
try:
    args = _parser().parse_args(argv)
except SystemExit as exc:  # --help, --version
    sys.exit(exc.code)
if cmd and args.command != "run":
    sys.exit("'-- CMD' is only accepted by 'smd run'")
if getattr(args, "env", None):
    Environment.parse(args.env)
if args.command in ("plan", "run"):
    from smd._target import load_target
    load_target(args.target)
if args.command == "check":
    from smd.plugins import check_spec
    spec = check_spec(args.check)
    if "$" not in args.check_target:
        spec.factory(args.check_target)
if cmd and shutil.which(cmd[0]) is None:
    sys.exit(f"CMD {cmd[0]!r} is not on PATH")
if cmd and cmd[0].endswith("uvicorn"):
    target = next(a for a in cmd[1:] if not a.startswith("-") and ":" in a)
    import importlib
    module, _, attr = target.partition(":")
    getattr(importlib.import_module(module), attr)
"""

_VALIDATE_ASGI = """
import importlib, sys
module, _, attr = sys.argv[1].partition(":")
getattr(importlib.import_module(module), attr)
"""

# Programs a sh sample may name without smd validating more than their files.
_KNOWN_TOOLS = {
    "cd",
    "curl",
    "docker",
    "podman",
    "kubectl",
    "systemctl",
    "journalctl",
    "mkdir",
    "echo",
    "cat",
    "mkdocs",
    "pytest",
    "export",
    "git",
}


def simple_commands(code: str) -> Iterator[list[str]]:
    """The simple commands of a shell sample (split on && || ; | and parentheses)."""
    text = re.sub(r"\\\n", " ", code)
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.commenters = "#"
        lexer.whitespace_split = True
        words: list[str] = []
        for token in lexer:
            if token and set(token) <= set("&|;()"):
                if words:
                    yield words
                words = []
            else:
                words.append(token)
        if words:
            yield words


def _extras() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(data["project"]["optional-dependencies"])


def _check_pip(words: list[str], where: str) -> None:
    for word in words:
        m = re.fullmatch(r"(smd-startup|\.)\[([\w,-]+)\](.*)", word)
        if m:
            unknown = set(m.group(2).split(",")) - _extras()
            assert not unknown, f"{where}: no extra {sorted(unknown)} in pyproject.toml"
        elif word.startswith("smd"):
            assert re.fullmatch(r"smd-startup([<>=!~].*)?", word), f"{where}: {word!r}"


def check_sh(block: Block, ws: Path, env: dict[str, str]) -> None:
    env = dict(env)
    for words in simple_commands(block.code):
        where = f"{block.id}: {' '.join(words)}"
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = expand(value, env)
        if not words:
            continue
        program = Path(words[0]).name
        args = [expand(w, env) for w in words[1:]]
        if program in ("python", "python3") and args[:2] == ["-m", "smd"]:
            program, args = "smd", args[2:]
        if program == "smd":
            out = run([sys.executable, "-c", _VALIDATE_SMD, *args], ws, env)
            assert out.returncode == 0, f"{where}: invalid smd command line:\n{out.stdout}"
        elif program in ("python", "python3"):
            scripts = [a for a in args if a.endswith(".py")]
            modules = args[1:2] if args[:1] == ["-m"] else []
            assert scripts or modules, f"{where}: run a script or a module"
            for script in scripts:
                assert (ROOT / script).is_file(), f"{where}: no file {script}"
        elif program == "pip":
            _check_pip(args, where)
        elif program == "uvicorn":
            target = next(a for a in args if not a.startswith("-") and ":" in a)
            out = run([sys.executable, "-c", _VALIDATE_ASGI, target], ws, env)
            assert out.returncode == 0, f"{where}: cannot import {target}:\n{out.stdout}"
        elif program == "bash":
            assert (ROOT / args[0]).is_file(), f"{where}: no file {args[0]}"
        elif program == "export":
            for assignment in args:
                key, _, value = assignment.partition("=")
                env[key] = expand(value, env)
        else:
            assert program in _KNOWN_TOOLS, f"{where}: unknown program {program!r}"
        for option in ("-f", "--file"):
            if option in args and program in ("docker", "podman", "kubectl"):
                named = args[args.index(option) + 1]
                assert (ROOT / named).is_file(), f"{where}: no file {named}"


# -- the rest


def _yaml() -> ModuleType:
    return importlib.import_module("yaml")


def check_included(block: Block) -> None:
    lines = [line for line in block.source.splitlines() if line.strip()]
    assert lines, f"{block.id}: empty block"
    assert all(_SNIPPET.match(line) for line in lines), (
        f'{block.id}: a {block.lang} block must include a repository file (--8<-- "path"), '
        "so that the file it shows is the one the tests use"
    )
    if block.lang == "yaml":
        assert list(_yaml().safe_load_all(block.code)), f"{block.id}: empty YAML"


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_sample(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    unknown = {o.partition("=")[0] for o in block.options} - _KNOWN_OPTIONS
    assert not unknown, f"{block.id}: unknown docs-test option(s) {sorted(unknown)}"
    ws = workspace(block, tmp_path)
    env = base_env(tmp_path)
    if block.lang in ("python", "console") and block.needs_postgres(page_blocks(block)):
        env["SMD_DATABASE_URL"] = str(request.getfixturevalue("pg_dsn"))
    if block.lang == "python":
        check_python(block, ws, env)
    elif block.lang == "toml":
        check_toml(block, ws, env)
    elif block.lang == "console":
        check_console(block, ws, env)
    elif block.lang == "sh":
        check_sh(block, ws, env)
    elif block.lang == "json":
        json.loads(block.code)
    elif block.lang in ("yaml", "dockerfile", "ini"):
        check_included(block)
    else:
        pytest.fail(f"{block.id}: no test for a {block.lang or 'plain'!r} block; use a language")


def test_the_docs_have_samples_of_every_kind() -> None:
    langs = {b.lang for b in ALL_BLOCKS}
    assert {"python", "toml", "console", "sh"} <= langs
    assert len([b for b in ALL_BLOCKS if b.lang == "python"]) >= 10


# ------------------------------------------------------------------ the build


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smd_docs_hooks", DOCS / "_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with ``mkdocs build --strict``; any warning fails."""
    out = tmp_path_factory.mktemp("site")
    home = tmp_path_factory.mktemp("home")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)],
        cwd=ROOT,
        env={
            "PATH": f"{BIN}:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "NO_MKDOCS_2_WARNING": "1",  # Material's end-of-life banner
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, log
    return out


def test_mkdocs_build_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    for page in pages():
        rel = page.relative_to(DOCS).with_suffix("")
        html = (
            site / rel / "index.html" if rel.name != "index" else site / rel.parent / "index.html"
        )
        assert html.is_file(), f"{page} was not built"
        text = html.read_text(encoding="utf-8")
        assert "<!-- smd:" not in text, f"{page}: a generated block was left unexpanded"
        assert "--8&lt;--" not in text, f"{page}: an include failed"


def test_the_site_needs_no_network(site: Path) -> None:
    """No page or stylesheet loads anything from elsewhere (fonts, CDN scripts).

    Material's script bundle names CDNs for optional features (diagrams);
    those load only when a page uses them, which none may.
    """
    remote_tag = re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=\"(https?:)?//[^\"]*")
    remote_css = re.compile(r"(@import|url\()\s*[\"']?(https?:)?//")
    for path in site.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".html":
            for m in remote_tag.finditer(text):
                tag = m.group(0)
                # Plain links to other sites are fine; loading from them is not.
                assert m.group(1) == "link", f"{path.relative_to(site)} loads {tag!r}"
                assert 'rel="stylesheet"' not in tag, f"{path.relative_to(site)} loads {tag!r}"
                assert "fonts." not in tag, f"{path.relative_to(site)} loads {tag!r}"
            assert 'class="mermaid"' not in text, f"{path.relative_to(site)} needs a CDN script"
            assert "fonts.googleapis" not in text, path
        elif path.suffix == ".css":
            found = remote_css.search(text)
            assert found is None, f"{path.relative_to(site)} loads {found.group(0)!r}"


def _setting_variables() -> list[str]:
    from pydantic import BaseModel

    from smd.settings import settings_class

    names: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            variable = f"{prefix}{name.upper()}"
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                walk(info.annotation, variable + "__")
            else:
                names.append(variable)

    walk(settings_class(), "SMD_")
    return names


def test_settings_reference_lists_every_setting(site: Path) -> None:
    html = (site / "reference" / "settings" / "index.html").read_text(encoding="utf-8")
    variables = _setting_variables()
    assert "SMD_DATABASE_URL" in variables
    assert "SMD_BYPASS__MIN_SUCCESS_RATE" in variables
    for variable in variables:
        assert f"<code>{variable}" in html, f"{variable} is missing from the settings reference"


def test_every_setting_has_a_description() -> None:
    hooks = _hooks()
    table: str = hooks.render_settings()
    rows = [r for r in table.splitlines() if r.startswith("| `SMD_")]
    assert len(rows) == len(_setting_variables())
    for row in rows:
        assert row.rstrip(" |").split(" | ")[-1].strip(), f"no description: {row}"


def test_generated_tables_match_their_sources(site: Path) -> None:

    html = (site / "reference" / "faults" / "index.html").read_text(encoding="utf-8")
    for f in FAULTS:
        assert f.title in html, f"fault {f.key} missing from the fault matrix page"
    bypass = (site / "concepts" / "bypass" / "index.html").read_text(encoding="utf-8")
    assert "conditional → fail (kind not allowed)" in bypass
    failures = (site / "concepts" / "failures" / "index.html").read_text(encoding="utf-8")
    for code in set(EXIT_CODES.values()):
        assert f"<td>{code}</td>" in failures, f"exit code {code} missing"


def test_every_test_named_in_guarantees_exists() -> None:
    text = (DOCS / "guarantees.md").read_text(encoding="utf-8")
    refs = re.findall(r"`(tests/[\w/]+\.py)(?:::([\w*\[\]-]+))?`", text)
    assert len(refs) >= 20
    for path, name in refs:
        source = (ROOT / path).read_text(encoding="utf-8")
        if name:
            pattern = re.escape(name.split("[")[0]).replace(r"\*", r"\w*")
            assert re.search(rf"def {pattern}\(", source), f"{path}::{name}"


def test_the_own_check_example_is_the_tested_file() -> None:
    """The checks page shows tests/examples/own_check.py itself, which the suite runs
    end to end through ``smd check file`` and as a phase (tests/test_checks_more.py)."""
    include = '--8<-- "tests/examples/own_check.py"'
    shown = [
        b
        for b in parse_page(DOCS / "checks" / "index.md")
        if b.lang == "python" and b.source.strip() == include
    ]
    assert len(shown) == 1, f"docs/checks/index.md must include the example once: {include}"
    code = (ROOT / "tests" / "examples" / "own_check.py").read_text(encoding="utf-8")
    assert shown[0].code == code
    # "in under 25 lines" (issue 15): the code, its docstring, blank lines and comments aside.
    body = code.split('"""', 2)[2]
    lines = [ln for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(lines) < 25 + 6  # the 6 import lines are not the check
