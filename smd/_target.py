"""Load a TARGET (``package.module:attr`` or ``path/to/file.py:attr``) naming a Startup."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from smd._startup import Startup
from smd.exceptions import InvalidPlan, TargetError

__all__ = ["load_target"]


_FORM = "expected 'package.module:attr' or 'path/to/file.py:attr' naming a smd.Startup"


def _a(obj: object) -> str:
    """What ``obj`` is, with its article: ``an int``, ``a Starlette``, ``None``."""
    if obj is None:
        return "None"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def load_target(spec: str) -> Startup:
    """Import TARGET and return the Startup it names.

    :class:`InvalidPlan` raised while the module declares its phases is
    passed through (it is an invalid plan, not a usage error).
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise TargetError(f"invalid TARGET {spec!r}: {_FORM}")
    try:
        if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
            path = Path(module_part)
            if not path.is_file():
                raise TargetError(f"TARGET file not found: {module_part!r} ({_FORM})")
            name = f"_smd_target_{path.stem}"
            mod_spec = importlib.util.spec_from_file_location(name, path)
            if mod_spec is None or mod_spec.loader is None:
                raise TargetError(f"cannot import TARGET file {module_part!r}")
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            # Let the file import its siblings, as `python path/to/file.py` would.
            sys.path.insert(0, str(path.resolve().parent))
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_part)
    except (TargetError, InvalidPlan):
        raise
    except ModuleNotFoundError as exc:
        raise TargetError(f"cannot import TARGET {spec!r}: no module named {exc.name!r}") from exc
    except SyntaxError as exc:
        raise TargetError(
            f"cannot import TARGET {spec!r}: syntax error in {exc.filename}:{exc.lineno}"
        ) from exc
    except Exception as exc:
        raise TargetError(
            f"cannot import TARGET {spec!r}: {type(exc).__name__} while importing: {exc}"
        ) from exc
    except SystemExit as exc:
        # A module that exits while being imported (a script's `sys.exit()` at
        # the top level) is a TARGET that cannot be imported, not smd's exit
        # code. KeyboardInterrupt still passes: it is the operator's, not the module's.
        raise TargetError(
            f"cannot import TARGET {spec!r}: its import called sys.exit({exc.code!r})"
        ) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise TargetError(f"TARGET {spec!r}: module has no attribute {attr!r}") from None
    if not isinstance(obj, Startup):
        raise TargetError(f"TARGET {spec!r} is {_a(obj)}, not a smd.Startup ({_FORM})")
    return obj
