"""The ``smd`` command: ``plan``, ``run``, ``check postgres`` and ``history``.

Exit codes (sysexits) are documented in the README and in ``EXIT_CODES``.
Bad input gets one line on stderr; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import signal
import sys
import traceback
from typing import Any, NoReturn

import anyio

from smd._failures import Failure, FailureKind
from smd._phase import InvalidPlan, Startup
from smd._policy import DecisionContext
from smd._redact import redact, redact_value
from smd._report import EXIT_CODES, Report, StartupFailed
from smd._settings import Settings, SettingsError, load_settings
from smd._target import TargetError, load_target

__all__ = ["main"]


class UsageError(Exception):
    """Bad arguments: exit 64."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _parser() -> _Parser:
    p = _Parser(prog="smd", description="Async startup orchestrator: plan, run, check, history.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    plan = sub.add_parser(
        "plan", help="show order, waves, timeouts and bypass decisions (no network I/O)"
    )
    plan.add_argument(
        "target", metavar="TARGET", help="package.module:attr or path/to/file.py:attr"
    )
    plan.add_argument("--env", help="environment: development, staging, production, test")
    plan.add_argument("--format", choices=["text", "json"], default="text")

    run = sub.add_parser("run", help="run the startup, then exec CMD (after --) on ready/degraded")
    run.add_argument("target", metavar="TARGET")
    run.add_argument("--env")
    run.add_argument("--report", metavar="FILE", help="write the JSON report here")
    run.add_argument("--trace", metavar="FILE", help="write Chrome trace events here")
    run.add_argument("--sequential", action="store_true", help="run one phase at a time")

    check = sub.add_parser("check", help="probe one dependency and print the classified result")
    csub = check.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    pg = csub.add_parser("postgres", help="one PostgreSQL readiness check")
    pg.add_argument("dsn", metavar="DSN")
    pg.add_argument("--timeout", type=float, default=10.0, help="overall seconds (default 10)")
    pg.add_argument("--format", choices=["text", "json"], default="text")
    pg.add_argument("--env")

    hist = sub.add_parser("history", help="what has been learned, per target")
    hist.add_argument("--format", choices=["text", "json"], default="text")
    hist.add_argument("--env", help="environment whose settings compute the timeouts")
    return p


def _err(message: str) -> None:
    print(f"smd: {redact(message)}", file=sys.stderr)


def _settings(env: str | None) -> Settings:
    overrides: dict[str, Any] = {}
    if env is not None:
        overrides["environment"] = env
    return load_settings(**overrides)


def _configure_logs(settings: Settings) -> None:
    from smd._logging import configure_logging

    configure_logging(settings.log_format, settings.log_level)


# -- plan -------------------------------------------------------------------


def plan_document(startup: Startup, settings: Settings) -> dict[str, Any]:
    """Everything ``smd plan`` shows, as data. Reads history, never writes it."""
    from smd._matrix import BypassMatrix
    from smd._sequencer import StartupRun, default_store

    store = default_store(settings, readonly=True)
    run = StartupRun(startup, settings=settings, store=store)
    plan = run.plan
    phases: list[dict[str, Any]] = []
    for name in plan.order:
        phase = plan.phase(name)
        target = run.target(phase)
        history = store.load(target)
        timeout = run.compute_timeout(phase, history)
        policy = run.policy_for(phase)
        if isinstance(policy, BypassMatrix):
            verdicts = policy.preview(run.env, phase.essential, phase=name, history=history)
        else:
            ctx = DecisionContext(
                phase=name,
                environment=run.env,
                essential=phase.essential,
                target=target,
                history=history,
                clock=run.clock,
            )
            verdicts = {
                k: policy.decide(Failure(k, f"dry run: a {k.value} failure"), ctx)
                for k in FailureKind
            }
        decisions = {k.value: verdicts[k].to_dict() for k in FailureKind}
        phases.append(
            {
                "name": name,
                "wave": plan.wave_of(name),
                "requires": list(phase.requires),
                "essential": phase.essential,
                "target": target,
                "timeout": timeout.to_dict(),
                "bypass": decisions,
                "recovery_probe": phase.recovery is not None,
            }
        )
    doc = {
        "startup": startup.name,
        "environment": run.env,
        "budget": settings.startup_budget,
        "order": list(plan.order),
        "waves": [list(w) for w in plan.waves],
        "phases": phases,
    }
    redacted: dict[str, Any] = redact_value(doc)
    return redacted


def _render_plan(doc: dict[str, Any]) -> str:
    lines = [
        f"startup {doc['startup']!r}: {len(doc['order'])} phases in {len(doc['waves'])} waves "
        f"(environment {doc['environment']}, budget {doc['budget']:g}s; dry run, no network I/O)",
        "order: " + " -> ".join(doc["order"]),
    ]
    for i, wave in enumerate(doc["waves"]):
        lines.append(f"wave {i}: {', '.join(wave)}")
    lines.append("")
    lines.append("timeouts:")
    for p in doc["phases"]:
        t = p["timeout"]
        per = f", per attempt {t['attempt_seconds']:.3g}s" if t.get("attempt_seconds") else ""
        lines.append(f"  {p['name']}: {t['seconds']:.3g}s{per} [{t['source']}] {t['explanation']}")
    kinds = [k.value for k in FailureKind]
    lines.append("")
    lines.append("bypass decisions (fail = startup stops, continue = degraded):")
    width = max(len(p["name"]) for p in doc["phases"]) if doc["phases"] else 5
    lines.append("  " + "phase".ljust(width) + "  " + "  ".join(k[:14].ljust(14) for k in kinds))
    for p in doc["phases"]:
        cells = [p["bypass"][k]["action"].ljust(14) for k in kinds]
        lines.append("  " + p["name"].ljust(width) + "  " + "  ".join(cells))
    lines.append("")
    lines.append("reasons (phases whose reason is the same are listed together):")
    for k in kinds:
        groups: dict[str, list[str]] = {}
        for p in doc["phases"]:
            generic = p["bypass"][k]["reason"].replace(repr(p["name"]), "{phase}")
            groups.setdefault(generic, []).append(p["name"])
        for generic, names in groups.items():
            lines.append(f"  {k} [{', '.join(names)}]: {generic}")
    return "\n".join(lines)


