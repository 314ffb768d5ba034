"""Progress on stderr: `ProgressBar` (a redrawn terminal line, or sparse log lines) and `BarCallback`,
the `fit()` callback that draws it. Imported only when a command runs (qtl.training.fit imports torch)."""

from __future__ import annotations

import sys
import time

from qtl.experiments.runs import RunObserver
from qtl.experiments.sweeps import SweepObserver
from qtl.training.fit import Callback, Progress
from qtl.utils.words import duration


class ProgressBar:
    """One redrawn line on a terminal; on anything else (a log file, CI) a sparse line every
    `interval` seconds and at the end of each phase, so logs stay short."""

    def __init__(self, stream=None, *, enabled: bool = True, interval: float = 10.0, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if not self.tty else 0.1
        self.width = width
        self._shown = 0.0  # monotonic time of the last draw
        self._open = False  # a terminal line is waiting for its newline
        self._phase: tuple | None = None
        self._start = 0.0
        self._done = 0

    def update(
        self, done: int, total: int, label: str, info: str = "", unit: str = "", end_line: bool = True
    ) -> None:
        """Show `done` of `total` (total 0: unknown). A new label, or `done` going back, starts a phase.

        end_line: off a terminal, print a line when the phase completes (off when another line follows).
        """
        if not self.enabled:
            return
        now = time.monotonic()
        if self._phase != (label, total) or done < self._done:
            self._phase, self._start = (label, total), now
            self._shown = 0.0 if self.tty else now  # logs get no line for a phase's first step
        self._done = done
        finished = total > 0 and done >= total
        if (not finished and now - self._shown < self.interval) or (
            finished and not self.tty and not end_line
        ):
            return
        self._shown = now
        frac = min(done / total, 1.0) if total else 0.0
        count = f"{_amount(done, unit)}/{_amount(total, unit)}" if total else _amount(done, unit)
        elapsed = now - self._start
        eta = f", eta {elapsed / frac - elapsed:.0f}s" if 0 < frac < 1 and elapsed > 1 else ""
        fill = int(frac * self.width)
        text = f"{label} [{'#' * fill}{'.' * (self.width - fill)}] {count} {elapsed:.0f}s{eta}"
        text += f"  {info}" if info else ""
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._open = True
            if finished:
                self.close()
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the terminal line, so the next output starts on a fresh one."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def message(self, text: str) -> None:
        """A line of its own on the stream (progress talk: silent when the bar is disabled)."""
        if self.enabled:
            self.note(text)

    def note(self, text: str) -> None:
        """A line of its own on the stream that is said even with the bar disabled (--quiet): a warning."""
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()

    def hook(self, label: str, unit: str = ""):
        """A library `progress(done, total)` callback that draws this bar."""
        return lambda done, total: self.update(done, total, label, unit=unit)


def _amount(n: int, unit: str) -> str:
    return f"{n / 1e6:.1f}MB" if unit == "B" else str(n)


class BarCallback(Callback):
    """fit() callbacks -> the bar per batch; one line per epoch (or none, for compare's many runs)."""

    def __init__(self, bar: ProgressBar, prefix: str = "", epoch_lines: bool = True) -> None:
        self.bar, self.prefix, self.epoch_lines = bar, prefix, epoch_lines

    def on_batch_end(self, p: Progress) -> None:
        self.bar.update(
            p.batch,
            p.batches,
            f"{self.prefix}epoch {p.epoch}/{p.epochs}",
            f"loss {p.loss:.4f}",
            end_line=not self.epoch_lines,
        )

    def on_epoch_end(self, p: Progress) -> None:
        if self.epoch_lines:
            m = p.metrics
            best = "  *best" if p.best_epoch == p.epoch else ""
            self.bar.message(
                f"{self.prefix}epoch {p.epoch}/{p.epochs}: train loss {m['train_loss']:.4f} acc "
                f"{m['train_acc']:.3f} | val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} | "
                f"lr {m['lr']:.2g} | {m['time_s']:.1f}s{best}"
            )
        else:
            self.bar.close()


class RunsBar(RunObserver):
    """`qtl.experiments.runs.train_runs` progress for many runs: a bar per run, one line when each run
    ends."""

    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar

    @staticmethod
    def _prefix(index: int, total: int, run) -> str:
        return f"[{run.name} {index + 1}/{total}] "

    def callbacks(self, index, total, run):
        return [BarCallback(self.bar, self._prefix(index, total, run), epoch_lines=False)]

    def preparing(self, index, total, run):
        return self.bar.hook(self._prefix(index, total, run) + "extracting features")

    def finished(self, index, total, run, outcome):
        r = outcome.row
        acc = "n/a" if r["val_acc"] is None else f"{r['val_acc']:.4f}"
        self.bar.message(f"{self._prefix(index, total, run)}val acc {acc} (best epoch {r['best_epoch']})")


class SweepBar(SweepObserver, RunsBar):
    """`qtl sweep` progress: the plan, then a bar per local run and one line per finished run."""

    def __init__(self, bar: ProgressBar, backend: str) -> None:
        super().__init__(bar)
        self.backend = backend
        self.t0 = time.monotonic()

    @staticmethod
    def _prefix(index: int, total: int, run) -> str:
        return f"[{index + 1}/{total} {run.name}] "

    def planned(self, spec, runs, todo, earlier=0):
        from qtl.experiments.sweeps import sweep_notes

        done = len(runs) - len(todo)
        points = len(spec.points())
        same = f" ({points} grid points)" if points != len(runs) else ""
        self.bar.message(
            f"sweep {spec.name}: {len(runs)} runs{same}, {done} already done, "
            f"{len(todo)} to run ({self.backend})"
        )
        for note in sweep_notes(spec, runs, earlier=earlier):
            self.bar.note(f"qtl: note: {note.text}")

    def started(self, index, total, run):
        if self.backend != "local":
            self.bar.message(f"{self._prefix(index, total, run)}started")

    def ended(self, index, total, run, done):
        prefix = self._prefix(index, total, run)
        elapsed = time.monotonic() - self.t0
        if done.cancelled:  # a Ray task the Ctrl-C cancelled has no outcome: it stopped, it did not fail
            epochs = f" after {done.outcome.row['epochs_done']} epoch(s)" if done.outcome else ""
            self.bar.message(f"{prefix}stopped{epochs}; not counted")
        elif done.outcome is None:
            self.bar.message(f"{prefix}failed: {done.error}")
        else:
            r = done.outcome.row
            self.bar.message(
                f"{prefix}val acc {r['val_acc']:.4f} (best epoch {r['best_epoch']}, "
                f"{duration(done.outcome.wall_s)}; {duration(elapsed)} in all)"
            )
