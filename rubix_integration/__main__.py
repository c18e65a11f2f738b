"""``python -m rubix_integration``: the command line."""

from __future__ import annotations

from rubix_integration.cli import main

main()