def _cmd_plan(args: argparse.Namespace) -> int:
    settings = _settings(args.env)
    startup = load_target(args.target)
    doc = plan_document(startup, settings)
    print(json.dumps(doc, indent=2) if args.format == "json" else _render_plan(doc))
    return 0


# -- run --------------------------------------------------------------------


async def _run_async(startup: Startup, settings: Settings, sequential: bool) -> Report:
    from smd._sequencer import StartupRun

    run = StartupRun(startup, settings=settings, mode="sequential" if sequential else "concurrent")
    received: list[str] = []
    report: Report | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    received.append("sigterm" if signum == signal.SIGTERM else "sigint")
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        try:
            report = await run.start()
            await run.stop()
        except StartupFailed as exc:
            report = exc.report
        tg.cancel_scope.cancel()
    if received:
        assert run.report is not None
        return dataclasses.replace(run.report, interrupted=received[0])
    assert report is not None
    return report


def _cmd_run(args: argparse.Namespace, cmd: list[str]) -> int:
    settings = _settings(args.env)
    _configure_logs(settings)
    if cmd and shutil.which(cmd[0]) is None:
        raise UsageError(f"command not found after '--': {cmd[0]!r} (not on PATH)")
    startup = load_target(args.target)
    startup.plan()
    report = anyio.run(_run_async, startup, settings, args.sequential)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            fh.write(report.to_json())
    if args.trace:
        from smd._trace import write_trace

        write_trace(report, args.trace)
    print(report.summary(), file=sys.stderr)
    code = report.exit_code()
    if code != 0 or not cmd:
        return code
    env = dict(os.environ)
    env["SMD_STARTUP_STATE"] = report.state.value
    env["SMD_STARTUP_REASONS"] = json.dumps(list(report.reasons))
    if args.report:
        env["SMD_STARTUP_REPORT"] = os.path.abspath(args.report)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)  # same PID: signals reach the server directly
    return EXIT_CODES["application"]  # not reached: execvpe replaces us or raises


# -- check / history -----------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    import math

    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise UsageError(
            f"--timeout must be a positive finite number of seconds, got {args.timeout!r}"
        )
    settings = _settings(args.env)
    _configure_logs(settings)
    module: Any = importlib.import_module("checks.postgres")
    try:
        module.PostgresOptions.from_dsn(args.dsn).validate()
    except ValueError as exc:  # PostgresConfigError: its message never holds the password
        raise SettingsError(f"invalid DSN given to 'smd check postgres': {exc}") from None
    result = anyio.run(module.check_command, args.dsn, args.timeout)
    if args.format == "json":
        print(json.dumps(redact_value(result.to_dict()), indent=2))
    else:
        print(redact(result.render_text()))
    code: int = module.exit_code_for(result)
    return code


def _cmd_history(args: argparse.Namespace) -> int:
    from smd._history_view import render_text, summarize
    from smd._sequencer import default_store
    from smd._settings import Environment
    from smd._timeout_base import TimeoutContext
    from smd.timeouts import AdaptiveTimeout

    settings = _settings(args.env)
    _configure_logs(settings)
    store = default_store(settings, readonly=True)

    def env_of(target: str) -> Environment:
        try:
            return Environment.parse(target.rpartition("@")[2])
        except ValueError:
            return settings.environment

    def context_for(target: str) -> TimeoutContext:
        env = env_of(target)
        return TimeoutContext(
            env.value,
            settings.timeouts.for_env(env),
            settings.timeouts.profile,
            settings.timeouts.min_samples,
        )

    summaries = summarize(
        store,
        lambda target: AdaptiveTimeout(),
        context_factory=context_for,
        half_life_hours=settings.bypass.success_half_life_hours,
    )
    if args.format == "json":
        print(json.dumps(redact_value([s.to_dict() for s in summaries]), indent=2))
    else:
        print(redact(render_text(summaries)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``smd`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1 :]
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        if cmd and args.command != "run":
            raise UsageError("'-- CMD' is only accepted by 'smd run'")
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "run":
            return _cmd_run(args, cmd)
        if args.command == "check":
            return _cmd_check(args)
        return _cmd_history(args)
    except UsageError as exc:
        _err(f"usage error: {exc}")
        return EXIT_CODES["usage"]
    except TargetError as exc:
        if debug:
            traceback.print_exc()
        _err(str(exc))
        return EXIT_CODES["usage"]
    except InvalidPlan as exc:
        _err(f"invalid plan: {exc}")
        return EXIT_CODES["invalid_plan"]
    except SettingsError as exc:
        _err(str(exc))
        return EXIT_CODES["invalid_settings"]
    except KeyboardInterrupt:
        return EXIT_CODES["sigint"]
    except BrokenPipeError:
        # `smd history | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _err(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_CODES["application"]
