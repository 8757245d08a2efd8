"""One place that keeps secrets out of every output.

Known secrets (DSN passwords from settings) are registered once; every log
line, report, trace and error message passes through :func:`redact`.
URL-embedded passwords (``scheme://user:secret@host``) are masked even when
they were never registered.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

__all__ = ["MASK", "redact", "redact_value", "register_secret"]

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@\s/]+)(?=@)")
_PASSWORD_KV = re.compile(
    r"(?P<head>\bpassword\s*[=:]\s*)(?P<pw>'[^']*'|\"[^\"]*\"|[^\s,;&]+)", re.I
)
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` wherever it appears from now on (ignores tiny strings).

    Its JSON- and repr-escaped forms are masked too, since log lines are
    redacted after rendering.
    """
    if secret and len(secret) >= 3:
        escaped = json.dumps(secret)[1:-1]
        forms = {secret, escaped, json.dumps(escaped)[1:-1], repr(secret)[1:-1]}
        with _lock:
            _secrets.update(f for f in forms if len(f) >= 3)


def redact(text: str) -> str:
    """``text`` with every registered secret and URL password masked."""
    if not text:
        return text
    # Fast path (every log field passes here): nothing that could hide a secret.
    if not _secrets and "://" not in text and "assword" not in text.lower():
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _PASSWORD_KV.sub(lambda m: m.group("head") + MASK, text)


def redact_value(value: Any) -> Any:
    """Redact strings inside JSON-like values (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
