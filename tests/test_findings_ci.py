"""What `qtl study` prints of a cell: its 95% interval cut at 0 and 1, as the text report cuts it (it
printed [0.286, 1.071] and [-0.005, 0.301]), and its cost in a unit that shows it (a 2-minute sweep
read "0.0 h of run time")."""

from __future__ import annotations

import pytest

from qtl.experiments.findings import _cell_table, findings
from qtl.experiments.stats import accuracy_interval, format_report
from qtl.utils.words import duration, error_line

BASE = {"backbone": "b", "weights": "imagenet", "dataset": "d", "split": "kfold-5", "n_classes": 2}


def rows(variant: str, accs: list[float]) -> list[dict]:
    cell = {**BASE, "variant": variant, "qubits": 2, "depth": 2, "lr": 4e-4, "epochs": 30}
    return [{**cell, "seed": s, "test_acc": a, "val_acc": a} for s, a in enumerate(accs)]


def test_a_study_cuts_each_interval_at_0_and_1():
    (section,) = findings(rows("quantum", [0.45, 0.72, 0.87]) + rows("linear", [0.0, 0.15, 0.3]))
    table = "\n".join(_cell_table(section))
    assert "[0.000, " in table and ", 1.000]" in table
    assert "-0." not in table and "1.0" not in table.replace("1.000]", "")
    assert "[0.0000, " in format_report(rows("linear", [0.0, 0.15, 0.3]), "test_acc")


@pytest.mark.parametrize(
    "cell, interval",
    [
        ({"metric": "test_acc", "ci_low": 0.286, "ci_high": 1.071}, (0.286, 1.0)),
        ({"metric": "val_acc", "ci_low": -0.005, "ci_high": 0.301}, (0.0, 0.301)),
        ({"metric": "val_loss", "ci_low": -0.1, "ci_high": 2.5}, (-0.1, 2.5)),  # not an accuracy
        ({"metric": "val_acc", "ci_low": None, "ci_high": None}, (None, None)),
    ],
)
def test_accuracy_interval(cell, interval):
    assert accuracy_interval(cell) == interval


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "n/a"),
        (0.00035, "0.35 ms"),
        (0.4, "400 ms"),
        (40, "40.0 s"),
        (120, "2.0 min"),
        (150, "2.5 min"),
        (5040, "1.4 h"),
        (0.9996, "1.0 s"),  # each unit picked after rounding: it read "1e+03 ms"
        (59.96, "1.0 min"),  # "60.0 s"
        (3599.9, "1.0 h"),  # "60.0 min"
    ],
)
def test_durations_in_a_unit_that_shows_them(seconds, text):
    """One formatter for the study's cost, the hardware estimates (CLI and app) and their tables."""
    assert duration(seconds) == text


@pytest.mark.parametrize(
    "exc, text",
    [
        (ValueError("a\n  b\tc "), "a b c"),  # torch's and Braket's messages span lines
        (KeyError(), "KeyError"),  # nothing to say: the type's name, never an empty line
        (RuntimeError("   \n"), "RuntimeError"),
    ],
)
def test_an_error_as_one_line(exc, text):
    """One rule for the CLI's "qtl: error: ...", the hardware page's and server's refusals and the sweep
    and hardware tables' error cells."""
    assert error_line(exc) == text
