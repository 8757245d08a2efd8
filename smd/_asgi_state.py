"""What a request reads: :func:`phase_value`, the live value a phase published.

ASGI servers copy the lifespan state into each request when it arrives, so
``request.state.<phase>`` is only as fresh as that copy. :func:`phase_value`
reads the run itself (``run.values``), so a phase that recovered in the
background is seen at once, whatever the framework: it accepts a raw ASGI
scope or any request object carrying one (``request.scope``: Starlette,
FastAPI, Litestar, Quart, Django's ``ASGIRequest``).

The run is found under :data:`RUN_STATE_KEY` in the request's lifespan state
(``scope["state"]``), else on the app's ``state`` (``scope["app"].state``:
Starlette, FastAPI, Litestar).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TypeVar, overload

__all__ = ["RUN_STATE_KEY", "catch_up", "find_run", "live_state", "phase_value"]

#: Key of the :class:`~smd.StartupRun` in the lifespan state and on ``app.state``.
#: Dotted, like ``smd.health``: no phase name (an identifier) can shadow it,
#: whatever ``state_key`` the app chose for its own reading.
RUN_STATE_KEY = "smd.run"

T = TypeVar("T")


class _Missing:
    """The "no default given" marker (``None`` is a valid default)."""

    def __repr__(self) -> str:
        return "<no default>"


_MISSING: Any = _Missing()


def _scope_of(source: Any) -> Mapping[str, Any]:
    if isinstance(source, Mapping) and "type" in source:
        return source
    scope = getattr(source, "scope", None)
    if isinstance(scope, Mapping):
        return scope
    raise TypeError(
        f"phase_value needs an ASGI scope or a request with .scope "
        f"(Starlette, FastAPI, Litestar, Quart, Django), got {type(source).__name__}"
    )


def find_run(source: Any) -> Any:
    """The :class:`~smd.StartupRun` serving this request, or ``None``.

    ``source``: an ASGI scope, or a request with ``.scope``.
    """
    scope = _scope_of(source)
    state = scope.get("state")
    if isinstance(state, Mapping) and state.get(RUN_STATE_KEY) is not None:
        return state[RUN_STATE_KEY]
    app_state = getattr(scope.get("app"), "state", None)
    if app_state is None:
        return None
    if isinstance(app_state, Mapping):  # Litestar's State is a mapping too
        return app_state.get(RUN_STATE_KEY)
    return getattr(app_state, RUN_STATE_KEY, None)


#: Where a framework's ``__call__`` sends each request, looked up per call:
#: Starlette / FastAPI (``middleware_stack``, built before the lifespan runs),
#: Litestar (``asgi_handler``).
_ENTRIES = ("middleware_stack", "asgi_handler")


def catch_up(state: MutableMapping[str, Any], run: Any) -> dict[str, Any]:
    """Add to ``state`` the values of ``run`` it lacks (phases that recovered); return them.

    A key already in ``state`` is never replaced: smd's own keys, what the
    app's lifespan yielded, a phase published at startup.
    """
    late = {key: value for key, value in run.values.items() if key not in state}
    state.update(late)
    return late


@contextmanager
def live_state(app: Any, live: Callable[[], Mapping[str, Any]]) -> Iterator[None]:
    """While the block runs, each request's ``scope["state"]`` gets what ``live()`` holds.

    The server copies the lifespan state into a request when it arrives, and
    Starlette copied the lifespan's yield into the server's dict once, at
    startup, so a value published later (a phase that recovered) would never
    reach ``request.state``; Litestar never puts the lifespan state there at
    all. Wrapping the app's per-request entry adds what a request's copy lacks
    (its own keys win). An app with neither entry is left as it is
    (:func:`~smd.asgi.with_lifespan` fills the state itself).
    """
    attr = next((a for a in _ENTRIES if callable(getattr(app, a, None))), None)
    if attr is None:
        yield
        return
    inner: Callable[..., Awaitable[None]] = getattr(app, attr)

    async def entry(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            state = scope.setdefault("state", {})
            for key, value in live().items():
                state.setdefault(key, value)
        await inner(scope, receive, send)

    setattr(app, attr, entry)
    try:
        yield
    finally:
        if getattr(app, attr, None) is entry:  # nobody replaced it meanwhile
            setattr(app, attr, inner)


def _why_absent(run: Any, name: str) -> str:
    phases: dict[str, Any] = run.readiness.snapshot().to_dict().get("phases", {})
    state = run.readiness.state.value
    info = phases.get(name)
    if info is None:  # planned but not reported yet: the startup is still running
        return f"phase {name!r} has no value yet: the startup is {state}"
    outcome = info.get("outcome", "unknown")
    reason = info.get("reason") or ""
    text = f"phase {name!r} has no value: it ended {outcome}"
    if outcome == "bypassed" and not info.get("recovered"):
        text += " and has not recovered"
    if reason:  # the readiness reason already names the phase ("cache: ...")
        text += f" [{reason}]"
    return f"{text}; the startup is {state}"


@overload
def phase_value(source: Any, name: str) -> Any: ...
@overload
def phase_value(source: Any, name: str, kind: type[T]) -> T: ...
@overload
def phase_value(source: Any, name: str, *, default: Any) -> Any: ...
@overload
def phase_value(source: Any, name: str, kind: type[T], *, default: T) -> T: ...


def phase_value(
    source: Any, name: str, kind: type[Any] | None = None, *, default: Any = _MISSING
) -> Any:
    """The value phase ``name`` returned, as the run holds it now.

    ``source`` is the request (``request``, or Django's / Quart's ``request``,
    anything with ``.scope``) or the raw ASGI scope. A phase that recovered in
    the background is seen with its recovered value at once (the lifespan
    state copied into ``request.state`` is refreshed only for requests that
    arrive afterwards).

    With ``kind`` (a class) the value is checked and typed: ``phase_value(request,
    "database", Pool)`` is a ``Pool`` for the type checker, and a value of
    another type raises :class:`TypeError`. A phase with no value (bypassed,
    failed, still running) raises :class:`LookupError` naming the phase and the
    startup's state, unless ``default`` is given. A name that is not a phase of
    the startup always raises :class:`LookupError` (a typo must not pass as
    "absent"), as does a request that no smd lifespan serves.
    """
    run = find_run(source)
    if run is None:
        raise LookupError(
            f"no smd run serves this request (looking for phase {name!r}): serve the app "
            "with smd.asgi.smd_lifespan(...) or smd.asgi.with_lifespan(...)"
        )
    names = run.plan.order
    if name not in names:
        raise LookupError(
            f"startup {run.startup.name!r} has no phase {name!r}; its phases: {', '.join(names)}"
        )
    values: Mapping[str, Any] = run.values
    if name not in values:
        if default is not _MISSING:
            return default
        raise LookupError(_why_absent(run, name))
    value = values[name]
    if kind is not None and not isinstance(value, kind):
        raise TypeError(
            f"phase {name!r} returned a {type(value).__qualname__}, not a {kind.__qualname__}"
        )
    return value
