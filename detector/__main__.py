"""``python -m detector``: the same entry point as the ``detector`` console script."""

import sys

from detector.cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn imports the parent's main module
    sys.exit(main())
