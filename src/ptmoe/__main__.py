"""`python -m ptmoe ...`, the same as the `ptmoe` command (where the package is on PYTHONPATH only)."""
from .cli import main

raise SystemExit(main())
