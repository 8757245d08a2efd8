"""A real pgbouncer in front of a test-bed cluster (Debian's ``pgbouncer`` package).

``Pgbouncer.start(cluster, pool_mode="transaction")`` runs one on a free
loopback port (as the ``postgres`` user when we are root: pgbouncer refuses
to run as root) that logs into the cluster with the app role's password;
clients connect without one (``auth_type = trust``). ``.dsn()`` is the app
DSN through it. Standard library only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pgbed.cluster import PgBedError, PgCluster, free_port

__all__ = ["PGBOUNCER", "Pgbouncer"]

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class Pgbouncer:
    """One pgbouncer process; stop it with :meth:`stop` (or use it as a context manager)."""

    def __init__(self, cluster: PgCluster, base: Path, port: int, proc: subprocess.Popen[bytes]):
        self.cluster = cluster
        self.base = base
        self.port = port
        self.proc = proc

    @classmethod
    def start(cls, cluster: PgCluster, *, pool_mode: str = "transaction") -> Pgbouncer:
        if not Path(PGBOUNCER).exists():
            raise PgBedError("pgbouncer is not installed (apt-get install pgbouncer)")
        app = cluster.app
        assert app is not None
        base = Path(tempfile.mkdtemp(prefix="smd-pgb-"))
        port = free_port()
        (base / "users.txt").write_text(f'"{app.user}" "{app.password}"\n')
        (base / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={cluster.host} port={cluster.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {base / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\ndefault_pool_size = 4\nmax_client_conn = 200\n"
            f"logfile = {base / 'pgbouncer.log'}\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            for path in (base, base / "users.txt", base / "pgbouncer.ini"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            kwargs.update(user="postgres", group="postgres", extra_groups=[])
        proc = subprocess.Popen(
            [PGBOUNCER, str(base / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kwargs,
        )
        bouncer = cls(cluster, base, port, proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return bouncer
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        log = (base / "pgbouncer.log").read_text() if (base / "pgbouncer.log").exists() else ""
        bouncer.stop()
        raise PgBedError(f"pgbouncer did not start:\n{log}")

    def dsn(self) -> str:
        app = self.cluster.app
        assert app is not None
        return f"postgresql://{app.user}@127.0.0.1:{self.port}/{app.database}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Pgbouncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
