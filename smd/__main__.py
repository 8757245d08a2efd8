"""``python -m smd`` is the ``smd`` command."""

from smd._cli import main

raise SystemExit(main())
