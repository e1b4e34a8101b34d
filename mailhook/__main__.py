"""Allows ``python -m mailhook``."""

from mailhook.cli import main

raise SystemExit(main())
