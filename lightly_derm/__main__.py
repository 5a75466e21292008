"""``python -m lightly_derm`` runs the ``lightly-derm`` command line."""

import sys

from lightly_derm.cli import main

if __name__ == "__main__":
    sys.exit(main())
