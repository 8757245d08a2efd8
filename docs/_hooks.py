"""MkDocs hooks: the tables the docs show are generated from the code at build time.

A page asks for a table with a marker on a line of its own, ``<!-- smd:NAME -->``:

- ``settings``: every setting of ``smd.settings.settings_class()`` (the engine's and
  the ones plugins contribute), with its ``SMD_*`` variable, TOML key, type,
  default and description;
- ``bypass-matrix`` / ``bypass-conditions``: the built-in matrix from
  :class:`smd.bypass.BypassMatrix` and the conditional mode's conditions;
- ``fault-matrix``: the fault matrix the tests assert (``tests/faults.py``);
- ``postgres-faults``: per fault, the kind, whether it is retried and ``smd check``'s
  exit code (``tests/faults.py`` and ``smd._exit``);
- ``exit-codes``: the one exit-code table (``smd._exit.EXIT_CODES``);
- ``profiles``: the infrastructure profiles plugins contribute;
- ``events``: the run events of ``smd.events``;
- ``checks``: the checks ``smd check NAME`` knows;
- ``cli-help:COMMAND``: ``smd COMMAND --help`` (``cli-help:`` for ``smd --help``).

Anything the generators cannot do (an unknown marker, a setting without a
description) is logged as a warning, so ``mkdocs build --strict`` fails.
"""

from __future__ import annotations

import enum
import inspect
import logging
import os
import re
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("mkdocs.plugins.smd_docs")

_MARKER = re.compile(r"^<!-- smd:([a-z-]+)(?::([a-z]*))? -->$", re.M)

# Descriptions for settings whose model does not carry one yet (keyed by the
# dotted field path; ``{env}`` stands for the environment of a per-environment
# field). A ``Field(description=...)`` in the model always wins; a field with
# neither is a build warning.
FALLBACK_DESCRIPTIONS: dict[str, str] = {
    "database_url": (
        "The PostgreSQL DSN `DatabasePhase` uses when it is given none. A secret: never "
        "printed. Checked at load: a URL with a scheme, ports from 1 to 65535."
    ),
    "environment": (
        "Where the service runs (case-insensitive): picks the bypass mode and the timeout bounds."
    ),
    "startup_budget": (
        "Seconds for the whole startup; each phase runs under min(its timeout, what is left)."
    ),
    "phase_timeout": "Timeout, in seconds, of a phase that sets none (source `default`).",
    "log_format": (
        "How the CLI renders logs: `auto` is console on a terminal, JSON otherwise. The ASGI "
        "lifespan uses it only when structlog is not configured yet."
    ),
    "log_level": "The lowest level smd logs at.",
    "stop_budget": (
        "Seconds for all teardowns together: after the gate, at shutdown, or after a failure."
    ),
    "progress_interval": (
        "Seconds between `smd.phase.waiting` events (and log lines) while a phase runs."
    ),
    "history_enabled": (
        "Whether learned history persists. `false`: an in-memory store, nothing read or written."
    ),
    "history_path": (
        "The SQLite history file. Unset: `$XDG_STATE_HOME/smd/history.sqlite3` "
        "(`~/.local/state/smd/history.sqlite3`)."
    ),
    "history_url": (
        "A shared history store for a fleet, by URL (`postgresql://...`: the PostgreSQL store). "
        "Unset: the embedded SQLite store. A failing shared store falls back to the embedded one. "
        "A secret: never printed."
    ),
    "bypass.mode": (
        "Force one mode (`strict`, `permissive`, `conditional`) in every environment; "
        "unset, each environment uses its default mode."
    ),
    "bypass.{env}": (
        "Override single cells of the {env} row: `{{kind = action}}` in TOML, or one "
        "variable per cell, `SMD_BYPASS__{ENV}__<KIND>=fail|continue|conditional`."
    ),
    "bypass.allowed_kinds": "The failure kinds a `conditional` cell may bypass.",
    "bypass.min_success_rate": (
        "The lower bound of the target's decayed success rate a `conditional` cell requires."
    ),
    "bypass.max_consecutive_degraded": (
        "A `conditional` cell stops bypassing once this many startups of the target in a row "
        "were degraded."
    ),
    "bypass.success_half_life_hours": (
        "Age, in hours, at which a past start counts half in the success rate."
    ),
    "bypass.force_continue": (
        "The manual override: every failure continues, logged as `smd.bypass.forced`. "
        "Refused in production unless `allow_force_in_production` is also set."
    ),
    "bypass.allow_force_in_production": "Let `force_continue` work in production too.",
    "timeouts.{env}.default": (
        "The no-data deadline, in seconds, of an adaptive timeout in {env}: used with no "
        "history, the start of the warm-up, and a cap that fast healthy history never exceeds."
    ),
    "timeouts.{env}.floor": "The shortest deadline an adaptive timeout may learn in {env}.",
    "timeouts.{env}.ceiling": "The longest deadline an adaptive timeout may learn in {env}.",
    "timeouts.profile": (
        "The infrastructure profile whose cold-start allowances are added to learned deadlines "
        "(see [adaptive timeouts](../concepts/timeouts.md#infrastructure-profiles))."
    ),
    "fleet_url": (
        "The PostgreSQL that coordinates once-per-fleet phases (default: `SMD_DATABASE_URL`). "
        "A direct connection or a session-mode pool: session advisory locks do not work "
        "through a transaction-pooling proxy. A secret: never printed."
    ),
    "history_schema": (
        "The PostgreSQL schema of the shared history and of the completion records."
    ),
    "history_read_budget": (
        "Seconds one read of the PostgreSQL history store (before the phases) may take, "
        "connecting included, before the embedded store is used."
    ),
    "history_write_budget": (
        "Seconds one write of the PostgreSQL history store (after the phases) may take, "
        "connecting included, before the embedded store is used."
    ),
    "otel.enabled": (
        "Whether smd adds OpenTelemetry spans by itself (through the global tracer provider) "
        "when the app has imported `opentelemetry` by the time a run starts. `false`: only "
        "the span observers you pass."
    ),
    "timeouts.min_samples": (
        "Samples a target needs before the warm-up ends and the full estimate is used."
    ),
}

