"""Keeping secrets out of output: register a secret once, redact text everywhere.

Checks register the passwords they are given (and ``SMD_DATABASE_URL``'s
when settings load); smd redacts every log line, report, trace, error message
and ``--debug`` traceback with the same rule, which also masks the password
of any URL with a userinfo (``scheme://user:secret@host``, whatever the
password holds, percent-encoded or not) and ``password=`` values even when
nobody registered them. A check or phase written outside smd gets the same
protection::

    from smd.secrets import redact, register_secret

    register_secret(password)
    log.info("connecting", dsn=redact(dsn))
"""

from __future__ import annotations

from smd._redact import MASK, redact, register_secret

__all__ = ["MASK", "redact", "register_secret"]
