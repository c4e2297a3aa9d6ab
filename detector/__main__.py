"""``python -m detector``: the same entry point as the ``detector`` console script."""

import sys

from detector.cli import main

sys.exit(main())