_ENVIRONMENTS = ("development", "staging", "production", "test")


# ------------------------------------------------------------------ settings


def _fallback(path: str) -> str | None:
    if path in FALLBACK_DESCRIPTIONS:
        return FALLBACK_DESCRIPTIONS[path]
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part in _ENVIRONMENTS:
            key = ".".join([*parts[:i], "{env}", *parts[i + 1 :]])
            if key in FALLBACK_DESCRIPTIONS:
                return FALLBACK_DESCRIPTIONS[key].format(env=part, ENV=part.upper())
    return None


def _inline(text: str) -> str:
    """Text fit for one table cell (reST ````literals```` become Markdown ones)."""
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def _choices(values: list[str]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(_type_text(a) for a in inner)
        return f"{text} (optional)" if len(inner) < len(args) else text
    if origin is typing.Literal:
        return _choices([str(a) for a in args])
    if origin is dict:
        key, value = args
        return f"table: {_type_text(key)} → {_type_text(value)}"
    if origin in (frozenset, set, list, tuple):
        return f"list of {_type_text(args[0])}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _choices([str(m.value) for m in annotation])
    if annotation is SecretStr:
        return "secret string"
    if annotation is bool:
        return "`true` / `false`"
    if annotation in (int, float):
        return "integer" if annotation is int else "number"
    if annotation is str:
        return "string"
    if annotation is Path:
        return "path"
    # A type alias such as CellAction resolves to its Literal above; anything
    # else is named as it is.
    return f"`{getattr(annotation, '__name__', annotation)}`"


def _constraints(info: FieldInfo) -> str:
    out: list[str] = []
    for item in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {value:g}")
    return f" ({', '.join(out)})" if out else ""


def _default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float | int):
        return f"`{value:g}`"
    if isinstance(value, frozenset | set | list | tuple):
        items = sorted(str(v.value if isinstance(v, enum.Enum) else v) for v in value)
        return ", ".join(f"`{i}`" for i in items) or "none"
    if isinstance(value, dict):
        return "none" if not value else f"`{value}`"
    return f"`{value}`"


