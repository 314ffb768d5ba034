"""What the commands print and write: evaluation and prediction reports, the compare table, and the
compare JSON and CSV files. Pure formatting: values in, text (or files) out; and `check_outputs`, which
every command runs on the files it is told to write before it writes (or computes) anything."""

from __future__ import annotations

import csv
import json
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

COMPARE_FIELDS = ("val_acc", "val_loss", "test_acc", "best_epoch", "train_time_s", "classical", "quantum")
"""The run fields `qtl compare` summarises as mean ± std per setup."""


REPORT_NAMES = (".csv", ".json", ".md", ".txt", ".png", ".pdf", ".svg")
"""The suffixes of reports and figures, as a refusal names them."""
REPLACEABLE_SUFFIXES = frozenset(
    ".csv .tsv .json .md .markdown .txt .log .html "  # reports
    ".png .pdf .svg .svgz .eps .ps .pgf .jpg .jpeg .tif .tiff .webp .avif .gif .raw .rgba".split()  # figures
)
"""What an existing file a command writes over may be (`check_outputs`): the reports and figures qtl
writes (the figure formats matplotlib saves), never a spec, a script or a database's side file."""


def check_outputs(outputs: Mapping[str, str | Path | None], inputs: Iterable[str | Path] = ()) -> None:
    """ValueError (one line) where a command writing these files would lose work: an output that is one
    of the command's `inputs` (its checkpoints, images, results database), a qtl checkpoint or any file
    torch.save writes, a model export (ONNX, TorchScript), each named as `qtl export` and `--runtime`
    name it (`qtl.models.checkpoint.describe_file`), or an SQLite database (a results database), or two
    outputs that name one file, or an output no file can be written at (`check_folder`: its folder, or
    the nearest that exists where the command makes it, is a file or not writable). An existing file is
    replaced only where it is a report or figure qtl writes (`REPLACEABLE_SUFFIXES`: an earlier CSV,
    JSON, Markdown, text or figure); any other file (a sweep spec, a database's -wal file, a script) is
    refused.

    outputs: {what to call it in the message (its flag, "--json"): path}; None and "-" (stdout) are
    skipped. Call it before any work, so a refusal costs nothing and writes nothing."""
    from qtl.utils.atomic import check_folder

    named = [(what, Path(p)) for what, p in outputs.items() if p is not None and str(p) != "-"]
    sources = [Path(p) for p in inputs if p is not None and Path(p).exists()]
    for i, (what, path) in enumerate(named):
        for other, earlier in named[:i]:
            if _same_file(path, earlier):
                raise ValueError(f"{other} and {what} both name {path}: name two files")
        if not path.is_file():
            check_folder(path, made=True)  # a file where its folder would be, a read-only disk
            continue  # nothing there to lose (a folder fails when written, in its own words)
        if any(_same_file(path, source) for source in sources):
            raise ValueError(f"{what} {path} is one of this command's inputs: name another file")
        kind = _model_or_database(path)
        if kind:
            raise ValueError(
                f"{what} {path} is {kind}: qtl writes no report or figure over one; name another file"
            )
        if path.suffix.lower() not in REPLACEABLE_SUFFIXES:
            held = f"a {path.suffix} file" if path.suffix else "a file without a suffix"
            raise ValueError(
                f"{what} {path} exists and is {held}, not a report or figure: qtl replaces only those "
                f"({', '.join(REPORT_NAMES)}); name another file or remove it first"
            )


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (a link or another spelling of the same path included)."""
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def _model_or_database(path: Path) -> str | None:
    """What `path` holds that no report may replace (a model file: `describe_file`, or an SQLite
    database), or None for any other file."""
    from qtl.models.checkpoint import describe_file

    if what := describe_file(path):
        return what
    try:
        with path.open("rb") as f:
            if f.read(16) == b"SQLite format 3\x00":
                return "an SQLite database (qtl's results database is one)"
    except OSError:
        pass  # writing it fails, in its own words
    return None


def display_width(text: str) -> int:
    """Terminal columns `text` takes: wide and full-width characters (CJK: 'W', 'F') two, combining marks
    none, the rest one."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def ljust(text: str, width: int) -> str:
    """`text` padded on the right to `width` display columns (`display_width`)."""
    return text + " " * max(0, width - display_width(text))


