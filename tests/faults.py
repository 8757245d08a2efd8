"""The fault matrix: the single source of what ``smd run`` must do under each fault.

Plain data (:data:`FAULTS`), the rules that turn a fault, an environment and
a bypass mode into the expected outcome (:func:`expected`), and the docs
rendering of the same table (:func:`render_fault_matrix_markdown`).
``tests/test_fault_matrix.py`` runs the real CLI for every cell and checks it
against :func:`expected`; a test also checks that the table the docs site
shows at ``<!-- smd:fault-matrix -->`` in docs/reference/faults.md (rendered
by docs/_hooks.py) is exactly :func:`render_fault_matrix_markdown`.

This is a specification, written down independently of smd's code: the
environments' default modes, the exit codes and the kinds a conditional cell
may bypass are spelled out here rather than imported, so a change in smd that
moves any of them fails the test instead of silently moving the expectation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BYPASSABLE_KINDS",
    "DEFAULT_MODES",
    "ENVIRONMENTS",
    "EXIT_CODES",
    "FAULTS",
    "MODES",
    "Expected",
    "Fault",
    "Timing",
    "effective_mode",
    "expected",
    "fault",
    "render_fault_matrix_markdown",
]

Kind = Literal["infrastructure", "timeout", "configuration", "application", "unknown"]
Env = Literal["development", "staging", "production"]
Mode = Literal["default", "strict", "permissive", "conditional"]
History = Literal["none", "healthy"]
State = Literal["ready", "degraded", "failed"]
Timing = Literal[
    "ready",  # ready; no timing claim beyond finishing inside the deadline
    "ready_3_to_4s",  # ready no earlier than the fault clears (3 s) and within 4 s
    "config_fast",  # the whole phase ends within 1 s, after exactly one attempt
    "first_failure_fast",  # the first failure is classified within 1 s; retried to the deadline
    "at_deadline",  # cut off at the phase's deadline +-10%
    "by_deadline",  # retried, and over by the deadline (+10%)
]

ENVIRONMENTS: tuple[Env, ...] = ("development", "staging", "production")
MODES: tuple[Mode, ...] = ("default", "strict", "permissive", "conditional")

#: The bypass mode each environment uses when ``SMD_BYPASS__MODE`` is not set.
DEFAULT_MODES: dict[Env, Mode] = {
    "development": "permissive",
    "staging": "conditional",
    "production": "strict",
}

#: Exit code of a startup that failed with each kind (sysexits).
EXIT_CODES: dict[Kind, int] = {
    "infrastructure": 75,
    "timeout": 75,
    "configuration": 78,
    "application": 70,
    "unknown": 69,
}

#: The kinds a ``conditional`` cell may bypass (``SMD_BYPASS__ALLOWED_KINDS`` default).
BYPASSABLE_KINDS: frozenset[Kind] = frozenset({"infrastructure", "timeout"})

#: Deadlines (the environment's no-data default, ``SMD_TIMEOUTS__<ENV>__DEFAULT``).
#: Faults that are retried until the deadline get a short one so the grid stays
#: fast; the others a long one, so that "over within 1 s" proves no waiting.
SHORT_DEADLINE = 1.5
LONG_DEADLINE = 8.0


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault, how the tests make it real, and what smd must make of it.

    ``kind`` is ``None`` when startup must end ready (the fault heals or is
    only slowness). ``retried`` says whether the attempt loop tries again
    (only kinds that can heal are retried).
    """

    key: str
    title: str
    how: str
    kind: Kind | None
    retried: bool
    timing: Timing
    deadline: float
    sqlstate: str | None = None

    @property
    def kind_text(self) -> str:
        if self.kind is None:
            return "— (ready)"
        return f"{self.kind} ({self.sqlstate})" if self.sqlstate else self.kind


FAULTS: tuple[Fault, ...] = (
    Fault(
        "healthy",
        "healthy",
        "the test cluster (PostgreSQL 15, scram auth)",
        None,
        False,
        "ready",
        LONG_DEADLINE,
    ),
    Fault(
        "slow",
        "healthy but slow",
        "fault proxy adding 0.1 s before connecting and to every chunk",
        None,
        False,
        "ready",
        LONG_DEADLINE,
    ),
    Fault(
        "refused",
        "nothing listening",
        "a closed loopback port",
        "infrastructure",
        True,
        "first_failure_fast",
        SHORT_DEADLINE,
    ),
    Fault(
        "blackhole",
        "blackhole",
        "fault proxy accepting and never answering",
        "timeout",
        True,
        "at_deadline",
        SHORT_DEADLINE,
    ),
    Fault(
        "reset",
        "reset during the handshake",
        "fault proxy sending a TCP RST after the client's first bytes",
        "infrastructure",
        True,
        "by_deadline",
        SHORT_DEADLINE,
    ),
    Fault(
        "starting_3s",
        "57P03 for 3 s, then ready",
        "fault proxy answering 57P03 'the database system is starting up' for 3 s "
        "from the first connection, then forwarding",
        None,
        True,
        "ready_3_to_4s",
        LONG_DEADLINE,
    ),
    Fault(
        "hot_standby_off",
        "lasting 57P03 (hot standby off)",
        "a real standby with hot_standby=off",
        "infrastructure",
        True,
        "by_deadline",
        SHORT_DEADLINE,
        "57P03",
    ),
    Fault(
        "too_many",
        "too many connections",
        "a role with CONNECTION LIMIT 0",
        "infrastructure",
        True,
        "by_deadline",
        SHORT_DEADLINE,
        "53300",
    ),
    Fault(
        "wrong_password",
        "wrong password",
        "the app role with another password",
        "configuration",
        False,
        "config_fast",
        LONG_DEADLINE,
        "28P01",
    ),
    Fault(
        "missing_db",
        "missing database",
        "a database name that does not exist",
        "configuration",
        False,
        "config_fast",
        LONG_DEADLINE,
        "3D000",
    ),
    Fault(
        "unknown_host",
        "unknown host name",
        "a fake DNS server answering NXDOMAIN (EAI_NONAME), no real DNS traffic",
        "configuration",
        False,
        "config_fast",
        LONG_DEADLINE,
    ),
    Fault(
        "dns_again",
        "DNS temporarily failing",
        "a fake DNS server answering SERVFAIL (EAI_AGAIN), no real DNS traffic",
        "infrastructure",
        True,
        "first_failure_fast",
        SHORT_DEADLINE,
    ),
    Fault(
        "tls_not_offered",
        "TLS required, not offered",
        "sslmode=require against the test cluster (ssl off)",
        "configuration",
        False,
        "config_fast",
        LONG_DEADLINE,
    ),
    Fault(
        "not_postgres",
        "not PostgreSQL",
        "a fake server answering like HTTP",
        "configuration",
        False,
        "config_fast",
        LONG_DEADLINE,
    ),
)

