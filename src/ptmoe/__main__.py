"""`python -m ptmoe ...`, the same as the `ptmoe` command (where the package is on PYTHONPATH only)."""

from .cli import main

if __name__ == "__main__":  # `ptmoe serve --engine vllm` spawns processes that re-import this module
    raise SystemExit(main())
