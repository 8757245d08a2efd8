"""The one registration point for everything that plugs into smd.

A :class:`Plugin` contributes checks (``smd check NAME TARGET``), the
settings it owns (fields merged into :class:`smd.Settings`, read from the
same sources), infrastructure profiles for learned timeouts, and history
stores by URL scheme. The engine never names a plugin: it reads the entry
point group ``smd.plugins`` (each entry point names a :class:`Plugin`) and
whatever :func:`register` was given in-process::

    # pyproject.toml of a package that ships a check
    [project.entry-points."smd.plugins"]
    mycheck = "mypackage.smd_plugin:plugin"

    # mypackage/smd_plugin.py
    plugin = Plugin("mycheck", checks=(CheckSpec("mycheck", MyCheck.from_target, "..."),))

smd's own PostgreSQL support is contributed this way (``smd.checks.postgres``).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from smd._profiles import NO_PROFILE, InfrastructureProfile

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from pydantic import BaseModel

    from smd.retry import Check

__all__ = [
    "ENTRY_POINT_GROUP",
    "CheckSpec",
    "Coordinator",
    "OnceOutcome",
    "Plugin",
    "PluginWarning",
    "check_spec",
    "checks",
    "coordinator",
    "plugins",
    "profile",
    "profiles",
    "register",
    "settings_models",
    "store_factory",
    "store_scheme",
    "stores",
]

ENTRY_POINT_GROUP = "smd.plugins"

#: Opens a history store for a URL (``postgresql://...``); the arguments are
#: the URL and the loaded settings. The store may raise
#: :class:`smd.exceptions.StoreUnavailable`: the engine then falls back to the
#: embedded store with one warning.
StoreFactory = Callable[[str, Any], Any]


@dataclass(frozen=True, slots=True)
class OnceOutcome:
    """How a once-per-fleet phase went in this replica.

    ``ran``: this replica ran the work (``value`` is what it returned);
    otherwise another replica had completed it (``done_by``, ``done_at``
    wall-clock seconds) and the work was skipped.
    """

    ran: bool
    value: Any = None
    done_by: str | None = None
    done_at: float | None = None


@runtime_checkable
class Coordinator(Protocol):
    """Runs a phase in one replica of a fleet at a time (``Phase(once=True)``)."""

    async def run_once(
        self,
        key: str,
        work: Callable[[], Awaitable[Any]],
        *,
        deadline_seconds: float,
        lock_key: str | None = None,
    ) -> OnceOutcome:
        """Run ``work`` unless ``key`` is recorded as done; wait (without holding
        resources) while another replica runs it; record completion on success
        only. ``lock_key`` (default ``key``) names what excludes the work from
        running concurrently, when works with different records must never
        overlap. Raise :class:`smd.PhaseError` with a classified failure when
        the coordination itself fails (e.g. the lock cannot be held)."""
        ...

    async def forget(self, key: str, *, deadline_seconds: float) -> bool:
        """Delete ``key``'s completion record (``True`` if there was one), so that
        the next :meth:`run_once` runs the work again: for work whose done-ness
        the caller can check, found undone though recorded (a migrated
        database since downgraded or restored). Raise :class:`smd.PhaseError`
        like :meth:`run_once`."""
        ...


#: Gives the fleet coordinator the settings call for, or ``None`` (this
#: plugin has none configured).
CoordinatorFactory = Callable[[Any], "Coordinator | None"]


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """A check the ``smd check NAME TARGET`` command can run.

    ``factory(target)`` builds the :class:`~smd.retry.Check` from the TARGET
    argument (a DSN, ``host:port``, a URL) or raises ``ValueError`` naming
    what is wrong without echoing a secret. ``target_help`` says what TARGET
    looks like.
    """

    name: str
    factory: Callable[[str], Check]
    help: str
    target_help: str = "what to check"


@dataclass(frozen=True, slots=True)
class Plugin:
    """What one plugin contributes (every part optional)."""

    name: str
    checks: tuple[CheckSpec, ...] = ()
    settings: tuple[type[BaseModel], ...] = ()
    profiles: tuple[InfrastructureProfile, ...] = ()
    stores: Mapping[str, StoreFactory] = field(default_factory=lambda: MappingProxyType({}))
    coordinator: CoordinatorFactory | None = None


_lock = threading.Lock()
_registered: list[Plugin] = []
_loaded: tuple[Plugin, ...] | None = None


def register(plugin: Plugin) -> None:
    """Add a plugin in-process (tests, apps that do not ship an entry point)."""
    global _loaded
    if not isinstance(plugin, Plugin):
        raise TypeError(f"register() takes a smd.plugins.Plugin, got {type(plugin).__name__}")
    with _lock:
        if plugin not in _registered:
            _registered.append(plugin)
        _loaded = None


class PluginWarning(UserWarning):
    """An installed plugin could not be loaded (it is skipped)."""


def _entry_points() -> list[EntryPoint]:
    """``importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)``, parsing fewer files.

    The same distributions (the first of each name on ``sys.path``, by the
    name ``entry_points()`` itself dedupes on), but only the
    ``entry_points.txt`` files that mention the group are parsed: every
    command loads the plugins, and parsing every installed package's entry
    points was about 1 % of what ``smd plan`` executes.
    """
    from importlib.metadata import distributions

    seen: set[str] = set()
    found: list[EntryPoint] = []
    for dist in distributions():
        name = getattr(dist, "_normalized_name", None) or dist.name
        if name in seen:
            continue
        seen.add(name)
        text = dist.read_text("entry_points.txt")
        if text and ENTRY_POINT_GROUP in text:
            found.extend(ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP)
    return found


def _from_entry_points() -> list[Plugin]:
    out: list[Plugin] = []
    for ep in sorted(_entry_points(), key=lambda e: e.name):
        try:
            value = ep.load()
        except Exception as exc:  # one broken plugin must not break every command
            warnings.warn(
                f"smd plugin {ep.name!r} ({ep.value}) could not be loaded and is skipped: "
                f"{type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=2,
            )
            continue
        if not isinstance(value, Plugin):
            warnings.warn(
                f"smd plugin {ep.name!r} ({ep.value}) is a {type(value).__name__}, "
                "not a smd.plugins.Plugin; skipped",
                PluginWarning,
                stacklevel=2,
            )
            continue
        out.append(value)
    return out


def plugins() -> tuple[Plugin, ...]:
    """Every plugin: installed entry points first (by name), then :func:`register`'s."""
    global _loaded
    with _lock:
        if _loaded is None:
            seen: list[Plugin] = []
            for p in [*_from_entry_points(), *_registered]:
                if p not in seen:
                    seen.append(p)
            _loaded = tuple(seen)
        return _loaded


