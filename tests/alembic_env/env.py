"""The Alembic environment of the migrations tests: the example's own env.py.

The tests keep their own script directory (three revisions that record who
ran them) but run exactly the environment users copy from
``examples/migrations/env.py``, so that a change there is tested here.
"""

from __future__ import annotations

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "migrations" / "env.py"))
