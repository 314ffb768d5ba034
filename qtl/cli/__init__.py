"""The `qtl` command line: parse arguments -> config dataclasses -> one library call -> print.

    qtl train quantum --random-init --epochs 5         train a variant, save its best epoch
    qtl evaluate models/quantum-....pt --json          accuracy, per-class P/R/F1, confusion, ROC-AUC
    qtl predict ant.jpg bee.png -c a.pt -c b.pt        class probabilities, models side by side
    qtl draw --qubits 4 --depth 6 [--output fig.png]   the circuit as text or a figure
    qtl compare --seeds 3 --random-init                variants x seeds: a mean ± std table, JSON and CSV
    qtl noise a.pt b.pt --shots 0 100 --backends FakeManilaV2   accuracy under noise: table, CSV, plot
    qtl data [--path PATH]                             download (if needed) and verify a dataset
    qtl sweep study.toml [--backend processes|ray]     grids of runs into the results database, resumable
    qtl runs [--sweep NAME] [--csv F] [--report]       list, filter, export runs; statistics per cell
    qtl hardware run CKPT --backend FakeManilaV2 --mitigation none readout zne   one job on a device
    qtl export a.pt --format onnx -o a.onnx            the whole classifier as one portable graph
    qtl serve models/*.pt [--port 8000] [--ray]        a REST API for image uploads, micro-batched

Results go to stdout; progress bars, epoch lines and warnings go to stderr. Errors print one line,
`qtl: error: ...`, and exit non-zero (1, or 130 when interrupted); `--debug` shows the traceback.

| module       | holds                                                              |
|--------------|--------------------------------------------------------------------|
| `__init__`   | `main`: parse, run one command, turn expected errors into one line |
| `parser`     | the argparse parser (torch-free, so `--help` is fast)              |
| `commands`   | one handler per subcommand: arguments -> configs -> library call    |
| `progress`   | the stderr progress bar and the `fit()` callback that draws it     |
| `output`     | text tables and JSON/CSV documents printed or written by commands  |
| `hardware`   | `qtl hardware` (backends, estimate, run, resume, jobs): its parser and handlers |

torch, torchvision and PennyLane are imported only once a command runs.
"""

from __future__ import annotations

import logging
import os
import sys

from qtl.cli.parser import build_parser
from qtl.utils.words import error_line

# Imported inside main(): everything past the parser, so `qtl --help` answers without loading torch.


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures with a message meant for the user (DatasetError, ImageLoadError and CheckpointError are
    ValueErrors); anything else is a bug and keeps its traceback. Imports torch (via qtl.models.backbones)."""
    from qtl.models.backbones import WeightsUnavailableError
    from qtl.quantum.hardware.backends import HardwareUnavailableError
    from qtl.utils.download import DownloadError

    return (ValueError, TypeError, WeightsUnavailableError, DownloadError, OSError, HardwareUnavailableError)


SERVERS = frozenset({"serve"})
"""Commands that answer requests for as long as they run: they keep glibc's allocator defaults."""


def run() -> int:
    """The `qtl` program (and `python -m qtl`): `main`, with the process's allocator set for training
    steps (`qtl.utils.allocator.keep_freed_memory`) unless the command is a server (docs/hosting.md)."""
    return main(program=True)


def main(argv: list[str] | None = None, *, program: bool = False) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted).
    program: this process is the `qtl` program's own (see `run`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: a report names its own command
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if program and args.command not in SERVERS:
        from qtl.utils.allocator import keep_freed_memory

        keep_freed_memory()
    from qtl.cli.commands import HANDLERS, default_backbone
    from qtl.cli.progress import ProgressBar

    default_backbone.cache_clear()  # weights may have appeared (or the network gone) since the last command

    expected = expected_errors()
    logging.basicConfig(level=logging.WARNING, format="qtl: warning: %(message)s")
    bar = ProgressBar(enabled=not args.quiet)
    try:
        return HANDLERS[args.command](args, bar)
    except BrokenPipeError:  # `qtl runs | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        bar.close()
        if args.debug:
            raise
        print("qtl: error: interrupted", file=sys.stderr)
        return 130
    except expected as exc:
        bar.close()
        if args.debug:
            raise
        print(f"qtl: error: {error_line(exc)}", file=sys.stderr)
        return 1
