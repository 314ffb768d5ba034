"""Text reports pad by display width: CJK class names (two terminal columns per character) keep
`qtl evaluate`'s per-class table and confusion matrix, and the text tables, in line."""

from __future__ import annotations

import re
import unicodedata
from types import SimpleNamespace

from qtl.cli.output import display_width, format_evaluation, format_noise_table

NAMES = ["蜜蜂", "ants", "オオスズメバチ"]  # 4, 4 and 14 columns: the widest sets the column width


def columns(text: str) -> int:
    """Terminal columns of `text`, counted here on their own: 'W' and 'F' characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def field_ends(line: str) -> list[int]:
    """The display column where each space-separated field of `line` ends."""
    return [columns(line[: m.end()]) for m in re.finditer(r"\S+", line)]


def field_starts(line: str) -> list[int]:
    return [columns(line[: m.start()]) for m in re.finditer(r"\S+", line)]


def report() -> list[str]:
    n = len(NAMES)
    metrics = {
        "accuracy": 0.5,
        "loss": 0.7,
        "roc_auc": None,
        "macro_f1": 0.4,
        "n": 30,
        "class_names": NAMES,
        "per_class": {c: {"precision": 0.5, "recall": 0.25, "f1": 0.3333, "support": 10} for c in NAMES},
        "confusion_matrix": [[10 * (i == j) + j for j in range(n)] for i in range(n)],
    }
    config = SimpleNamespace(variant="linear", backbone="resnet18", is_quantum=False)
    loaded = SimpleNamespace(model_config=config, backbone_weights="random-init")
    return format_evaluation("m.pt", loaded, "data", "val", metrics).splitlines()


def block(lines: list[str], head: str, n: int) -> list[str]:
    """The header line that starts with `head` (stripped) and the n lines after it."""
    i = next(k for k, line in enumerate(lines) if line.strip().startswith(head))
    return lines[i : i + n + 1]


def test_display_width():
    assert [display_width(s) for s in ("ants", "蜜蜂", "ＡＢ", "é", "e\u0301", "")] == [4, 4, 4, 1, 1, 0]


def test_per_class_table_lines_up_by_display_width():
    table = block(report(), "class", len(NAMES))
    header = field_ends(table[0])
    for line, name in zip(table[1:], NAMES, strict=True):
        assert line.startswith(name)
        assert field_ends(line)[1:] == header[1:], (
            line
        )  # precision, recall, f1, support end where their heads do
    assert len({columns(line) for line in table}) == 1


def test_confusion_matrix_lines_up_by_display_width():
    lines = report()
    i = lines.index("confusion matrix (rows: true class, columns: predicted)")
    header, rows = lines[i + 1], lines[i + 2 : i + 2 + len(NAMES)]
    heads = field_ends(header)
    assert len(heads) == len(NAMES)
    for line, name in zip(rows, NAMES, strict=True):
        assert line.startswith(name)
        assert field_ends(line)[1:] == heads, line  # each count ends under its class name
    assert len({columns(line) for line in [header, *rows]}) == 1


def test_text_tables_line_up_by_display_width():
    rows = [
        {"model": "蜜蜂-quantum.pt", "setting": "ideal", "accuracy": 0.9, "seconds": 1.0},
        {"model": "ants.pt", "setting": "depolarizing=0.01", "accuracy": 0.8, "seconds": 2.0},
    ]
    lines = format_noise_table(rows).splitlines()
    assert len({tuple(field_starts(line)[1:]) for line in lines[1:]}) == 1
    assert field_starts(lines[0])[1] == field_starts(lines[1])[1]  # "setting" starts over its column
