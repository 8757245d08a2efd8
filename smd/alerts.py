"""Alerts: a small hook fired on the run events worth a page, and a webhook poster.

:class:`Alerts` is an observer; give it hooks (any callable taking an
:class:`Alert`), for example the ready-made :func:`webhook`::

    from smd.alerts import Alerts, webhook

    alerts = Alerts([webhook("https://alerts.example/smd")])
    startup = smd.Startup("api", observers=[alerts])

It fires, and also logs ``smd.alert.<name>`` through the ``smd`` logger:

=========================  ==================================================================
name                       when
=========================  ==================================================================
``degraded``               a startup concluded degraded (phases were bypassed)
``failed``                 a startup failed (not when a signal interrupted it)
``bypass_in_production``   a failure was let through in production (the forced override too)
``degraded_streak``        consecutive degraded starts of a target reached the conditional
                           limit (``max_consecutive_degraded``): the bypass is refused now
``timeout_growth``         a target's learned deadline grew more than ``growth`` times
                           (default 2x) since its previous start
``recovered``              a bypassed phase's dependency answered in the background
=========================  ==================================================================

**The previous start's deadline** (``timeout_growth``) is what the run's
events say when this observer saw that previous start (a process that
starts several times); otherwise, given ``store`` (the run's history store)
and ``settings``, what the history shows: the deadline the target's recorded
policy gives on its history *as it stood before its latest recorded start*
(samples recorded by this run are left out), computed like ``smd history``
does. That read runs in a daemon thread, never on the event loop; its alert
comes from that thread. Only learned deadlines compare (``source``
``adaptive`` both times): leaving the warm-up default is not growth. A start
that recovered in the background left two outcomes in the history, and
counts as two starts there.

Hooks are called synchronously (from the run's task, or that thread): keep
them quick. One that raises is logged once (``smd.alert.hook_failed``) and
never breaks a startup. :func:`webhook` posts from a daemon thread of its
own, with a timeout, and never blocks the caller.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from smd._alert_hooks import Alert, AlertHook, Webhook, webhook
from smd._logging import get_logger
from smd._report import Outcome, State
from smd._settings import Environment
from smd.bypass import Action
from smd.events import (
    BypassDecided,
    Event,
    Recovered,
    StartupFinished,
    StartupStarted,
    TimeoutComputed,
)
from smd.secrets import redact

if TYPE_CHECKING:
    from smd._settings import Settings
    from smd._store import HistoryStore
    from smd._timeout_base import TimeoutDecision

__all__ = ["ALERTS", "Alert", "AlertHook", "Alerts", "Webhook", "webhook"]

_log = get_logger("smd")

#: Every alert name (logged as ``smd.alert.<name>``).
ALERTS = (
    "degraded",
    "failed",
    "bypass_in_production",
    "degraded_streak",
    "timeout_growth",
    "recovered",
)


class Alerts:
    """An observer firing :class:`Alert` s at ``hooks`` (see the module docstring)."""

    def __init__(
        self,
        hooks: Iterable[AlertHook] = (),
        *,
        growth: float = 2.0,
        store: HistoryStore | None = None,
        settings: Settings | None = None,
        log: Any = None,
    ) -> None:
        if not growth > 1:
            raise ValueError(f"growth must be a factor above 1, got {growth!r}")
        self.hooks = tuple(hooks)
        for hook in self.hooks:
            if not callable(hook):
                raise TypeError(f"an alert hook must be callable with an Alert, got {hook!r}")
        self.growth = float(growth)
        self.store = store
        self.settings = settings
        self.log = log if log is not None else _log
        #: The latest alerts fired (at most 100), oldest first.
        self.fired: deque[Alert] = deque(maxlen=100)
        self._lock = threading.Lock()
        self._failed: set[int] = set()
        self._previous: dict[str, TimeoutDecision] = {}
        self._started: dict[str, float] = {}
        self._streaks: set[tuple[str, str]] = set()
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"Alerts({len(self.hooks)} hook(s), growth={self.growth:g})"

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartupStarted):
            with self._lock:
                self._started[event.startup] = event.at
                self._streaks = {s for s in self._streaks if s[0] != event.startup}
        elif isinstance(event, BypassDecided):
            self._decided(event)
        elif isinstance(event, TimeoutComputed):
            self._timeout(event)
        elif isinstance(event, StartupFinished):
            self._finished(event)
        elif isinstance(event, Recovered):
            self.fire(
                "recovered",
                f"startup {event.startup!r}: phase {event.phase!r} recovered after "
                f"{event.time_to_ready:.3g}s ({event.probes} probe(s)); no longer degraded by it",
                startup=event.startup,
                phase=event.phase,
                time_to_ready=event.time_to_ready,
                probes=event.probes,
            )

    # -- firing -------------------------------------------------------------------------

    def fire(self, name: str, message: str, **fields: object) -> Alert:
        """Log ``smd.alert.<name>`` and hand the alert to every hook."""
        alert = Alert(name, redact(message), {k: _safe(v) for k, v in fields.items()})
        level = "info" if name == "recovered" else "error" if name == "failed" else "warning"
        getattr(self.log, level)(f"smd.alert.{name}", message=alert.message, **alert.fields)
        with self._lock:
            self.fired.append(alert)
        for hook in self.hooks:
            try:
                hook(alert)
            except Exception as exc:
                if id(hook) not in self._failed:
                    self._failed.add(id(hook))
                    self.log.warning(
                        "smd.alert.hook_failed",
                        hook=repr(hook),
                        alert=name,
                        error=redact(f"{type(exc).__name__}: {exc}"),
                        hint="an alert hook that raises is reported once and then ignored",
                    )
        return alert

    def flush(self, timeout: float | None = None) -> None:
        """Wait for history reads still running (``timeout_growth`` from the store)."""
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)

    # -- the triggers -------------------------------------------------------------------

    def _finished(self, event: StartupFinished) -> None:
        r = event.report
        bypassed = [p.name for p in r.phases if p.outcome is Outcome.BYPASSED]
        if r.state is State.DEGRADED:
            self.fire(
                "degraded",
                f"startup {r.startup!r} is degraded in {r.environment}: " + "; ".join(r.reasons),
                startup=r.startup,
                environment=r.environment,
                phases=bypassed,
                reasons=list(r.reasons),
            )
        elif r.state is State.FAILED and not r.interrupted:
            failed = r.failed_phase
            f = failed.failure if failed is not None else None
            self.fire(
                "failed",
                f"startup {r.startup!r} failed in {r.environment}"
                + (f": phase {failed.name!r}" if failed is not None else "")
                + (f" ({f.kind.value}): {f.message}" if f is not None else ""),
                startup=r.startup,
                environment=r.environment,
                phase=failed.name if failed is not None else None,
                kind=f.kind.value if f is not None else None,
                code=f.code if f is not None else None,
                exit_code=r.exit_code(),
            )

    def _decided(self, event: BypassDecided) -> None:
        d = event.decision
        try:
            production = Environment.parse(event.environment) is Environment.PRODUCTION
        except ValueError:
            production = False
        where = {
            "startup": event.startup,
            "phase": event.phase,
            "target": event.target,
            "kind": event.failure.kind.value,
        }
        if production and d.action is Action.CONTINUE:
            how = "forced override (SMD_BYPASS__FORCE_CONTINUE)" if d.forced else d.mode or "policy"
            self.fire(
                "bypass_in_production",
                f"production startup {event.startup!r} continues degraded without phase "
                f"{event.phase!r} ({event.failure.kind.value} failure, {how}): {d.reason}",
                **where,
                code=event.failure.code,
                mode=d.mode,
                forced=d.forced,
                reason=d.reason,
            )
        for c in d.conditions:
            if c.name != "consecutive_degraded" or c.holds:
                continue
            key = (event.startup, event.target)
            with self._lock:
                if key in self._streaks:
                    continue
                self._streaks.add(key)
            self.fire(
                "degraded_streak",
                f"{event.target}: {c.value} consecutive degraded startups reached the limit "
                f"of {c.threshold}; phase {event.phase!r} is no longer bypassed",
                **where,
                consecutive_degraded=c.value,
                limit=c.threshold,
                action=d.action.value,
            )

    def _timeout(self, event: TimeoutComputed) -> None:
        current = event.timeout
        with self._lock:
            previous = self._previous.get(event.target)
            self._previous[event.target] = current
            started = self._started.get(event.startup)
        if previous is not None:
            self._compare(event, previous, "this process's previous start")
        elif self.store is not None and current.source == "adaptive" and started is not None:
            thread = threading.Thread(
                target=self._from_history,
                args=(event, started),
                name="smd-alert-history",
                daemon=True,
            )
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _compare(self, event: TimeoutComputed, previous: TimeoutDecision, where: str) -> None:
        current = event.timeout
        if current.source != "adaptive" or previous.source != "adaptive":
            return
        if current.seconds <= self.growth * previous.seconds:
            return
        ratio = current.seconds / previous.seconds
        self.fire(
            "timeout_growth",
            f"{event.target}: the learned deadline grew {ratio:.1f}x since the previous start "
            f"({previous.seconds:.3g}s -> {current.seconds:.3g}s, more than {self.growth:g}x): "
            f"{current.explanation}",
            startup=event.startup,
            phase=event.phase,
            target=event.target,
            previous=previous.seconds,
            seconds=current.seconds,
            ratio=ratio,
            previous_from=where,
            explanation=current.explanation,
        )

    def _from_history(self, event: TimeoutComputed, started: float) -> None:
        try:
            previous = previous_deadline(
                self.store, event.target, before=started, settings=self.settings
            )
        except Exception as exc:  # a history read must never break anything
            self.log.warning(
                "smd.alert.history_failed",
                target=event.target,
                error=redact(f"{type(exc).__name__}: {exc}"),
            )
            return
        if previous is not None:
            self._compare(event, previous, "the history")


def previous_deadline(
    store: HistoryStore | None,
    target: str,
    *,
    before: float,
    settings: Settings | None = None,
) -> TimeoutDecision | None:
    """The deadline ``target`` had at its latest start recorded before ``before`` (wall time).

    Replays the target's recorded policy (as ``smd history`` does) on the
    history as it stood before that start: every sample up to the outcome
    (``ready`` or ``failure``) of the start before it. ``None`` when the
    history shows no such start.
    """
    from smd._history_view import summarize_history
    from smd._samples import Series, TimingHistory
    from smd._settings_load import load_settings

    if store is None:
        return None
    history = store.load_many([target]).get(target)
    if history is None:
        return None
    samples = [s for s in history.all_samples() if s.at < before]
    outcomes = [s.at for s in samples if s.series in (Series.READY, Series.FAILURE)]
    if not outcomes:
        return None
    cut = outcomes[-2] if len(outcomes) > 1 else float("-inf")
    then = TimingHistory([s for s in samples if s.at <= cut], bound=history.bound)
    summary = summarize_history(
        target,
        then,
        now=before,
        info=store.targets().get(target),
        settings=settings or load_settings(),
    )
    return summary.timeout


def _safe(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value
