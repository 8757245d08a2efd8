"""The deployment examples, checked as they are deployed: examples/kubernetes.yaml,
examples/Dockerfile and the repository's .dockerignore.

- The manifest validates against the Kubernetes schemas offline (the strict
  schemas ``kubernetes-validate`` bundles: an unknown field is an error), and
  says what the issues ask: three replicas sharing the PostgreSQL history
  store from a Secret, the phases run once per pod (the lifespan alone), a
  restrictive securityContext, probes on smd's endpoints, a preStop delay and
  a grace period that covers it, uvicorn's drain and smd's teardown budget.
- The Dockerfile: an exact base image, pinned packages, a numeric non-root
  user, history under /tmp, and a HEALTHCHECK whose exact command is run
  against a real uvicorn serving the example (it fails while nothing
  listens, passes once the example is ready).
- The build context with the real container tool (``FROM scratch``: no
  registry needed): .dockerignore keeps the virtualenv, git, caches and local
  state out of it.
- The image itself is built and run (read-only root, no capabilities, as
  10001) where podman (or docker) can do it. The base image comes from a
  registry; where none is reachable and the image is not already present,
  the test says so and skips. ``EXAMPLE_BASE_IMAGE=<local image>`` builds on
  a local stand-in instead (``podman build --from``), to check everything
  else the Dockerfile does on such a machine.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from smd import load_settings

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "examples" / "kubernetes.yaml"
DOCKERFILE = REPO / "examples" / "Dockerfile"
PORT = 8000  # the port the Dockerfile's CMD and HEALTHCHECK use


# -- reading the files --------------------------------------------------------------------


def manifest() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def of_kind(kind: str) -> dict[str, Any]:
    (found,) = [d for d in manifest() if d["kind"] == kind]
    return found


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = of_kind("Deployment")["spec"]["template"]["spec"]
    return spec


def app_container() -> dict[str, Any]:
    (container,) = pod()["containers"]
    return container  # type: ignore[no-any-return]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        name, _, args = line.partition(" ")
        out.append((name.upper(), " ".join(args.split())))
    return out


def instruction(name: str) -> list[str]:
    return [args for n, args in instructions() if n == name]


def exec_form(name: str) -> list[str]:
    (args,) = instruction(name)
    value: list[str] = json.loads(args)
    return value


def healthcheck_command() -> str:
    """The shell command of the HEALTHCHECK (what Docker runs with /bin/sh -c)."""
    (args,) = instruction("HEALTHCHECK")
    _options, sep, command = args.partition(" CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    return command


def example_app(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``examples.fastapi_app``, imported as uvicorn imports it (from the repository root)."""
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("examples.fastapi_app")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As a server binds (uvicorn does too): TIME_WAIT left by a client is no use.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- the manifest -------------------------------------------------------------------------


