"""The ``smd`` command: ``plan``, ``run``, ``check NAME``, ``history``.

Exit codes (sysexits) come from one table (``smd._exit``), documented in the
README. Bad input gets one line on stderr naming what is wrong and what is
accepted; a traceback only with ``--debug`` (and even then without secrets).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from smd._exit import EXIT_CODES, for_kind
from smd._redact import redact
from smd._settings import Settings
from smd._settings_keys import SettingsWarning
from smd._settings_load import load_settings
from smd._target import load_target
from smd.exceptions import InvalidPlan, OutputError, SettingsError, TargetError, UsageError
from smd.plugins import PluginWarning, checks

if TYPE_CHECKING:
    from pathlib import Path

    from smd._store import HistoryStore

__all__ = ["main"]

_TARGET_HELP = "package.module:attr or path/to/file.py:attr naming a smd.Startup"
_ENV_HELP = "environment: development, staging, production or test (default: SMD_ENVIRONMENT)"
_FORMAT_HELP = "output format (default: text)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _Version(argparse.Action):
    """``--version``: the installed metadata is read when asked for, not for every command."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        import smd

        print(f"smd {smd.__version__}")
        parser.exit()


def _parser() -> _Parser:
    p = _Parser(prog="smd", description="Async startup orchestrator: plan, run, check, history.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("--version", action=_Version, help="show the installed version and exit")
    sub = p.add_subparsers(
        dest="command",
        required=True,
        parser_class=_Parser,
        metavar="COMMAND",
        help="what to do (smd COMMAND --help for its options)",
    )

    plan = sub.add_parser(
        "plan", help="show order, waves, timeouts and bypass decisions (no network I/O)"
    )
    plan.add_argument("target", metavar="TARGET", help=_TARGET_HELP)
    plan.add_argument("--env", help=_ENV_HELP)
    plan.add_argument("--format", choices=["text", "json"], default="text", help=_FORMAT_HELP)

    run = sub.add_parser(
        "run",
        help="run the startup, then exec CMD (after --) on ready/degraded",
        usage="smd run [-h] [--env ENV] [--report FILE] [--trace FILE] [--sequential] "
        "TARGET [-- CMD ...]",
        description="Run the startup's phases as a gate. On ready or degraded, exec CMD "
        "(everything after '--') in this process: same PID, so signals reach the server. "
        "Without CMD, exit 0. Otherwise exit with the code that says why not.",
        epilog="-- CMD ...  the server to exec on ready/degraded, e.g. -- uvicorn app:app; "
        "it gets SMD_STARTUP_STATE, SMD_STARTUP_REASONS and (with --report) SMD_STARTUP_REPORT",
    )
    run.add_argument("target", metavar="TARGET", help=_TARGET_HELP)
    run.add_argument("--env", help=_ENV_HELP)
    run.add_argument("--report", metavar="FILE", help="write the JSON report here (0600)")
    run.add_argument(
        "--trace", metavar="FILE", help="write Chrome trace events here (open in Perfetto)"
    )
    run.add_argument("--sequential", action="store_true", help="run one phase at a time")

    check_help = "probe one dependency and print the classified result"
    check = sub.add_parser("check", help=check_help, description=check_help)
    csub = check.add_subparsers(
        dest="check",
        required=True,
        parser_class=_Parser,
        metavar="NAME",
        help="the check to run (checks come from plugins; smd check NAME --help)",
    )
    for name, spec in sorted(checks().items()):
        c = csub.add_parser(name, help=spec.help, description=spec.help)
        c.add_argument("check_target", metavar="TARGET", help=spec.target_help)
        c.add_argument("--timeout", type=float, default=10.0, help="overall seconds (default 10)")
        c.add_argument("--format", choices=["text", "json"], default="text", help=_FORMAT_HELP)
        c.add_argument("--env", help=_ENV_HELP)

    hist = sub.add_parser("history", help="what has been learned, per target")
    hist.add_argument("--format", choices=["text", "json"], default="text", help=_FORMAT_HELP)
    hist.add_argument("--env", help="environment whose settings compute the timeouts")
    hist.add_argument(
        "--html",
        metavar="FILE",
        help="write the dashboard to FILE instead: one self-contained HTML page (0600)",
    )
    _history_commands(hist)
    return p


def _history_commands(hist: argparse.ArgumentParser) -> None:
    """``smd history export|import|replay``; without one, ``smd history`` shows the view."""
    hsub = hist.add_subparsers(
        dest="history_command",
        parser_class=_Parser,
        metavar="{export,import,replay}",
        help="carry history over or replay it (smd history COMMAND --help); "
        "none: show what has been learned",
    )
    # Distinct dests: a subcommand's defaults would overwrite the view's
    # options given before it (`smd history --env staging replay`).
    env_help = "environment whose settings name the store and bound the deadlines"
    export = hsub.add_parser(
        "export",
        help="write every target's history to FILE (versioned JSON, no secrets; - for stdout)",
    )
    export.add_argument("file", metavar="FILE", help="where to write (0600); - for stdout")
    export.add_argument("--env", dest="sub_env", metavar="ENV", help=env_help)
    imp = hsub.add_parser(
        "import",
        help="merge an export into this store (by target; present samples are skipped)",
    )
    imp.add_argument(
        "file", metavar="FILE", help="a file written by 'smd history export'; - for stdin"
    )
    imp.add_argument("--env", dest="sub_env", metavar="ENV", help=env_help)
    rep = hsub.add_parser(
        "replay",
        help="replay recorded starts through the current policy and fixed 600/30/5 s, RFC 6298",
    )
    rep.add_argument("--target", action="append", metavar="T", help="only this target (repeatable)")
    rep.add_argument("--env", dest="sub_env", metavar="ENV", help=env_help)
    rep.add_argument("--format", dest="sub_format", choices=["text", "json"], help=_FORMAT_HELP)


def _err(message: str) -> None:
    print(f"smd: {redact(message)}", file=sys.stderr)


def _settings(env: str | None) -> Settings:
    overrides: dict[str, Any] = {}
    names: Mapping[str, str] = {}
    if env is not None:
        overrides["environment"] = env
        names = {"environment": "--env"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SettingsWarning)
        settings = load_settings(argument_names=names, **overrides)
    for warning in caught:  # an unknown SMD_* variable: one line each
        _err(f"warning: {warning.message}")
    return settings


def _configure_logs(settings: Settings) -> None:
    from smd._logging import configure_logging

    configure_logging(settings.log_format, settings.log_level)


def _cmd_plan(args: argparse.Namespace) -> int:
    from smd._cli_plan import plan_document, render_plan

    settings = _settings(args.env)
    startup = load_target(args.target)
    doc = plan_document(startup, settings)
    print(json.dumps(doc, indent=2) if args.format == "json" else render_plan(doc))
    return 0


def _cmd_run(args: argparse.Namespace, cmd: list[str]) -> int:
    from smd._cli_run import run_command

    settings = _settings(args.env)
    _configure_logs(settings)
    startup = load_target(args.target)
    startup.plan()
    return run_command(
        startup,
        settings,
        sequential=args.sequential,
        report_path=args.report,
        trace_path=args.trace,
        cmd=cmd,
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from smd.plugins import check_spec
    from smd.retry import wait_ready

    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise UsageError(
            f"--timeout must be a positive finite number of seconds, got {args.timeout!r}"
        )
    settings = _settings(args.env)
    _configure_logs(settings)
    spec = check_spec(args.check)
    try:
        check = spec.factory(args.check_target)
    except ValueError as exc:  # the factory's message never holds a secret
        raise SettingsError(f"invalid TARGET given to 'smd check {spec.name}': {exc}") from None
    # One bounded wait: retried while the failure can heal, a single attempt
    # may use the whole timeout.
    result = anyio.run(
        lambda: wait_ready(check, deadline_seconds=args.timeout, attempt_seconds=args.timeout)
    )
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(redact(result.render_text()))
    if result.ok:
        return 0
    assert result.failure is not None
    return for_kind(result.failure.kind)


def _cmd_history(args: argparse.Namespace) -> int:
    """``smd history`` (the view, ``--html``) and ``export|import|replay``.

    Every one of them opens the store through ``open_history``: the one the
    settings name, never the embedded store in place of an unreachable shared
    one (exit 75, one line). The logic is in smd._history_view,
    smd._dashboard, smd._history_transfer and smd._replay.
    """
    from smd import _history_file as file
    from smd import _history_transfer as transfer
    from smd.exceptions import StoreUnavailable

    command: str | None = args.history_command
    html_path = None
    if args.html is not None:
        if command is not None:
            raise UsageError(f"--html shows the dashboard; it does not go with '{command}'")
        from smd._cli_run import check_output_path

        html_path = check_output_path("--html", args.html)
    if command == "export" and args.file != "-":
        from smd._cli_run import check_output_path

        check_output_path("FILE", args.file)
    records = file.read_export(args.file) if command == "import" else ()
    settings = _settings(getattr(args, "sub_env", None) or args.env)
    _configure_logs(settings)
    try:
        store = transfer.open_history(settings, readonly=command != "import")
        if command is None:
            _show_history(args, store, settings, html_path)
            return 0
        where = transfer.describe_store(store)
        if command == "export":
            doc = file.export_document(store)
            file.write_export(args.file, doc)
            # With "-" the document is stdout: the summary goes to stderr.
            print(
                file.render_export(doc, args.file, where),
                file=sys.stderr if args.file == "-" else sys.stdout,
            )
        elif command == "import":
            result = transfer.import_records(store, records)
            print(redact(transfer.render_import(result, args.file, where)))
        else:
            from smd._replay import render_replay, replay_store

            replays = replay_store(store, settings, targets=args.target)
            if (args.sub_format or args.format) == "json":
                print(json.dumps([r.to_dict() for r in replays], indent=2))
            else:
                print(redact(render_replay(replays)))
    except StoreUnavailable as exc:
        _err(f"history{'' if command is None else ' ' + command}: {exc}")
        return EXIT_CODES["infrastructure"]
    return 0


def _show_history(
    args: argparse.Namespace, store: HistoryStore, settings: Settings, html_path: Path | None
) -> None:
    """The view: text, ``--format json`` or the ``--html`` dashboard."""
    if html_path is not None:
        from smd._dashboard import write_dashboard

        count = write_dashboard(html_path, store, settings)
        print(
            f"smd: wrote the dashboard of {count} target{'' if count == 1 else 's'} to {html_path}"
        )
        return
    from smd._history_view import render_text, summarize

    summaries = summarize(store, settings)
    if args.format == "json":
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
    else:
        print(redact(render_text(summaries)))


def _dispatch(args: argparse.Namespace, cmd: list[str]) -> int:
    if cmd and args.command != "run":
        raise UsageError("'-- CMD' is only accepted by 'smd run'")
    if args.command == "plan":
        return _cmd_plan(args)
    if args.command == "run":
        return _cmd_run(args, cmd)
    if args.command == "check":
        return _cmd_check(args)
    return _cmd_history(args)


def _traceback() -> None:
    # Tracebacks print source lines, which may hold a DSN literal: redact them.
    print(redact(traceback.format_exc()), file=sys.stderr, end="")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``smd`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1 :]
    debug = "--debug" in argv
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PluginWarning)
            parser = _parser()
        for warning in caught:  # a broken plugin: one line each, then carry on
            _err(f"warning: {warning.message}")
        return _dispatch(parser.parse_args(argv), cmd)
    except UsageError as exc:
        _err(f"usage error: {exc}")
        return EXIT_CODES["usage"]
    except TargetError as exc:
        if debug:
            _traceback()
        _err(str(exc))
        return EXIT_CODES["usage"]
    except InvalidPlan as exc:
        _err(f"invalid plan: {exc}")
        return EXIT_CODES["invalid_plan"]
    except OutputError as exc:
        _err(str(exc))
        return EXIT_CODES["output"]
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
            _traceback()
        hint = "" if debug else " (run with --debug for the traceback)"
        _err(f"internal error: {type(exc).__name__}: {exc}{hint}")
        return EXIT_CODES["application"]
