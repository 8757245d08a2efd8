"""The HTTP check: a URL answers with a status in a set (default 200-399).

A minimal HTTP/1.1 client on anyio (one ``GET``, ``Connection: close``, the
status line and headers read, the body never; redirects are not followed,
proxies not used), TLS through :mod:`ssl` for ``https://`` -- the system's
CAs, or ``SSL_CERT_FILE``, or the ``ssl_context`` given. No dependency
beyond smd's own.

How an answer is classified (the failure's ``code`` is the status, or the
OpenSSL reason / errno name when no status came):

- a status in the set: ready;
- 500, 502, 503, 504 and the other 5xx, 408, 425, 429: infrastructure (the
  server or its gateway is not ready yet: may heal by waiting);
- 501, 505, 511 and the other 4xx (401, 403, 404...), and a 1xx-3xx that is
  not in the set: configuration (the URL, the method or the credentials are
  wrong: waiting will not fix it);
- TLS errors (an untrusted or mismatched certificate, TLS to a plain port),
  an answer that is not HTTP: configuration;
- refused, reset, closed before answering: infrastructure; no answer within
  the attempt: timeout.

A ``user:password@`` in the URL is sent as basic authentication; the
password is registered as a secret and never shown. The module's
:data:`plugin` contributes ``smd check http URL``.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

import anyio
from anyio.abc import ByteReceiveStream

from smd import Failure, FailureKind
from smd.checks._accepted import HTTP_ACCEPTED as _ACCEPTED
from smd.checks._net import (
    Answer,
    Progress,
    attempt,
    connect,
    format_host,
    misplaced_userinfo,
    split_host_port,
)
from smd.retry import ProbeResult
from smd.secrets import register_secret

__all__ = ["DEFAULT_STATUSES", "HttpCheck", "classify_status"]

#: What counts as ready unless told otherwise: any success or redirect.
DEFAULT_STATUSES: frozenset[int] = frozenset(range(200, 400))

_MAX_HEAD = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: ([^\r\n]*))?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Statuses that mean "not yet" rather than "never": waiting may cure them.
_TRANSIENT_4XX = {
    408: "the server timed out waiting for the request",
    425: "the server is not ready to process the request yet (too early)",
    429: "too many requests: the server is shedding load",
}
_PERMANENT_5XX = {
    501: "the server does not implement this method",
    505: "the server does not support HTTP/1.1",
    511: "a network login (captive portal) is in the way",
}
_MEANING_4XX = {
    400: "the server rejected the request as malformed",
    401: "authentication required or the credentials were rejected",
    403: "access forbidden",
    404: "no such path on the server",
    405: "the server does not allow this method on this path",
}
_MEANING_5XX = {
    500: "the server failed internally",
    502: "a gateway got no valid answer from the server behind it",
    503: "the server is unavailable (starting up, overloaded or down for maintenance)",
    504: "a gateway timed out waiting for the server behind it",
}


def describe_statuses(statuses: Iterable[int]) -> str:
    """``200-399`` or ``200, 204`` -- the set, as compact ranges."""
    values = sorted(set(statuses))
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(
            f"{values[i]}-{values[j]}" if j > i + 1 else ", ".join(map(str, values[i : j + 1]))
        )
        i = j + 1
    return ", ".join(parts)


def classify_status(
    status: int,
    reason: str,
    *,
    target: str,
    statuses: Iterable[int] = DEFAULT_STATUSES,
    location: str | None = None,
) -> Failure | None:
    """``None`` for a status in ``statuses``, else the classified failure (``code``: the status)."""
    accepted = frozenset(statuses)
    if status in accepted:
        return None
    kind: FailureKind
    if status in _TRANSIENT_4XX:
        kind, meaning = FailureKind.INFRASTRUCTURE, _TRANSIENT_4XX[status]
    elif status in _PERMANENT_5XX:
        kind, meaning = FailureKind.CONFIGURATION, _PERMANENT_5XX[status]
    elif 500 <= status < 600:
        kind = FailureKind.INFRASTRUCTURE
        meaning = _MEANING_5XX.get(status, "server error")
    elif 400 <= status < 500:
        kind = FailureKind.CONFIGURATION
        meaning = _MEANING_4XX.get(status, "the server rejected the request")
    else:
        kind = FailureKind.CONFIGURATION
        meaning = "a status the check does not accept"
        if 300 <= status < 400:
            meaning = f"redirected to {location}" if location else "redirected"
            meaning += " (redirects are not followed: check that URL, or accept 3xx)"
    said = f"{status} {reason}".strip()
    return Failure(
        kind,
        f"HTTP {said} from {target}: {meaning}; expected {describe_statuses(accepted)}",
        code=str(status),
        details={"status": str(status)},
    )


def _parse_url(url: str) -> tuple[str, str, int, str, str | None, str | None]:
    """(scheme, host, port, path and query, user, password); ``ValueError`` never echoes the URL."""
    text = url.strip()
    if "://" not in text:
        raise ValueError(f"not a URL (no scheme); accepted: {_ACCEPTED}")
    scheme = text.partition("://")[0].lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {scheme!r}; accepted: {_ACCEPTED}")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError(f"the URL contains spaces or control characters; accepted: {_ACCEPTED}")
    try:
        parts = urlsplit(text)
    except ValueError:  # "Invalid IPv6 URL": an unclosed or misplaced bracket
        raise ValueError(
            "write an IPv6 address in closed brackets, e.g. http://[::1]:8080/; "
            f"accepted: {_ACCEPTED}"
        ) from None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    try:
        host, port = split_host_port(
            hostport,
            default_port=443 if scheme == "https" else 80,
            accepted=_ACCEPTED,
            # A password with an unescaped '/', '?' or '#' ends up in the host
            # part: with an '@' anywhere, name the part, never its text.
            echo="@" not in text,
        )
    except ValueError:
        if not at and "@" in text:
            raise misplaced_userinfo(_ACCEPTED) from None
        raise
    user = password = None
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        user = unquote(raw_user)
        password = unquote(raw_password) if colon else None
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return scheme, host, port, path, user, password


class HttpCheck:
    """Ready when ``url`` answers ``method`` with a status in ``statuses``.

    ``headers`` are sent with the request; ``ssl_context`` replaces the
    default (system CAs, ``SSL_CERT_FILE``) for ``https://``.
    """

    def __init__(
        self,
        url: str,
        *,
        statuses: Iterable[int] = DEFAULT_STATUSES,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.scheme, self.host, self.port, self.path, user, password = _parse_url(url)
        register_secret(password)
        self.statuses = frozenset(statuses)
        if not self.statuses or any(
            isinstance(s, bool) or not isinstance(s, int) or not 100 <= s <= 599
            for s in self.statuses
        ):
            raise ValueError("statuses must be a non-empty set of HTTP statuses (100-599)")
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        self.method = method.upper()
        self.headers = dict(headers or {})
        for name, value in self.headers.items():
            if not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
                raise ValueError(
                    f"invalid HTTP header {name!r} (a token, a value without newlines)"
                )
        self._authorization: str | None = None
        if user is not None or password is not None:
            token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
            register_secret(token)
            self._authorization = f"Basic {token}"
        self.ssl_context = ssl_context
        if self.scheme == "https" and ssl_context is None:
            self.ssl_context = ssl.create_default_context()

    @classmethod
    def from_target(cls, target: str) -> HttpCheck:
        """The check ``smd check http URL`` runs (default statuses 200-399)."""
        return cls(target)

    @property
    def target(self) -> str:
        """``scheme://host[:port]/path`` -- no credentials, no query (it may hold a token)."""
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        path = self.path.partition("?")[0]
        return f"{self.scheme}://{format_host(self.host)}{port}{path}"

    def _request(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = format_host(self.host) + ("" if self.port == default else f":{self.port}")
        lines = [
            f"{self.method} {self.path} HTTP/1.1",
            f"Host: {host}",
            "User-Agent: smd-check",
            "Accept: */*",
            "Connection: close",
        ]
        if self._authorization is not None:
            lines.append(f"Authorization: {self._authorization}")
        lines.extend(f"{name}: {value}" for name, value in self.headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    async def probe(self, attempt_seconds: float) -> ProbeResult:
        """One request, bounded by ``attempt_seconds`` (connect, TLS, request, status)."""

        async def talk(progress: Progress) -> Answer:
            stream = await connect(self.host, self.port, self.ssl_context, progress)
            async with stream:
                progress.stage = "request"
                await stream.send(self._request())
                progress.stage = "reply"
                return await self._read_answer(stream, progress)

        return await attempt(self.target, attempt_seconds, talk)

    async def _read_answer(self, stream: ByteReceiveStream, progress: Progress) -> Answer:
        buf = b""
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head, buf = buf[:end], buf[end + 4 :]
                answer = self._answer(head)
                if answer is not None:
                    return answer
                continue  # an interim 1xx answer: the real one follows
            if (len(buf) >= 5 and not buf.startswith(b"HTTP/")) or len(buf) > _MAX_HEAD:
                return self._answer(buf) or self._not_http(buf)
            try:
                buf += await stream.receive(65536)
            except anyio.EndOfStream:
                if not buf:
                    raise
                line_end = buf.find(b"\r\n")
                if line_end >= 0 and buf.startswith(b"HTTP/"):
                    return self._answer(buf[:line_end]) or self._not_http(buf)
                if b"HTTP/".startswith(buf[:5]):
                    progress.stage = "answer"  # cut short in the status line
                    raise anyio.IncompleteRead from None
                return self._not_http(buf)

    def _answer(self, head: bytes) -> Answer | None:
        """The answer a header block gives (``None`` for an interim 1xx)."""
        first, _, rest = head.partition(b"\r\n")
        match = _STATUS_LINE.fullmatch(first)
        if match is None:
            return self._not_http(head)
        status = int(match.group(3))
        if 100 <= status < 200 and status != 101:
            return None
        reason = (match.group(4) or b"").decode("latin-1").strip()
        location = None
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"location":
                location = value.strip().decode("latin-1")
        failure = classify_status(
            status, reason, target=self.target, statuses=self.statuses, location=location
        )
        said = f"HTTP {status} {reason}".strip()
        return Answer(failure, summary=said, server_message=said)

    def _not_http(self, data: bytes) -> Answer:
        if data[:1] in (b"\x15", b"\x16"):
            why = "it speaks TLS: use https://"
        else:
            why = f"it answered {data[:24]!r}; check the host and port"
        failure = Failure(
            FailureKind.CONFIGURATION,
            f"not an HTTP server ({self.target}): {why}",
            details={"stage": "reply"},
        )
        return Answer(failure, summary="not HTTP")

    def __repr__(self) -> str:
        return f"HttpCheck({self.target!r}, statuses={describe_statuses(self.statuses)!r})"
