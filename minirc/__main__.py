"""``python -m minirc ...``: the command line of :mod:`minirc.cli`."""
import sys

from minirc.cli import main

if __name__ == "__main__":
    sys.exit(main())
