"""`python -m qtl ...`: the `qtl` command line, for environments without the installed script."""

import sys

from qtl.cli import run

if __name__ == "__main__":
    sys.exit(run())