def _owner(cls: type[BaseModel], name: str) -> type[BaseModel]:
    """The class in ``cls``'s hierarchy that declares field ``name``."""
    for klass in reversed(cls.__mro__):
        if issubclass(klass, BaseModel) and name in inspect.get_annotations(klass):
            return klass
    return cls


def _profile_names() -> str:
    from smd.plugins import profiles

    return _choices(list(profiles()))


# What a setting accepts when its type says less than its validator does.
_ACCEPTS: dict[str, Callable[[], str]] = {"timeouts.profile": _profile_names}


def _settings_rows(
    model: type[BaseModel], instance: BaseModel, prefix: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], FieldInfo, Any, type[BaseModel] | None]]:
    """(path, field, default, nested model) for every field, depth first."""
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        default = getattr(instance, name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield path, info, default, annotation
            yield from _settings_rows(annotation, default, path)
        else:
            yield path, info, default, None


def _variable(path: tuple[str, ...], info: FieldInfo) -> str:
    name = "SMD_" + "__".join(p.upper() for p in path)
    if typing.get_origin(info.annotation) is dict:
        return f"{name}__<KIND>"
    return name


def render_settings() -> str:
    """The settings reference: one table per section (top level, then each nested model)."""
    from smd.settings import Settings, settings_class

    cls = settings_class()
    instance = cls.model_construct()
    sections: dict[tuple[str, ...], list[str]] = {(): []}
    intros: dict[tuple[str, ...], str] = {}
    fields = list(_settings_rows(cls, instance, ()))
    # The engine's own settings first, then those plugins contribute.
    fields.sort(key=lambda r: not issubclass(Settings, _owner(cls, r[0][0])))
    for path, info, default, nested in fields:
        parent = path[:-1]
        if nested is not None:
            sections[path] = []
            intros[path] = (nested.__doc__ or "").strip().split("\n\n", 1)[0]
            continue
        description = info.description or _fallback(".".join(path))
        if not description:
            log.warning(
                "docs: setting %s (SMD_%s) has no description: add Field(description=...) "
                "to its model, or an entry to FALLBACK_DESCRIPTIONS in docs/_hooks.py",
                ".".join(path),
                "__".join(p.upper() for p in path),
            )
            description = ""
        owner = _owner(cls, path[0]) if not parent else None
        if owner is not None and not issubclass(Settings, owner):
            description += f" Contributed by a plugin (`{owner.__module__}.{owner.__name__}`)."
        accepts = _ACCEPTS[".".join(path)]() if ".".join(path) in _ACCEPTS else None
        row = (
            f"| `{_variable(path, info)}` | `{'.'.join(path)}` | "
            f"{accepts or _type_text(info.annotation)}{_constraints(info)} | "
            f"{_default_text(default)} | "
            f"{_inline(description)} |"
        )
        sections.setdefault(parent, []).append(row)
    out: list[str] = []
    header = "| variable | TOML key | accepts | default | meaning |\n|---|---|---|---|---|"
    for section, rows in sections.items():
        if not rows:
            continue
        title = "General" if not section else "`" + ".".join(section) + "`"
        out.append(f"### {title}\n")
        if intros.get(section):
            out.append(_inline(intros[section]) + "\n")
        out.append(header)
        out.extend(rows)
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------ bypass matrix


def render_bypass_matrix() -> str:
    """The built-in matrix with the default settings: environment x failure kind."""
    from smd import FailureKind
    from smd.bypass import BypassMatrix
    from smd.settings import BypassSettings

    bypass = BypassSettings()
    matrix = BypassMatrix()
    kinds = list(FailureKind)
    lines = [
        "| environment | mode | " + " | ".join(f"`{k.value}`" for k in kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    for env, cells in matrix.table(bypass).items():
        row: list[str] = []
        for kind in kinds:
            action = cells[kind]
            if action == "conditional" and kind not in bypass.allowed_kinds:
                row.append("conditional → fail (kind not allowed)")
            else:
                row.append(action)
        lines.append(
            f"| {env.value} | {matrix.mode(env, bypass).value} | " + " | ".join(row) + " |"
        )
    return "\n".join(lines) + "\n"


def render_bypass_conditions() -> str:
    """The conditions of a ``conditional`` cell, with the default thresholds."""
    from statistics import NormalDist

    from smd.bypass import DEFAULT_CONFIDENCE
    from smd.settings import BypassSettings

    b = BypassSettings()
    z = NormalDist().inv_cdf(DEFAULT_CONFIDENCE)
    allowed = ", ".join(f"`{k}`" for k in sorted(k.value for k in b.allowed_kinds)) or "none"
    return "\n".join(
        [
            "| condition | holds when | default |",
            "|---|---|---|",
            f"| `kind_allowed` | the failure kind is in `SMD_BYPASS__ALLOWED_KINDS` | {allowed} |",
            "| `not_essential` | the phase is not declared `essential=True` | — |",
            "| `success_rate` | the one-sided Wilson lower bound "
            f"({DEFAULT_CONFIDENCE:.0%}, z = {z:.4f}) of the target's decayed success rate "
            "is at least `SMD_BYPASS__MIN_SUCCESS_RATE`; no history: does not hold | "
            f"{b.min_success_rate:g}, half-life `SMD_BYPASS__SUCCESS_HALF_LIFE_HOURS` = "
            f"{b.success_half_life_hours:g} h |",
            "| `consecutive_degraded` | degraded startups of the target since its last success "
            "are fewer than `SMD_BYPASS__MAX_CONSECUTIVE_DEGRADED` | "
            f"{b.max_consecutive_degraded} |",
            "",
        ]
    )


# ------------------------------------------------------------------ faults and exit codes


def _faults_module() -> Any:
    """``tests/faults.py``: the fault matrix the tests assert (plain data, no smd import)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import faults

    return faults


def render_fault_matrix() -> str:
    text: str = _faults_module().render_fault_matrix_markdown()
    return text


def render_postgres_faults() -> str:
    """Per fault: the kind, retried or not, and the exit code of ``smd check postgres``."""
    from smd import FailureKind
    from smd._exit import for_kind

    faults = _faults_module()
    lines = [
        "| fault | made real (in the tests) by | kind | retried | `smd check` exit |",
        "|---|---|---|---|---|",
    ]
    for f in faults.FAULTS:
        code = 0 if f.kind is None else for_kind(FailureKind(f.kind))
        lines.append(
            f"| {f.title} | {_inline(f.how)} | {f.kind_text} | "
            f"{'yes' if f.retried else 'no'} | {code} |"
        )
    return "\n".join(lines) + "\n"


# What each exit code means; the codes themselves come from smd._exit.
_EXIT_MEANINGS: dict[str, str] = {
    "ready": "ready",
    "degraded": "degraded (or CMD was exec'd)",
    "usage": "usage: bad arguments, TARGET not importable, CMD not found",
    "unknown": "a failure of unknown kind",
    "application": "a phase's own code failed (kind `application`)",
    "output": "a file smd was asked to write could not be written (a full disk): nothing half-written is left",
    "infrastructure": "an `infrastructure`",
    "timeout": "`timeout` failure not bypassed",
    "configuration": "a `configuration` failure",
    "invalid_settings": "invalid settings (`--env` and `smd check`'s TARGET included)",
    "invalid_plan": "an invalid plan",
    "sighup": "interrupted by SIGHUP",
    "sigint": "interrupted by SIGINT",
    "sigterm": "interrupted by SIGTERM",
}
# What the code tells the caller to do (appended to the code's meanings).
_EXIT_HINTS: dict[int, str] = {
    75: ": try again later",
    78: ": fix the configuration",
    129: ", after teardown",
    130: ", after teardown",
    143: ", after teardown",
}
_EXIT_JOINERS: dict[int, str] = {0: " or ", 75: " or ", 78: ", "}


def render_exit_codes() -> str:
    from smd._exit import EXIT_CODES

    by_code: dict[int, list[str]] = {}
    for name, code in EXIT_CODES.items():
        by_code.setdefault(code, []).append(name)
    lines = ["| exit code | meaning |", "|---|---|"]
    for code in sorted(by_code):
        meanings: list[str] = []
        for name in by_code[code]:
            if name not in _EXIT_MEANINGS:
                log.warning("docs: exit code %s (%s) has no meaning in docs/_hooks.py", code, name)
            meanings.append(_EXIT_MEANINGS.get(name, name))
        joined = _EXIT_JOINERS.get(code, "; ").join(meanings) + _EXIT_HINTS.get(code, "")
        lines.append(f"| {code} | {joined} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ plugins, events, CLI


def render_profiles() -> str:
    from smd.plugins import profiles

    lines = [
        "| `SMD_TIMEOUTS__PROFILE` | + overall deadline | + per attempt | for |",
        "|---|---|---|---|",
    ]
    for p in profiles().values():
        lines.append(
            f"| `{p.name}` | {p.cold_start:g} s | {p.attempt:g} s | {_inline(p.description)} |"
        )
    return "\n".join(lines) + "\n"


def render_events() -> str:
    import smd.events

    lines = ["| event | when | fields |", "|---|---|---|"]
    for obj in typing.get_args(smd.events.Event):  # in the order a run emits them
        name = obj.__name__
        fields = obj.__dataclass_fields__
        doc = (obj.__doc__ or "").strip().split("\n\n", 1)[0]
        lines.append(f"| `{name}` | {_inline(doc)} | {', '.join(f'`{f}`' for f in fields)} |")
    return "\n".join(lines) + "\n"


def render_checks() -> str:
    from smd.plugins import checks

    lines = ["| `smd check NAME` | checks | TARGET |", "|---|---|---|"]
    for name, spec in sorted(checks().items()):
        lines.append(f"| `{name}` | {_inline(spec.help)} | {_inline(spec.target_help)} |")
    return "\n".join(lines) + "\n"


def render_cli_help(command: str) -> str:
    from smd._cli import _parser

    parser = _parser()
    if command:
        sub = parser._subparsers
        assert sub is not None
        action = next(a for a in sub._group_actions if getattr(a, "choices", None))
        choices = typing.cast("dict[str, Any]", action.choices)
        if command not in choices:
            log.warning("docs: no command 'smd %s' for <!-- smd:cli-help:%s -->", command, command)
            return ""
        parser = choices[command]
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "96"  # argparse wraps to the terminal width
    try:
        text = parser.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return f"```text\n{text.rstrip()}\n```\n"


_RENDERERS: dict[str, Callable[[], str]] = {
    "settings": render_settings,
    "bypass-matrix": render_bypass_matrix,
    "bypass-conditions": render_bypass_conditions,
    "fault-matrix": render_fault_matrix,
    "postgres-faults": render_postgres_faults,
    "exit-codes": render_exit_codes,
    "profiles": render_profiles,
    "events": render_events,
    "checks": render_checks,
}


def render(name: str, argument: str | None) -> str:
    """The markdown a marker stands for (a warning, and nothing, for an unknown one)."""
    if name == "cli-help":
        return render_cli_help(argument or "")
    renderer = _RENDERERS.get(name)
    if renderer is None or argument is not None:
        log.warning("docs: unknown generated block <!-- smd:%s -->", name)
        return ""
    # A plugin that cannot be loaded (a `warnings` warning) would leave its
    # settings and checks out of the tables: that is a build warning too.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = renderer()
    for w in caught:
        log.warning("docs: while generating <!-- smd:%s -->: %s", name, w.message)
    return text


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: replace every ``<!-- smd:NAME -->`` line with its generated table."""
    return _MARKER.sub(lambda m: render(m.group(1), m.group(2)), markdown)
