"""A TARGET whose import fails inside the module."""

raise RuntimeError("broken on purpose while importing")