def test_the_manifest_validates_offline_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate  # type: ignore[import-untyped]
    from kubernetes_validate.utils import ValidationError  # type: ignore[import-untyped]

    docs = manifest()
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "PodDisruptionBudget"]
    for version in ("1.29.0", kubernetes_validate.latest_version()):
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)
    # The strict schemas catch what a typo would silently drop.
    typo = copy.deepcopy(docs[0])
    security = typo["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    with pytest.raises(ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(typo, "1.29.0", strict=True)
    # Offline: the schemas ship in the wheel. Where a network namespace of our
    # own can be made (root), the command line validates inside one.
    cli = [str(Path(sys.executable).with_name("kubernetes-validate"))]
    isolated = shutil.which("unshare") is not None and os.geteuid() == 0
    argv = (["unshare", "--net"] if isolated else []) + cli
    done = subprocess.run(
        [*argv, "--strict", "-k", "1.29.0", str(MANIFEST)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == 3, done.stdout


def test_three_replicas_share_the_history_store_and_run_the_phases_once_per_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = of_kind("Deployment")
    assert deployment["spec"]["replicas"] == 3
    container = app_container()
    env = env_of(container)
    # The shared store and the database come from a Secret, never a literal.
    for name in ("SMD_HISTORY_URL", "SMD_DATABASE_URL"):
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["name"]
    assert "postgresql://" not in json.dumps(container)
    # No emptyDir keeps the fleet's history: the only volume is /tmp, for the
    # read-only root filesystem, where the fallback store lives.
    volumes = pod()["volumes"]
    assert [(v["name"], "emptyDir" in v) for v in volumes] == [("tmp", True)]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    assert env["SMD_HISTORY_PATH"]["value"].startswith("/tmp/")
    # Once per pod: no init container, no smd run gate in front of uvicorn;
    # the image's CMD (uvicorn, whose lifespan runs the phases) is what runs.
    assert "initContainers" not in pod()
    assert "command" not in container
    assert "args" not in container
    assert instruction("ENTRYPOINT") == []
    cmd = exec_form("CMD")
    assert cmd[0] == "uvicorn"
    assert cmd[1] == "examples.fastapi_app:app"
    example = example_app(monkeypatch)
    assert example.app.router.lifespan_context is not None
    assert example.startup.name == "fastapi-example"
    # The Service and the disruption budget select these pods.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert of_kind("Service")["spec"]["selector"].items() <= labels.items()
    budget = of_kind("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["minAvailable"] < deployment["spec"]["replicas"]


def test_the_example_startup_migrates_once_per_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 14: the Kubernetes example runs a once-per-fleet migrations phase;
    # the app's startup (its lifespan) runs it, as the manifest says.
    from smd.phases.migrations import MigrationsPhase

    env = {e["name"]: e.get("value") for e in app_container().get("env", [])}
    assert env.get("EXAMPLE_MIGRATIONS") == "upgrade"  # the manifest turns them on
    monkeypatch.setenv("EXAMPLE_MIGRATIONS", "upgrade")
    sys.modules.pop("examples.fastapi_app", None)
    startup = example_app(monkeypatch).startup
    owners = [getattr(p.run, "__self__", None) for p in startup.phases]
    migrations = [m for m in owners if isinstance(m, MigrationsPhase)]
    assert len(migrations) == 1, (
        "examples/fastapi_app.py has no MigrationsPhase: the Kubernetes example's "
        f"once-per-fleet migrations are missing (phases: {[p.name for p in startup.phases]})"
    )
    assert migrations[0].mode == "upgrade"
    assert migrations[0].essential


def test_the_pod_is_locked_down_and_stops_within_its_grace_period() -> None:
    spec, container = pod(), app_container()
    user = int(instruction("USER")[0].split(":")[0])
    assert user > 0
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == user  # the image's own user
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # An immutable tag with IfNotPresent, or Always for a moving one.
    image, policy = container["image"], container["imagePullPolicy"]
    tag = image.rpartition("/")[2].partition(":")[2]
    assert policy in ("IfNotPresent", "Always")
    assert (tag and tag != "latest") or policy == "Always", image
    # The probes hit smd's endpoints, on the port uvicorn listens on.
    probes = {
        k: container[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert [p["path"] for p in probes.values()] == ["/startupz", "/readyz", "/livez"]
    (port,) = container["ports"]
    assert {p["port"] for p in probes.values()} == {port["name"]}
    cmd = exec_form("CMD")
    assert port["containerPort"] == int(cmd[cmd.index("--port") + 1]) == PORT
    # The startup window never cuts short a startup smd still allows.
    env = env_of(container)
    budget = float(env["SMD_STARTUP_BUDGET"]["value"])
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= budget + 20
    # Stopping: preStop's delay, then uvicorn's drain, then smd's teardown
    # budget, all within the grace period (which counts from preStop).
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    delay = float(pre_stop[1])
    assert delay >= 3  # the endpoints and proxies learn of the deletion asynchronously
    drain = float(cmd[cmd.index("--timeout-graceful-shutdown") + 1])
    stop_budget = float(env["SMD_STOP_BUDGET"]["value"])
    assert stop_budget == load_settings().stop_budget == 30.0
    assert spec["terminationGracePeriodSeconds"] >= delay + drain + stop_budget + 5


# -- the Dockerfile -----------------------------------------------------------------------


def test_the_dockerfile_is_pinned_non_root_and_read_only_friendly() -> None:
    (base,) = instruction("FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), base
    (install,) = [a for a in instruction("RUN") if a.startswith("pip install ")]
    words = shlex.split(install)
    requirements = [w for w in words[2 : words.index("&&")] if not w.startswith("-")]
    assert requirements[0] == "/src[alembic]"  # smd itself, from the copied sources
    pinned = {}
    for r in requirements[1:]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[a-z,]+\])?==([0-9][0-9A-Za-z.]*)", r)
        assert match is not None, f"not pinned: {r}"
        pinned[match[1].lower()] = match[3]
    assert {"fastapi", "uvicorn", "asyncpg", "anyio", "pydantic"} <= set(pinned)
    # A numeric non-root user (so runAsNonRoot can verify it), no login shell.
    (user,) = instruction("USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), user
    useradd = next(a for a in instruction("RUN") if "useradd" in a)
    assert f"--uid {user.split(':')[0]}" in useradd
    assert "nologin" in useradd
    # The app runs from /app, which holds no `smd` source tree to shadow the
    # installed package (uvicorn puts its working directory first on sys.path).
    steps = instructions()
    last_workdir = max(i for i, (name, _) in enumerate(steps) if name == "WORKDIR")
    assert steps[last_workdir] == ("WORKDIR", "/app")
    copied_to_app = [args for name, args in steps[last_workdir:] if name == "COPY"]
    assert copied_to_app == ["examples ./examples"]
    for args in instruction("COPY"):
        for source in args.split()[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} missing"
    # Writable state only under /tmp (an emptyDir or a tmpfs).
    env = " ".join(instruction("ENV"))
    assert re.search(r"SMD_HISTORY_PATH=/tmp/\S+", env), env
    # The HEALTHCHECK uses smd's own HTTP check on /readyz (the slim image has no curl).
    assert healthcheck_command().startswith(f"smd check http http://127.0.0.1:{PORT}/readyz")


def test_the_healthcheck_command_fails_then_passes_against_the_example_under_uvicorn(
    pg_dsn: str, tmp_path: Path
) -> None:
    if not port_free(PORT):
        pytest.skip(f"port {PORT} (the HEALTHCHECK's) is in use on this machine")
    command = healthcheck_command()
    bin_dir = str(Path(sys.executable).parent)  # where `smd` and `uvicorn` are installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        SMD_ENVIRONMENT="production",
        SMD_LOG_FORMAT="json",
        SMD_DATABASE_URL=pg_dsn,
        SMD_HISTORY_PATH=str(tmp_path / "smd" / "history.sqlite3"),
        HOME="/nonexistent",
    )

    def health() -> subprocess.CompletedProcess[str]:
        # As Docker runs a shell-form HEALTHCHECK: /bin/sh -c '<command>'.
        return subprocess.run(
            ["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=30
        )

    nothing = health()
    if "connection refused" not in nothing.stdout:
        pytest.skip(f"another server answers on port {PORT} on this machine: {nothing.stdout!r}")
    assert nothing.returncode == 1, nothing.stdout + nothing.stderr  # unhealthy, per the contract
    cmd = exec_form("CMD")
    cmd[cmd.index("--host") + 1] = "127.0.0.1"  # loopback only on a test machine
    server = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while port_free(PORT) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if server.poll() is not None:
            out = server.communicate()[0]
            if "address already in use" in out:
                pytest.skip(f"another server took port {PORT} on this machine meanwhile")
            pytest.fail(f"uvicorn exited: {out[-3000:]}")
        ok = health()
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "ready" in ok.stdout
        # Every probe path in the manifest is answered by the running example.
        container = app_container()
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert httpx.get(f"http://127.0.0.1:{PORT}{path}", timeout=5).status_code == 200
        server.send_signal(signal.SIGTERM)
        out = server.communicate(timeout=pod()["terminationGracePeriodSeconds"])[0]
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == -signal.SIGTERM, out[-3000:]
    assert "Application shutdown complete." in out


# -- with the container tool --------------------------------------------------------------


def container_tool() -> list[str]:
    """podman, or docker with a working engine; skip (saying why) when neither is there."""
    if shutil.which("podman"):
        return ["podman"]
    if shutil.which("docker"):
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
        if info.returncode == 0:
            return ["docker"]
    pytest.skip("no container tool: install podman (Debian: apt-get install -y podman)")


def build_args(tool: list[str]) -> list[str]:
    # podman: chroot isolation builds where nested containers cannot run, and
    # only the docker image format keeps a HEALTHCHECK.
    return ["--isolation=chroot", "--format", "docker"] if tool == ["podman"] else []


@pytest.fixture
def image_name() -> Iterator[str]:
    name = f"localhost/smd-example-test:{os.getpid()}-{time.time_ns() % 10**9}"
    yield name
    if shutil.which("podman") or shutil.which("docker"):
        tool = "podman" if shutil.which("podman") else "docker"
        subprocess.run([tool, "rmi", "-f", name], capture_output=True, timeout=60, check=False)


def test_the_build_context_leaves_out_what_dockerignore_names(image_name: str) -> None:
    tool = container_tool()
    with tempfile.TemporaryDirectory() as scratch:
        # The context as the real tool sends it, copied into an empty image.
        containerfile = Path(scratch) / "Containerfile"
        containerfile.write_text("FROM scratch\nCOPY . /context/\n")
        built = subprocess.run(
            [
                *tool,
                "build",
                *build_args(tool),
                "-q",
                "-f",
                str(containerfile),
                "-t",
                image_name,
                str(REPO),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert built.returncode == 0, built.stderr[-3000:]
        created = subprocess.run(
            [*tool, "create", image_name, "/none"], capture_output=True, text=True, check=True
        )
        cid = created.stdout.strip()
        try:
            archive = Path(scratch) / "context.tar"
            with archive.open("wb") as out:
                subprocess.run([*tool, "export", cid], stdout=out, check=True, timeout=120)
        finally:
            subprocess.run([*tool, "rm", "-f", cid], capture_output=True, check=False)
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("context/")]
    names = {m.name.removeprefix("context/") for m in members}
    size = sum(m.size for m in members)
    tops = {n.split("/")[0] for n in names if n}
    # What the image copies is there...
    assert {"pyproject.toml", "README.md", "LICENSE", "smd", "checks", "phases", "examples"} <= tops
    assert "smd/__init__.py" in names
    assert "examples/fastapi_app.py" in names
    # ...and nothing else of weight: no virtualenv, git, caches, local state.
    for left_out in (".venv", ".git", ".stage", ".smd", ".mypy_cache", ".ruff_cache", "tests"):
        assert left_out not in tops, left_out
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".sqlite3"))]
    assert not [n for n in names if n.endswith(".egg-info") or n.startswith("build/")]
    assert size < 5 * 1024 * 1024, f"{size} bytes in the build context"


def _base_image_or_skip(tool: list[str]) -> list[str]:
    """``--from`` arguments for a local stand-in, or [] once the pinned base is present."""
    standin = os.environ.get("EXAMPLE_BASE_IMAGE")
    if standin:
        return ["--from", standin]
    (base,) = instruction("FROM")
    if subprocess.run([*tool, "image", "inspect", base], capture_output=True).returncode == 0:
        return []
    try:
        pulled = subprocess.run(
            [*tool, "pull", base], capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"the base image {base} could not be pulled within 120 s")
    if pulled.returncode != 0:
        why = (pulled.stderr.strip().splitlines() or ["unknown error"])[-1]
        pytest.skip(
            f"the base image {base} is not present and no registry is reachable ({why[:300]}); "
            "set EXAMPLE_BASE_IMAGE to a local stand-in to build on it"
        )
    return []


def _ways_to_run(tool: list[str]) -> list[tuple[list[str], list[str]]]:
    """(global options, run options) to try, the usual first.

    Some machines (a VM that refuses raising resource limits, a hybrid
    cgroup hierarchy that crun rejects) need lower limits, or runc.
    """
    lower = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    ways: list[tuple[list[str], list[str]]] = [([], [])]
    if tool == ["podman"]:
        ways.append(([], lower))
        if shutil.which("runc"):
            ways.append((["--runtime", "runc"], lower))
    return ways


@pytest.mark.slow
def test_the_image_builds_and_serves_read_only_as_its_own_user(
    pg_dsn: str, image_name: str
) -> None:
    tool = container_tool()
    base = _base_image_or_skip(tool)
    if not port_free(PORT):
        pytest.skip(f"port {PORT} is in use on this machine (the container uses the host network)")
    built = subprocess.run(
        [
            *tool,
            "build",
            *build_args(tool),
            *base,
            "-f",
            str(DOCKERFILE),
            "-t",
            image_name,
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # As the manifest runs it: read-only root, /tmp writable, no capabilities,
    # no privilege escalation; the host network reaches the test's PostgreSQL.
    hardening = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
    hardening += ["--security-opt", "no-new-privileges", "--network", "host"]
    cid, errors, runtime = "", [], list[str]()
    for runtime, options in _ways_to_run(tool):
        started = subprocess.run(
            [
                *tool,
                *runtime,
                "run",
                "-d",
                *options,
                *hardening,
                "-e",
                f"SMD_DATABASE_URL={pg_dsn}",
                image_name,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if started.returncode == 0:
            cid = started.stdout.strip()
            break
        errors.append(started.stderr.strip()[-300:])
    if not cid:
        pytest.skip(f"{tool[0]} cannot run containers on this machine: {' | '.join(errors)}")
    try:
        deadline = time.monotonic() + 120
        healthy = None
        while time.monotonic() < deadline:
            if tool == ["podman"]:
                healthy = subprocess.run(
                    [*tool, *runtime, "healthcheck", "run", cid],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if healthy.returncode == 0:
                    break
            elif not port_free(PORT):
                break
            time.sleep(1)
        logs = subprocess.run([*tool, "logs", cid], capture_output=True, text=True).stdout
        assert healthy is None or healthy.returncode == 0, logs[-3000:]
        ready = httpx.get(f"http://127.0.0.1:{PORT}/readyz", timeout=5)
        assert ready.status_code == 200, logs[-3000:]
        assert ready.json()["state"] == "ready"
        user = subprocess.run(
            [*tool, "inspect", cid, "--format", "{{.Config.User}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert user == instruction("USER")[0]
        stopped = subprocess.run(
            [*tool, *runtime, "stop", "-t", str(pod()["terminationGracePeriodSeconds"]), cid],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert stopped.returncode == 0, stopped.stderr
        code = subprocess.run(
            [*tool, "inspect", cid, "--format", "{{.State.ExitCode}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert code == "0", logs[-3000:]  # SIGTERM: drained and torn down, not killed
    finally:
        subprocess.run([*tool, "rm", "-f", cid], capture_output=True, timeout=60, check=False)
