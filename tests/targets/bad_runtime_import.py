"""A TARGET whose module raises while it is imported (reading a missing setting)."""

from __future__ import annotations

import os

DSN = os.environ["BAD_REQUIRED_VARIABLE_THAT_IS_NOT_SET"]
