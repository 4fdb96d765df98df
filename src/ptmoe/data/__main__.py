"""python -m ptmoe.data prepare|list [--cache-dir DIR] [--force]"""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