_BY_KEY = {f.key: f for f in FAULTS}


def fault(key: str) -> Fault:
    """The fault named ``key``."""
    return _BY_KEY[key]


@dataclass(frozen=True, slots=True)
class Expected:
    """What one run must end with. ``action`` is the bypass decision (``None``: none made)."""

    state: State
    exit_code: int
    action: Literal["fail", "continue"] | None
    mode: str  # the mode in force: strict, permissive or conditional

    @property
    def cell(self) -> str:
        """The docs table cell: ``degraded (0)``."""
        return f"{self.state} ({self.exit_code})"


def effective_mode(env: Env, mode: Mode) -> str:
    """The mode in force: the forced one, else the environment's default."""
    return DEFAULT_MODES[env] if mode == "default" else mode


def expected(f: Fault, env: Env, mode: Mode, history: History = "none") -> Expected:
    """The outcome of ``smd run`` under fault ``f`` in ``env`` with ``mode``.

    Rules: a fault without a failure kind ends ready. Otherwise the mode in
    force decides: strict fails (exit code by kind); permissive continues
    degraded (exit 0); conditional continues only for a kind it may bypass
    *and* with evidence that the target is normally healthy -- with no
    history (a first start) it fails.
    """
    m = effective_mode(env, mode)
    if f.kind is None:
        return Expected("ready", 0, None, m)
    if m == "permissive" or (
        m == "conditional" and history == "healthy" and f.kind in BYPASSABLE_KINDS
    ):
        return Expected("degraded", 0, "continue", m)
    return Expected("failed", EXIT_CODES[f.kind], "fail", m)


_TIMING_TEXT: dict[Timing, str] = {
    "ready": "ready",
    "ready_3_to_4s": "ready 3 to 4 s after start",
    "config_fast": "over within 1 s, one attempt",
    "first_failure_fast": "first failure within 1 s, then retried to the deadline",
    "at_deadline": "cut off at the deadline ±10%",
    "by_deadline": "retried, over by the deadline",
}


def _column(f: Fault, env: Env | None, mode: Mode, history: History = "none") -> str:
    """One docs table cell; a forced mode must give the same outcome in every environment."""
    envs = ENVIRONMENTS if env is None else (env,)
    cells = {expected(f, e, mode, history).cell for e in envs}
    if len(cells) != 1:  # pragma: no cover - guards the docs table's compact layout
        raise AssertionError(f"{f.key}/{mode}: outcome differs across environments: {cells}")
    return cells.pop()


def render_fault_matrix_markdown() -> str:
    """The docs page's fault matrix (state and exit code of ``smd run`` per fault and mode)."""
    lines = [
        "| fault | made real by | kind | retried | timing | "
        + " | ".join(f"{e} (default: {DEFAULT_MODES[e]})" for e in ENVIRONMENTS)
        + " | forced strict | forced permissive | forced conditional"
        + " | staging, healthy history |",
        "|---|---|---|---|---|" + "---|" * (len(ENVIRONMENTS) + 4),
    ]
    for f in FAULTS:
        row = [
            f.title,
            f.how,
            f.kind_text,
            "yes" if f.retried else "no",
            _TIMING_TEXT[f.timing],
            *(_column(f, e, "default") for e in ENVIRONMENTS),
            *(_column(f, None, m) for m in ("strict", "permissive", "conditional")),
            _column(f, "staging", "default", "healthy"),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Cells are the startup's state and `smd run`'s exit code. A forced mode "
        "(`SMD_BYPASS__MODE`) gives the same outcome in every environment. "
        "`conditional` with no history of the target (a first start) fails; the last "
        "column is staging (conditional) after five healthy starts were recorded, where "
        "infrastructure and timeout failures are bypassed and configuration ones are not. "
        "Deadlines: "
        f"{SHORT_DEADLINE:g} s for faults retried until the deadline, {LONG_DEADLINE:g} s "
        "for the others. Every cell is one real `smd run` in `tests/test_fault_matrix.py`.",
    ]
    return "\n".join(lines) + "\n"
