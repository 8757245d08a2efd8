"""Alert values, the hook protocol, and the ready-made webhook poster (see :mod:`smd.alerts`)."""

from __future__ import annotations

import atexit
import json
import queue
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from smd._encode import encode
from smd._logging import get_logger
from smd.secrets import redact

__all__ = ["Alert", "AlertHook", "Webhook", "webhook"]

_log = get_logger("smd")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: a name from :data:`ALERTS`, a human message, machine-readable fields."""

    name: str
    message: str
    fields: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.fields, MappingProxyType):
            object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (what :func:`webhook` posts): rounded and redacted."""
        data: dict[str, object] = encode(
            {"name": self.name, "message": self.message, "fields": dict(self.fields)}
        )
        return data


@runtime_checkable
class AlertHook(Protocol):
    """Receives every alert an :class:`Alerts` observer fires."""

    def __call__(self, alert: Alert, /) -> None: ...


class Webhook:
    """Posts each alert as JSON to ``url`` from a daemon thread (see :func:`webhook`)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        headers: Mapping[str, str] | None = None,
        queue_size: int = 100,
        flush_at_exit: bool = True,
    ) -> None:
        scheme = url.partition(":")[0].lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"a webhook URL must be http or https, got {redact(url)!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.url = url
        self.timeout = float(timeout)
        self.headers = {"content-type": "application/json", **(headers or {})}
        self._queue: queue.Queue[Alert | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._flush_at_exit = flush_at_exit
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"webhook({redact(self.url)!r}, timeout={self.timeout:g})"

    def __call__(self, alert: Alert) -> None:
        """Queue ``alert``; never blocks (a full queue drops it, with a warning)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="smd-alert-webhook", daemon=True
                )
                self._thread.start()
                if self._flush_at_exit:
                    # A failing `smd run` exits right after its last alert:
                    # give the poster one timeout to deliver it (never more).
                    atexit.register(self.flush, self.timeout)
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            _log.warning("smd.alert.dropped", alert=alert.name, webhook=redact(self.url))

    def _work(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                if alert is None:
                    return
                self._post(alert)
            finally:
                self._queue.task_done()

    def _post(self, alert: Alert) -> None:
        body = json.dumps(alert.to_dict()).encode()
        request = urllib.request.Request(self.url, body, self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            self.sent += 1
        except Exception as exc:  # the hook must never break anything
            self.failed += 1
            _log.warning(
                "smd.alert.webhook_failed",
                alert=alert.name,
                webhook=redact(self.url),
                error=redact(f"{type(exc).__name__}: {exc}"),
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert was posted or gave up; False if ``timeout`` passed."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)


def webhook(
    url: str,
    *,
    timeout: float = 2.0,
    headers: Mapping[str, str] | None = None,
    flush_at_exit: bool = True,
) -> Webhook:
    """An alert hook posting ``{"name", "message", "fields"}`` as JSON to ``url``.

    Posts from a daemon thread with ``timeout`` seconds per request
    (urllib, standard library): calling it never blocks, and a server that
    is down, refuses or never answers costs a warning
    (``smd.alert.webhook_failed``), nothing else. At most 100 alerts wait;
    past that they are dropped (``smd.alert.dropped``). At interpreter exit it
    waits at most ``timeout`` for alerts still queued (``flush_at_exit``);
    a caller that ``exec``s (``smd run -- CMD``) should call :meth:`Webhook.flush`
    first.
    """
    return Webhook(url, timeout=timeout, headers=headers, flush_at_exit=flush_at_exit)
