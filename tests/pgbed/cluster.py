"""Throwaway PostgreSQL 15 clusters for the test bed (real server, no mocks).

`PgCluster.create()` runs ``initdb`` (scram-sha-256 password auth) and
``pg_ctl start`` on a free loopback port. When we are root the server runs as
the ``postgres`` user, since PostgreSQL refuses to run as root. A standby made
with ``pg_basebackup`` and ``hot_standby=off`` answers every connection with a
lasting 57P03 until `PgCluster.promote` makes it a primary.

This module uses only the standard library so that it also runs as a script::

    python tests/pgbed/cluster.py up DIR     # prints only the app DSN on stdout
    python tests/pgbed/cluster.py down DIR   # stops the cluster in DIR
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

__all__ = [
    "DEFAULT_BINDIR",
    "AppCredentials",
    "PgBedError",
    "PgCluster",
    "StandbyFactory",
    "free_port",
]

DEFAULT_BINDIR = Path(os.environ.get("SMD_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
_RUN_AS = "postgres"
_SUPERUSER = "postgres"
_STATE_FILE = "pgbed.json"
# Unix socket paths are limited to 107 bytes; longer directories get no socket.
_MAX_SOCKET_DIR = 90


class PgBedError(RuntimeError):
    """The test bed could not set up or drive a cluster."""


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """An application role, its password and its database."""

    user: str
    password: str
    database: str


class StandbyFactory(Protocol):
    """The ``standby`` fixture: make a standby of the session primary."""

    def __call__(
        self, *, hot_standby: bool = False, settings: dict[str, str] | None = None
    ) -> PgCluster: ...


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _check_bindir(bindir: Path) -> None:
    missing = [n for n in ("initdb", "pg_ctl", "postgres", "psql") if not (bindir / n).exists()]
    if missing:
        raise PgBedError(
            f"PostgreSQL 15 server binaries not found in {bindir} (missing: "
            f"{', '.join(missing)}); install postgresql-15 "
            "(apt-get install postgresql-15) or set SMD_PG_BINDIR"
        )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PgCluster:
    """One PostgreSQL cluster in ``base_dir`` (data, log, socket and password file).

    Build one with `create` (new primary), `open` (an existing directory) or
    `start_standby` (a replica of a running primary).
    """

    host = "127.0.0.1"
    superuser = _SUPERUSER

    def __init__(self, base_dir: Path, *, bindir: Path = DEFAULT_BINDIR) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.bindir = bindir
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "server.log"
        state = self._load_state()
        self.port: int = int(state.get("port", 0))
        self.superuser_password: str = str(state.get("superuser_password", ""))
        app = state.get("app")
        self.app: AppCredentials | None = AppCredentials(**app) if app else None
        self._timers: list[threading.Timer] = []

    # -- construction -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        base_dir: Path | None = None,
        *,
        bindir: Path = DEFAULT_BINDIR,
        settings: dict[str, str] | None = None,
    ) -> PgCluster:
        """initdb a new cluster in ``base_dir`` (a fresh temp dir if None) and start it."""
        _check_bindir(bindir)
        base = Path(tempfile.mkdtemp(prefix="smd-pg-")) if base_dir is None else Path(base_dir)
        base.mkdir(parents=True, exist_ok=True)
        cluster = cls(base, bindir=bindir)
        cluster.superuser_password = secrets.token_hex(16)
        cluster.port = free_port()
        cluster._prepare_dir()
        pwfile = cluster.base_dir / "superuser.pw"
        pwfile.write_text(cluster.superuser_password + "\n")
        cluster._chown(pwfile)
        try:
            cluster._run_server_tool(
                "initdb",
                "-D",
                str(cluster.data_dir),
                "-U",
                _SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (cluster.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'pgbed.conf'\n")
        cluster._write_conf(settings or {})
        cluster._save_state()
        cluster.start()
        return cluster

    @classmethod
    def open(cls, base_dir: Path, *, bindir: Path = DEFAULT_BINDIR) -> PgCluster:
        """Attach to a cluster previously created in ``base_dir``."""
        cluster = cls(base_dir, bindir=bindir)
        if not cluster.superuser_password or not (cluster.data_dir / "PG_VERSION").exists():
            raise PgBedError(f"no test-bed cluster in {cluster.base_dir}")
        return cluster

    def start_standby(
        self,
        base_dir: Path | None = None,
        *,
        hot_standby: bool = False,
        settings: dict[str, str] | None = None,
        replication_port: int | None = None,
    ) -> PgCluster:
        """Make a streaming standby of this (running) primary with pg_basebackup and start it.

        With ``hot_standby=False`` every connection gets SQLSTATE 57P03 ("the
        database system is not accepting connections", detail "Hot standby
        mode is disabled.") for as long as it stays a standby; `promote` ends that.

        With ``replication_port`` (e.g. a fault proxy to this primary) the base
        backup carries no WAL and the standby streams it through that port: until
        it can, it has not even read its checkpoint and answers every connection
        with 57P03 "the database system is starting up". Once WAL flows it
        becomes consistent within a fraction of a second (and, with
        ``hot_standby=True``, accepts read-only connections). In that case this
        returns as soon as the server listens.
        """
        base = Path(tempfile.mkdtemp(prefix="smd-pgsb-")) if base_dir is None else Path(base_dir)
        base.mkdir(parents=True, exist_ok=True)
        standby = PgCluster(base, bindir=self.bindir)
        standby.superuser_password = self.superuser_password
        standby.app = self.app
        standby.port = free_port()
        standby._prepare_dir()
        standby._run_server_tool(
            "pg_basebackup",
            "-D",
            str(standby.data_dir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            _SUPERUSER,
            "--wal-method=stream" if replication_port is None else "--wal-method=none",
            "--checkpoint=fast",
            "--no-sync",
            env={"PGPASSWORD": self.superuser_password},
        )
        (standby.data_dir / "standby.signal").touch()
        standby._chown(standby.data_dir / "standby.signal")
        conninfo = (
            f"host={self.host} port={replication_port or self.port} user={_SUPERUSER} "
            f"password={self.superuser_password} application_name=pgbed_standby"
        )
        conf = {
            "primary_conninfo": _quote_literal(conninfo),
            "hot_standby": "on" if hot_standby else "off",
            # Retry streaming quickly so a released fault clears at once.
            "wal_retrieve_retry_interval": "100ms",
            **(settings or {}),
        }
        standby._write_conf(conf)
        standby._save_state()
        if replication_port is None:
            standby.start()
        else:
            standby._start_nowait()
        return standby

    # -- lifecycle --------------------------------------------------------------------

    def is_running(self) -> bool:
        """True when pg_ctl finds a live postmaster for this data directory."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = self._run_server_tool("pg_ctl", "status", "-D", str(self.data_dir), check=False)
        return result.returncode == 0

    def start(self, *, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections (or is a standby)."""
        try:
            self._run_server_tool(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                str(int(timeout)),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
            )
        except PgBedError as exc:
            raise PgBedError(f"{exc}\n--- server log tail ---\n{self.log_tail()}") from None

    def _start_nowait(self, *, timeout: float = 60.0) -> None:
        """Start the server without waiting for it to be ready; return once it listens."""
        self._run_server_tool(
            "pg_ctl", "start", "-W", "-D", str(self.data_dir), "-l", str(self.log_file)
        )
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex((self.host, self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise PgBedError(
                    f"server in {self.base_dir} never listened\n--- server log tail ---\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop the server: fast shutdown, then immediate if it does not stop in time."""
        for timer in self._timers:
            timer.cancel()
        if not self.is_running():
            return
        for mode in ("fast", "immediate"):
            result = self._run_server_tool(
                "pg_ctl",
                "stop",
                "-w",
                "-t",
                str(int(timeout)),
                "-m",
                mode,
                "-D",
                str(self.data_dir),
                check=False,
            )
            if result.returncode == 0 or not self.is_running():
                return
        raise PgBedError(f"could not stop the cluster in {self.base_dir}")

    def destroy(self) -> None:
        """Stop the server and remove the whole directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def promote(self, *, wait: bool = True) -> None:
        """Promote a standby to primary (``pg_ctl promote``); with ``wait`` until it accepts."""
        args = ["promote", "-D", str(self.data_dir)]
        args.insert(1, "-w" if wait else "-W")
        self._run_server_tool("pg_ctl", *args)

    def promote_after(self, seconds: float) -> threading.Timer:
        """Promote this standby from a background timer ``seconds`` from now."""
        timer = threading.Timer(seconds, self.promote, kwargs={"wait": False})
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return timer

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log (for error messages)."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # -- connecting -------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path | None:
        """The unix socket directory, or None when the path would be too long."""
        sock = self.base_dir / "sock"
        return sock if len(str(sock)) <= _MAX_SOCKET_DIR else None

    def dsn(
        self,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> str:
        """A ``postgresql://`` DSN; defaults to the app role (or the superuser if none)."""
        if user is None:
            if self.app is not None:
                user = self.app.user
                password = self.app.password if password is None else password
                database = self.app.database if database is None else database
            else:
                user = _SUPERUSER
                password = self.superuser_password if password is None else password
        elif user == _SUPERUSER and password is None:
            password = self.superuser_password
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        db = quote(database if database is not None else "postgres", safe="")
        return f"postgresql://{auth}@{host or self.host}:{port or self.port}/{db}"

    def sql(self, statement: str, *, database: str = "postgres") -> str:
        """Run SQL as the superuser with psql over TCP; return the unaligned output."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                _SUPERUSER,
                "-d",
                database,
                "-c",
                statement,
            ],
            env={**os.environ, "PGPASSWORD": self.superuser_password, "PGCONNECT_TIMEOUT": "10"},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise PgBedError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout.strip()

    def create_role(
        self,
        name: str,
        password: str | None = None,
        *,
        connection_limit: int | None = None,
        login: bool = True,
    ) -> None:
        """CREATE ROLE (idempotent: an existing role is altered instead)."""
        opts = ["LOGIN" if login else "NOLOGIN"]
        if password is not None:
            opts.append(f"PASSWORD {_quote_literal(password)}")
        if connection_limit is not None:
            opts.append(f"CONNECTION LIMIT {int(connection_limit)}")
        options = " ".join(opts)
        exists = self.sql(f"SELECT 1 FROM pg_roles WHERE rolname = {_quote_literal(name)}")
        verb = "ALTER" if exists else "CREATE"
        self.sql(f"{verb} ROLE {_quote_ident(name)} WITH {options}")

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        """CREATE DATABASE unless it exists."""
        if self.sql(f"SELECT 1 FROM pg_database WHERE datname = {_quote_literal(name)}"):
            return
        owner_clause = f" OWNER {_quote_ident(owner)}" if owner else ""
        self.sql(f"CREATE DATABASE {_quote_ident(name)}{owner_clause}")

    def ensure_app(self, user: str = "smd_app", database: str = "smd_app") -> AppCredentials:
        """Create (once) an app role with a random password owning its own database."""
        if self.app is None or self.app.user != user or self.app.database != database:
            self.app = AppCredentials(user, secrets.token_hex(12), database)
        self.create_role(user, self.app.password)
        self.create_database(database, owner=user)
        self._save_state()
        return self.app

    # -- internals --------------------------------------------------------------------

    def _run_as_postgres(self) -> bool:
        return os.geteuid() == 0

    def _chown(self, path: Path) -> None:
        if self._run_as_postgres():
            entry = pwd.getpwnam(_RUN_AS)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _prepare_dir(self) -> None:
        self.base_dir.chmod(0o700)
        self._chown(self.base_dir)
        if self.socket_dir is not None:
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            self._chown(self.socket_dir)
        if self._run_as_postgres():
            # The server user must be able to reach the directory.
            for parent in self.base_dir.parents:
                if not os.stat(parent).st_mode & 0o001:
                    raise PgBedError(
                        f"{parent} is not traversable by the {_RUN_AS!r} user; "
                        "choose a cluster directory elsewhere (e.g. under /tmp)"
                    )

    def _write_conf(self, extra: dict[str, str]) -> None:
        sock = str(self.socket_dir) if self.socket_dir is not None else ""
        conf: dict[str, str] = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": _quote_literal(sock),
            # Throwaway data: durability buys nothing and costs seconds.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "50",
            "max_wal_senders": "10",
            "wal_keep_size": "64MB",
            "log_connections": "on",
            "log_min_messages": "warning",
        }
        conf.update(extra)
        path = self.data_dir / "pgbed.conf"
        path.write_text("".join(f"{key} = {value}\n" for key, value in conf.items()))
        self._chown(path)

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.base_dir / _STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        path = self.base_dir / _STATE_FILE
        state = {
            "port": self.port,
            "superuser_password": self.superuser_password,
            "app": (
                {
                    "user": self.app.user,
                    "password": self.app.password,
                    "database": self.app.database,
                }
                if self.app
                else None
            ),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle)

    def _run_server_tool(
        self, tool: str, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self._run_as_postgres():
            kwargs.update(user=_RUN_AS, group=_RUN_AS, extra_groups=[])
        full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
        if self._run_as_postgres():
            full_env["HOME"] = str(self.base_dir)
        result = subprocess.run(
            [str(self.bindir / tool), *args],
            cwd=self.base_dir,
            env=full_env,
            # pg_ctl's postmaster keeps no handle on these pipes (it logs to -l).
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            **kwargs,
        )
        if check and result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise PgBedError(
                f"{tool} {args[0] if args else ''} failed ({result.returncode}): {output}"
            )
        return result


def _main(argv: list[str]) -> int:
    usage = "usage: cluster.py up|down DIR"
    if len(argv) != 2 or argv[0] not in {"up", "down"}:
        print(usage, file=sys.stderr)
        return 64
    command, directory = argv[0], Path(argv[1]).resolve()
    try:
        if command == "down":
            if (directory / _STATE_FILE).exists():
                PgCluster.open(directory).stop()
                print(f"stopped the cluster in {directory}", file=sys.stderr)
            return 0
        if (directory / _STATE_FILE).exists():
            cluster = PgCluster.open(directory)
            if not cluster.is_running():
                cluster.start()
        else:
            cluster = PgCluster.create(directory)
        cluster.ensure_app()
        print(f"cluster in {directory} listening on {cluster.host}:{cluster.port}", file=sys.stderr)
        print(cluster.dsn())
        return 0
    except PgBedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(_main(sys.argv[1:]))