def checks() -> dict[str, CheckSpec]:
    """Every registered check by name."""
    return {spec.name: spec for p in plugins() for spec in p.checks}


def check_spec(name: str) -> CheckSpec:
    """The check called ``name``; ``KeyError`` with the accepted names."""
    known = checks()
    try:
        return known[name]
    except KeyError:
        raise KeyError(
            f"unknown check {name!r}; accepted: {', '.join(sorted(known)) or 'none'}"
        ) from None


def profiles() -> dict[str, InfrastructureProfile]:
    """Every infrastructure profile by name, ``none`` first."""
    out = {NO_PROFILE.name: NO_PROFILE}
    for p in plugins():
        out.update((prof.name, prof) for prof in p.profiles)
    return out


def profile(name: str | InfrastructureProfile) -> InfrastructureProfile:
    """A profile by name (case-insensitive); ``ValueError`` lists the accepted names."""
    if isinstance(name, InfrastructureProfile):
        return name
    known = profiles()
    key = str(name).strip().lower()
    if key not in known:
        raise ValueError(f"unknown infrastructure profile {name!r}; accepted: {', '.join(known)}")
    return known[key]


def stores() -> dict[str, StoreFactory]:
    """Every shared-store factory by URL scheme."""
    out: dict[str, StoreFactory] = {}
    for p in plugins():
        for scheme, factory in p.stores.items():
            out.setdefault(scheme, factory)
    return out


def store_scheme(url: str) -> str:
    """The scheme that picks a URL's history store: before ``://``, lower-cased,
    without a ``+driver`` suffix (``postgresql+asyncpg://`` -> ``postgresql``);
    ``""`` for text that is not a URL."""
    scheme, sep, _ = url.strip().partition("://")
    return scheme.partition("+")[0].lower() if sep else ""


def store_factory(scheme: str) -> StoreFactory | None:
    """The history-store factory registered for a URL scheme, if any."""
    for p in plugins():
        if scheme in p.stores:
            return p.stores[scheme]
    return None


def coordinator(settings: Any) -> Coordinator | None:
    """The first fleet coordinator a plugin offers for these settings, if any."""
    for p in plugins():
        if p.coordinator is not None:
            found = p.coordinator(settings)
            if found is not None:
                return found
    return None


def settings_models() -> tuple[type[BaseModel], ...]:
    """The settings models plugins contribute (merged into :class:`smd.Settings`)."""
    out: list[type[BaseModel]] = []
    for p in plugins():
        out.extend(m for m in p.settings if m not in out)
    return tuple(out)
