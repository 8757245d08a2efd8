"""Write your own check: ready when a file exists (a sidecar's secrets, a ready marker).

A check is a secret-free ``target`` and one bounded ``probe`` that returns a
classified ``ProbeResult`` (smd.retry); ``smd check`` and ``CheckPhase`` do the
retrying, the deadlines and the bypass decisions.
"""

import os
import stat

import anyio

from smd import Failure, FailureKind
from smd.plugins import CheckSpec, Plugin
from smd.retry import ProbeResult


class FileCheck:
    def __init__(self, path: str) -> None:
        self.path, self.target = path, f"file://{path}"

    async def probe(self, attempt_seconds: float) -> ProbeResult:
        kind, why = FailureKind.CONFIGURATION, "not a regular file"
        try:
            with anyio.fail_after(attempt_seconds):  # a hung network mount: give up on it
                info = await anyio.to_thread.run_sync(os.stat, self.path, abandon_on_cancel=True)
            if stat.S_ISREG(info.st_mode):
                return ProbeResult(True, answered=True, summary=f"{info.st_size} bytes there")
        except FileNotFoundError:  # not written yet: waiting may help
            kind, why = FailureKind.INFRASTRUCTURE, "not there yet"
        except TimeoutError:  # an OSError too, so it comes first
            kind, why = FailureKind.TIMEOUT, "no answer from the file system"
        except OSError as exc:  # a file where a directory should be, ...
            why = exc.strerror or str(exc)
        return ProbeResult(False, Failure(kind, f"{self.target}: {why}"))


plugin = Plugin("file", checks=(CheckSpec("file", FileCheck, "a file exists", "a path"),))