def rjust(text: str, width: int) -> str:
    """`text` padded on the left to `width` display columns (`display_width`)."""
    return " " * max(0, width - display_width(text)) + text


def format_evaluation(
    checkpoint: str, loaded, root: Path, split: str, m: dict, recorded: float | None = None
) -> str:
    """`qtl evaluate`'s text report: headline metrics, per-class P/R/F1 and the confusion matrix; with
    `recorded` (the checkpoint's own val accuracy, on the same data), that too where it differs."""
    c = loaded.model_config
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    trained = []
    if recorded is not None and abs(recorded - m["accuracy"]) > 1e-9:
        from qtl.analysis.inference import WHY_TRAINING_DIFFERS

        trained = [f"at training {recorded:.4f} ({WHY_TRAINING_DIFFERS})"]
    lines = [
        f"checkpoint  {checkpoint} ({c.variant}, {c.backbone} {loaded.backbone_weights})",
        f"data        {root} ({split}, {m['n']} images)",
        *([f"noise       {c.noise.label()}"] if c.is_quantum else []),
        f"accuracy    {m['accuracy']:.4f}",
        *trained,
        f"loss        {m['loss']:.4f}",
        f"ROC-AUC     {auc}",
        f"macro F1    {m['macro_f1']:.4f}",
        "",
    ]
    names = m["class_names"]
    w = max(8, *(display_width(n) for n in names)) + 2  # class names pad by display width (CJK: 2 each)
    lines.append(f"{'class':<{w}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name in names:
        r = m["per_class"][name]
        lines.append(
            ljust(name, w) + f"{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1']:>10.4f}{r['support']:>10}"
        )
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    lines.append(" " * w + "".join(rjust(n, w) for n in names))
    for name, row in zip(names, m["confusion_matrix"], strict=True):
        lines.append(ljust(name, w) + "".join(f"{v:>{w}}" for v in row))
    return "\n".join(lines)


IMBALANCE_WARNING = 3.0  # largest / smallest class in train above this gets a warning


def format_skipped(skipped: list[tuple[str, str]], limit: int = 10) -> str:
    """One block listing skipped files with their reasons (the first `limit`, then a count)."""
    lines = [f"skipped {len(skipped)} file(s):"] + [f"  {p}: {reason}" for p, reason in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)


def format_dataset(ds) -> str:
    """`qtl data`'s summary of a PreparedDataset: where, layout and split, counts per split and class, and
    its byte-identical images (`ds.check_duplicates()`: the manifest's, else found now)."""
    split = "" if ds.val_ratio is None else f", val split off: {ds.val_ratio:g} per class, seed {ds.seed}"
    lines = [
        f"dataset {ds.root}",
        f"source  {ds.source} ({ds.layout} layout{split})",
        f"classes {len(ds.classes)}: {', '.join(ds.classes)}",
    ]
    for split, counts in ds.counts.items():
        per_class = ", ".join(f"{c} {n}" for c, n in counts.items())
        lines.append(f"  {split}: {sum(counts.values())} images, {per_class}")
    if ds.imbalance > IMBALANCE_WARNING:
        lines.append(
            f"warning: classes are imbalanced ({ds.imbalance:.1f}x between the largest and smallest)"
        )
    dups = ds.check_duplicates()
    lines += [f"{level}: {said}" for level, said in dups.summary()]
    if not dups.found:
        lines.append(f"duplicates: none (SHA-256 of {dups.checked})")
    if ds.skipped:
        lines.append(format_skipped(ds.skipped))
    return "\n".join(lines)


def predictions_document(images: list[str], preds: dict) -> list[dict]:
    """`qtl predict --json`: per image, each model's predicted class and class probabilities."""
    return [
        {
            "image": image,
            "predictions": {
                name: {
                    "predicted": p.predicted[i],
                    "probs": dict(zip(p.class_names, p.probs[i].tolist(), strict=True)),
                }
                for name, p in preds.items()
            },
        }
        for i, image in enumerate(images)
    ]


def format_predictions(images: list[str], preds: dict) -> str:
    """`qtl predict`'s text: per image, one line per model with its probabilities and prediction."""
    w = max(display_width(name) for name in preds) + 2
    lines = []
    for i, image in enumerate(images):
        lines.append(image)
        for name, p in preds.items():
            probs = "  ".join(f"{c} {v:.4f}" for c, v in zip(p.class_names, p.probs[i].tolist(), strict=True))
            lines.append(f"  {ljust(name, w)}{probs}  -> {p.predicted[i]}")
    return "\n".join(lines)


def format_summary(summary: list[dict]) -> str:
    """The compare table: one line per setup, mean ± std per field."""

    def pm(s: dict, f: str, digits: int) -> str:
        mean, std = s[f"{f}_mean"], s[f"{f}_std"]
        if mean is None:
            return "n/a"
        return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")

    header = ("setup", "n", "val acc", "val loss", "test acc", "best epoch", "train time (s)", "params c/q")
    lines = [
        (
            s["setup"],
            str(s["n"]),
            pm(s, "val_acc", 4),
            pm(s, "val_loss", 4),
            pm(s, "test_acc", 4),
            pm(s, "best_epoch", 1),
            pm(s, "train_time_s", 1),
            f"{s['classical_mean']:.0f}/{s['quantum_mean']:.0f}",
        )
        for s in summary
    ]
    return _columns([header, *lines])


def format_noise_table(rows: list[dict]) -> str:
    """The `qtl noise` table: one line per (checkpoint, setting) with its accuracy."""
    header = ("checkpoint", "setting", "accuracy", "time (s)")
    lines = [(r["model"], r["setting"], f"{r['accuracy']:.4f}", f"{r['seconds']:.1f}") for r in rows]
    return _columns([header, *lines])


def _columns(table: list[tuple[str, ...]]) -> str:
    """Left-aligned text columns, two spaces apart (by display width)."""
    widths = [max(display_width(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(ljust(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)


def write_compare(rows: list[dict], summary: list[dict], json_path: Path, csv_path: Path) -> None:
    """The compare results: runs and summary as JSON, the summary table as CSV."""
    for path in (json_path, csv_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"runs": rows, "summary": summary}, indent=2) + "\n")
    columns = ["variant", "setup", "n"] + [f"{f}_{k}" for f in COMPARE_FIELDS for k in ("mean", "std")]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: s[k] for k in columns} for s in summary)


RUN_COLUMNS = ("id", "variant", "backbone", "dataset", "qubits", "depth", "seed", "val_acc", "best_epoch",
               "train_time_s", "status")  # fmt: skip
"""The columns `qtl runs` prints (exports hold every column)."""


def format_runs(rows: list[dict]) -> str:
    """`qtl runs`' table: one line per run."""

    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    table = [RUN_COLUMNS] + [tuple(cell(r.get(c)) for c in RUN_COLUMNS) for r in rows]
    return _columns(table)


def format_sweeps(sweeps: list[dict]) -> str:
    """`qtl runs --sweeps`: one line per sweep with its run counts per status."""
    lines = []
    for s in sweeps:
        counts = ", ".join(
            f"{s[k]} {k}"
            for k in ("done", "running", "interrupted", "pending", "failed", "cancelled")
            if s[k]
        )
        lines.append(f"{s['name']}  {s['runs']} runs ({counts or 'none'})  updated {s['updated']}")
    return "\n".join(lines) if lines else "no sweeps yet"


def write_rows(rows: list[dict], path: str, kind: str, columns=RUN_COLUMNS) -> None:
    """Runs (or sweeps) as CSV (every column; `columns` where there are no rows) or JSON (a list of
    objects), its folder made where missing (as compare's files); path '-' writes to stdout."""
    if path != "-":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    out = sys.stdout if path == "-" else open(path, "w", newline="")  # noqa: SIM115
    try:
        if kind == "json":
            out.write(json.dumps(rows, indent=2) + "\n")
        else:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else list(columns))
            writer.writeheader()
            writer.writerows(rows)
    finally:
        if out is not sys.stdout:
            out.close()
