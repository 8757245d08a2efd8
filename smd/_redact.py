"""The one rule that keeps secrets out of every output.

Known secrets (passwords from settings and DSNs) are registered once; every
log line, report, trace, plan, history view, error message and ``--debug``
traceback passes :func:`redact`. Unregistered secrets are masked where their
shape gives them away:

- a URL's userinfo password (``scheme://user:secret@host``), whatever it
  holds: the userinfo runs to the *last* ``@`` of the URL, and the URL to
  the end of its quoted string (a literal in a source line, a JSON or repr
  string: the first unescaped quote), else to the end of its line or the
  next URL -- so an unencoded ``/``, ``@``, ``?``, ``#``, space or quote in
  the password is masked with the rest of it (at worst a little more than
  the password is masked);
- a ``password=`` (``sslpassword=``, ``client_secret=``...) query parameter
  of a URL, to the end of the URL (an unencoded ``&`` stays masked);
- ``password=...`` / ``password: ...`` pairs elsewhere, quoted or bare.

A secret of three characters or more is masked wherever it appears; a one-
or two-character secret only where it stands alone (masked inside every
word it would turn ``postgres`` into ``***ostgres``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["MASK", "redact", "register_secret"]

MASK = "***"
_SHORT = 3
_SECRET_NAME = r"[A-Za-z_]*(?:password|passwd|secret)"
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
# A URL that starts a new token ends the one before it.
_NEXT_URL = re.compile(r"(?:(?<=[\s\"'`=(<\[{,;|])|^)[A-Za-z][A-Za-z0-9+.\-]*://", re.M)
_QUERY_SECRET = re.compile(rf"[?&;]{_SECRET_NAME}=", re.I)
_PASSWORD_KV = re.compile(
    rf"(?P<head>\b{_SECRET_NAME}['\"]?\s*[=:]\s*)"
    r"(?P<pw>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s'\"]+)",
    re.I,
)
# What a text must hold for the shape rules to find anything: a URL, or a
# word the pair and query rules match (they are case-insensitive; casefold
# folds at least what re.I folds, so nothing that would match is missed).
_MARKERS = ("passw", "secret")
_secrets: set[str] = set()
# The registered forms, longest first (a form inside a longer one must not
# break the longer one's match): sorted once per registration, not per text.
_ordered: tuple[str, ...] = ()
_lock = threading.Lock()


def _forms(secret: str) -> set[str]:
    escaped = json.dumps(secret)[1:-1]
    return {
        secret,
        escaped,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(escaped)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        quote(secret),
    }


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` (and its JSON-, repr- and URL-escaped forms) in all output from now on.

    Secrets shorter than three characters are not registered process-wide:
    masking every standalone "1" would corrupt numbers in every JSON log
    line. They are still masked where they are recognisable (the password of
    a URL's userinfo, ``password=`` pairs) and wherever the code that knows
    them passes them to :func:`redact` explicitly (the PostgreSQL check does).
    """
    global _ordered
    if secret and len(secret) >= _SHORT:
        forms = _forms(secret)
        with _lock:
            _secrets.update(f for f in forms if len(f) >= _SHORT)
            _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def _mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` masked, longest first."""
    for secret in secrets:
        if secret not in text:
            continue
        if len(secret) >= _SHORT:
            text = text.replace(secret, MASK)
        else:
            alone = rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])"
            text = re.sub(alone, MASK, text)
    return text


def _mask_url(url: str) -> str:
    """``url`` (the text after ``scheme://``) with its password and secret parameters masked.

    Both spans are found in the text as given, then masked together: either
    may hold what looks like the other (``?password=`` in a password, ``@``
    in a query value).
    """
    spans: list[tuple[int, int]] = []
    at = url.rfind("@")
    colon = url.find(":", 0, at) if at >= 0 else -1
    if colon >= 0:
        spans.append((colon + 1, at))
    found = _QUERY_SECRET.search(url)
    if found is not None:
        spans.append((found.end(), len(url)))
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, done = [], 0
    for start, end in merged:
        out += [url[done:start], MASK]
        done = end
    out.append(url[done:])
    return "".join(out)


def _closing(text: str, quote_char: str, start: int, end: int) -> int:
    """Where the quoted string holding ``text[start:]`` ends: its first unescaped quote."""
    i = start
    while i < end:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == quote_char:
            return i
        i += 1
    return end


def _mask_urls(text: str) -> str:
    out: list[str] = []
    done = 0
    for m in _SCHEME.finditer(text):
        start = m.end()
        if m.start() < done:
            continue
        before = text[m.start() - 1] if m.start() else ""
        if before == "/":
            # "startup/postgres://host:port/db@env": a history key, no userinfo.
            continue
        line_end = text.find("\n", start)
        end = len(text) if line_end < 0 else line_end
        if before in ("'", '"'):
            # One quoted string is one token, whatever it holds.
            end = _closing(text, before, start, end)
        else:
            following = _NEXT_URL.search(text, start, end)
            if following is not None:
                end = following.start()
        out += [text[done:start], _mask_url(text[start:end])]
        done = end
    out.append(text[done:])
    return "".join(out)


def _mask_pair(m: re.Match[str]) -> str:
    pw = m.group("pw")
    if pw[:1] in ("'", '"'):
        quote_char = pw[0]
        closed = len(pw) > 1 and pw.endswith(quote_char)
        return f"{m.group('head')}{quote_char}{MASK}{quote_char if closed else ''}"
    return m.group("head") + (pw if pw == MASK else MASK)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every registered secret, every one of ``secrets`` and URL passwords masked."""
    if not text:
        return text
    known = _ordered  # one tuple, replaced whole by register_secret: no lock needed
    if secrets:
        extra = {f for s in secrets if s for f in _forms(s)}
        if extra:
            known = tuple(sorted(extra.union(known), key=len, reverse=True))
    if known:
        text = _mask(text, known)
    # Every log field and line passes here: the shape rules only where they
    # can match (substring tests are ~10x cheaper than a case-insensitive
    # regex scan of a whole JSON line).
    url = "://" in text
    if url:
        text = _mask_urls(text)
    if not url:
        folded = text.casefold()
        if not any(marker in folded for marker in _MARKERS):
            return text
    return _PASSWORD_KV.sub(_mask_pair, text)
