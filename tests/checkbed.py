"""Real servers for the TCP, HTTP and Redis checks' tests.

- `RedisServer`: Debian's ``redis-server`` on a free loopback port (a
  ``requirepass``, optional TLS, any extra arguments such as ``--replicaof``
  or ``--key-load-delay``), stopped at the end; `resp` talks to it.
- `HttpBed`: a threaded stdlib HTTP server (optionally TLS) whose paths pick
  the answer: ``/status/NNN`` answers NNN, ``/starting/N`` answers 503 N
  times then 200, ``/hints`` sends a 103 before its 200, ``/auth`` wants the
  bed's basic credentials.
- `Scripted`: reads the client's first bytes, answers fixed bytes, closes
  (a server that is not what the check expects, or one that hangs up
  mid-answer).
- `SynBlackhole`: a listener whose accept queue is full, so the kernel drops
  new SYNs: a connect hangs like behind a firewall that drops packets.
- `make_cert`: a self-signed certificate made with the ``openssl`` command.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
from pgbed.cluster import free_port
from pgbed.fakepg import BackgroundServer

__all__ = [
    "HttpBed",
    "RedisServer",
    "Scripted",
    "SynBlackhole",
    "held_connections",
    "make_cert",
    "redis_server_binary",
    "resp",
    "wait_listening",
]


def redis_server_binary() -> str | None:
    """The ``redis-server`` binary (``tests/pgbed/ensure_server.sh`` installs it as root)."""
    return shutil.which("redis-server")


def make_cert(directory: Path, *, san: str = "DNS:localhost") -> tuple[Path, Path]:
    """A self-signed certificate for ``CN=localhost`` with ``san``; returns (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def wait_listening(
    port: int, *, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection (or raise, naming why)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout}s"
                ) from None
            time.sleep(0.02)


def _encode(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(f: IO[bytes]) -> str:
    line = f.readline().rstrip(b"\r\n")
    if line[:1] == b"$":
        size = int(line[1:])
        if size < 0:
            return ""
        return f.read(size + 2)[:-2].decode()
    if line[:1] == b"*":
        return " ".join(_read_reply(f) for _ in range(int(line[1:])))
    return line.decode()


def resp(port: int, *args: str, password: str | None = None, user: str | None = None) -> str:
    """Run one command (after AUTH when ``password``) and return its reply as text
    (``+OK`` -> ``OK``, ``-ERR x`` -> ``-ERR x``, bulk strings as their text)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
        sock.makefile("rb") as f,
    ):
        if password is not None:
            sock.sendall(_encode("AUTH", *((user,) if user else ()), password))
            reply = _read_reply(f)
            if reply != "+OK":
                raise RuntimeError(f"AUTH failed: {reply}")
        sock.sendall(_encode(*args))
        reply = _read_reply(f)
        return reply[1:] if reply.startswith("+") else reply


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1 (``requirepass`` when ``password``)."""

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        args: Sequence[str] = (),
        tls: tuple[Path, Path] | None = None,
        port: int | None = None,
        kill: bool = False,
    ) -> None:
        self.kill = kill  # SIGKILL at stop: a server loading a dataset ignores SIGTERM for long
        self.workdir = workdir
        self.password = password
        self.args = tuple(args)
        self.tls = tls
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> RedisServer:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server not found: run tests/pgbed/ensure_server.sh as root")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.workdir), "--daemonize", "no"]  # fmt: skip
        if self.tls is not None:
            cert, key = self.tls
            cmd += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                    "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                    "--tls-auth-clients", "no"]  # fmt: skip
        else:
            cmd += ["--port", str(self.port)]
        if self.password is not None:
            cmd += ["--requirepass", self.password]
        cmd += list(self.args)
        self._log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_listening(self.port, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def url(
        self,
        *,
        password: str | None = None,
        user: str | None = None,
        db: int | None = None,
        scheme: str | None = None,
    ) -> str:
        """A URL for this server; ``password=None`` means the server's own (``""``: none)."""
        pw = self.password if password is None else password
        scheme = scheme or ("rediss" if self.tls is not None else "redis")
        auth = f"{user or ''}:{pw}@" if pw else ""
        path = f"/{db}" if db is not None else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}{path}"

    def command(self, *args: str) -> str:
        """One command as the default user."""
        return resp(self.port, *args, password=self.password)

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "redis.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if self.kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # Loading a dataset, redis-server only handles SIGTERM between keys.
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, *, headers: dict[str, str] | None = None) -> None:
        body = f"status {status}\n".encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers.items())))
        parts = urlsplit(self.path).path.strip("/").split("/")
        if parts[0] == "status" and len(parts) == 2:
            status = int(parts[1])
            headers = {"Location": "/elsewhere"} if 300 <= status < 400 else {}
            self._answer(status, headers=headers)
        elif parts[0] == "starting" and len(parts) == 2:
            with self.server.lock:
                self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
                seen = self.server.hits[self.path]
            self._answer(503 if seen <= int(parts[1]) else 200)
        elif parts[0] == "hints":
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            self._answer(200)
        elif parts[0] == "auth":
            expected = self.server.credentials
            given = self.headers.get("Authorization", "")
            ok = (
                expected is not None
                and given
                == "Basic " + base64.b64encode(f"{expected[0]}:{expected[1]}".encode()).decode()
            )
            self._answer(200 if ok else 401, headers={} if ok else {"WWW-Authenticate": "Basic"})
        else:
            self._answer(200)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[tuple[str, dict[str, str]]]
    hits: dict[str, int]
    lock: threading.Lock
    credentials: tuple[str, str] | None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that rejected our certificate, or hung up after the status
        # line (checks never read the body): expected, not worth a traceback.
        pass


class HttpBed:
    """The threaded HTTP(S) server described in the module docstring."""

    def __init__(
        self,
        *,
        tls: tuple[Path, Path] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.tls = tls
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.requests = []
        self.server.hits = {}
        self.server.lock = threading.Lock()
        self.server.credentials = credentials
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            # The handshake runs in the request's thread (on first read), so
            # one client stuck in it never holds up the others.
            self.server.socket = ctx.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/", *, host: str = "127.0.0.1", userinfo: str = "") -> str:
        scheme = "https" if self.tls is not None else "http"
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}{host}:{self.port}{path}"

    @property
    def requests(self) -> list[tuple[str, dict[str, str]]]:
        return self.server.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> HttpBed:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Scripted(BackgroundServer):
    """Waits for the client's first bytes, answers ``payload``, then closes."""

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload
        self.received: list[bytes] = []

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        with anyio.move_on_after(5):
            self.received.append(await stream.receive())
        await stream.send(self.payload)

    def __enter__(self) -> Scripted:
        self.start()
        return self


class SynBlackhole:
    """127.0.0.1:``port`` listens with a full accept queue: new SYNs are dropped."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._filler: socket.socket | None = None

    def __enter__(self) -> SynBlackhole:
        self._listener.bind(("127.0.0.1", 0))
        # Backlog 0 holds one completed connection; the filler takes it and
        # the kernel drops every later SYN (the client retransmits, then waits).
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._filler = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._filler is not None:
            self._filler.close()
        self._listener.close()


@contextlib.contextmanager
def held_connections(
    port: int, count: int, *, password: str | None = None
) -> Iterator[list[socket.socket]]:
    """``count`` open, authenticated connections to a Redis server (to use up ``maxclients``)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            sock.sendall(_encode("AUTH", password) if password else _encode("PING"))
            sock.recv(1024)
        yield socks
    finally:
        for sock in socks:
            sock.close()
