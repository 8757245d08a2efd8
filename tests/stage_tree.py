"""Stage the installed layout of the package for tools that cannot follow an editable install.

The wheel maps the repository's ``checks/`` and ``phases/`` folders to
``smd.checks`` and ``smd.phases``. At run time the editable install's import
hook does the same, but static tools (mypy, import-linter's grimp) read
directories, not import hooks. This builds ``.stage/smd`` as the wheel lays
it out, from symbolic links to the real files (so errors point at files you
can open, and nothing is copied or can go stale), and prints its root::

    python tests/stage_tree.py          # -> .stage
    MYPYPATH=.stage mypy ...            # what tests/run.sh does
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {"smd": ROOT / "smd", "smd/checks": ROOT / "checks", "smd/phases": ROOT / "phases"}


def stage(dest: Path) -> Path:
    """(Re)build the staged tree under ``dest`` and return ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    for rel, source in MAPPING.items():
        target = dest / rel
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file() and path.suffix in (".py", ".typed"):
                (target / path.name).symlink_to(path)
    return dest


if __name__ == "__main__":
    print(stage(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".stage"))
