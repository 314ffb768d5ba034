"""`python -m qtl ...`: the `qtl` command line, for environments without the installed script."""

import sys

from qtl.cli import main

if __name__ == "__main__":
    sys.exit(main())
