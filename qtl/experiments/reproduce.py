"""The paper's comparison (Mari et al. 2019, "Transfer learning in hybrid classical-quantum neural
networks", ants vs bees), reproduced: A `quantum`, B `finetuned`, C `linear`, plus `hybrid` and
`dressed-classical`, each with its recipe over several seeds, summarised beside the published numbers.

    rows = [paper_row(o) for o in train_runs(runs)]        # or loaded_row(load_checkpoint(path))
    report = paper_report(rows, command="qtl reproduce ...", backbone_notice=None)
    markdown(report)                                          # the table in docs/results.md

`qtl reproduce` runs it and writes the Markdown and JSON reports. The paper reports the best epoch's val
accuracy, selected on that same split: optimistic by construction, and kept here only beside the
published numbers. Runs with a held-out test split (`--split kfold`, or a dataset with test/) also
report the selected epoch's test accuracy, and the report pairs quantum with its controls by seed on
it (on val accuracy otherwise), with the power of every comparison (`qtl.experiments.stats`).
"""

from __future__ import annotations

import platform
import time

from qtl.config import VARIANTS
from qtl.experiments.runs import Outcome, checkpoint_row
from qtl.experiments.stats import (
    EFFECT,
    cell_name,
    comparison_header,
    comparison_line,
    comparisons,
    one_per_run,
    summary,
)
from qtl.models.weights import describe_backbone

PAPER_VARIANTS = VARIANTS  # quantum, finetuned, linear, hybrid, dressed-classical
LETTERS = {"quantum": "A", "finetuned": "B", "linear": "C"}
PUBLISHED = {"quantum": 0.9673, "linear": 0.9542}
"""Mari et al. 2019, ResNet18 with ImageNet weights, hymenoptera val accuracy of the best epoch."""
PUBLISHED_SOURCE = "Mari et al. 2019 (arXiv:1912.08278): ResNet18, ImageNet weights, best epoch on val"
REPORT_FORMAT = "qtl-paper-report/1"


def paper_row(outcome: Outcome) -> dict:
    """A trained run's row (`qtl.experiments.runs.ROW_FIELDS`) plus its final epoch's val accuracy."""
    history = outcome.history
    return {**outcome.row, "final_val_acc": history[-1]["val_acc"] if history else None, "source": "trained"}


def loaded_row(loaded) -> dict:
    """A checkpoint's row. Its history ends at the saved (best) epoch, so its "final" accuracy is the last
    epoch it records, and `source` says so."""
    history = loaded.history
    return {
        **checkpoint_row(loaded),
        "final_val_acc": history[-1]["val_acc"] if history else None,
        "source": "checkpoint",
    }


def _stat(rows: list[dict], key: str) -> tuple[float | None, float | None]:
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    s = summary(values) if values else {"mean": None, "std": None}
    return s["mean"], s["std"]


def summarise_variants(rows: list[dict]) -> list[dict]:
    """Per variant (in PAPER_VARIANTS order): seeds, best- and final-epoch val accuracy mean and std,
    mean training time, parameter counts and the published accuracy."""
    out = []
    for variant in [v for v in PAPER_VARIANTS if any(r["variant"] == v for r in rows)]:
        group = [r for r in rows if r["variant"] == variant]
        best, best_std = _stat(group, "val_acc")
        final, final_std = _stat(group, "final_val_acc")
        test, test_std = _stat(group, "test_acc")
        time_s, _ = _stat(group, "train_time_s")
        out.append(
            {
                "variant": variant,
                "letter": LETTERS.get(variant, ""),
                "backbone": describe_backbone(group[0]["backbone"], group[0]["weights"] != "random"),
                "n": len(group),
                "seeds": [r["seed"] for r in group],
                "epochs": sorted({r["epochs_done"] for r in group}),
                "best_val_acc_mean": best,
                "best_val_acc_std": best_std,
                "final_val_acc_mean": final,
                "final_val_acc_std": final_std,
                "test_acc_mean": test,
                "test_acc_std": test_std,
                "train_time_s_mean": time_s,
                "classical": group[0]["classical"],
                "quantum": group[0]["quantum"],
                "published": PUBLISHED.get(variant),
                "sources": sorted({r.get("source", "trained") for r in group}),
            }
        )
    return out


def paper_report(
    rows: list[dict], *, command: str, backbone_notice: str | None = None, notes=(), effect: float = EFFECT
) -> dict:
    """The JSON report: the command, the machine, the summary per variant, the paired comparisons (on test
    accuracy where the runs have it, with their power to detect `effect`) and every run's row, each run
    once (`stats.one_per_run`: a second checkpoint of a run, or a report merged twice, is left out and
    said in the notes; it counted as more seeds)."""
    rows, repeats = one_per_run(rows)
    if repeats:
        notes = [*notes, f"left out {len(repeats)} row(s) of runs already counted (the same run id and data)"]
    metric = "test_acc" if any(r.get("test_acc") is not None for r in rows) else "val_acc"
    return {
        "format": REPORT_FORMAT,
        "command": command,
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "backbone_notice": backbone_notice,
        "published_source": PUBLISHED_SOURCE,
        "notes": list(notes),
        "summary": summarise_variants(rows),
        "metric": metric,
        "comparisons": comparisons(rows, metric, effect=effect),
        "effect": effect,
        "runs": rows,
    }


def merge_reports(reports: list[dict], *, command: str, notes=(), effect: float = EFFECT) -> dict:
    """One report from several (runs made by separate commands); their commands become notes; the power
    analysis is for `effect` (it kept the default whatever --effect said)."""
    rows = [r for rep in reports for r in rep["runs"]]
    notices = [rep["backbone_notice"] for rep in reports if rep.get("backbone_notice")]
    earlier = [f"runs from: `{rep['command']}`" for rep in reports]
    extra = [n for rep in reports for n in rep.get("notes", [])]
    return paper_report(
        rows,
        command=command,
        backbone_notice=notices[0] if notices else None,
        notes=[*earlier, *extra, *notes],
        effect=effect,
    )


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")


def markdown(report: dict) -> str:
    """The report as Markdown: one table row per variant, then notes and the runs."""
    lines = [
        "# The paper's comparison, reproduced",
        "",
        f"Made by `{report['command']}` ({report['created']}, {report['machine']}).",
        "",
    ]
    if report.get("backbone_notice"):
        lines += [f"Backbone: {report['backbone_notice']}.", ""]
    lines += [
        "| | variant | backbone | seeds | epochs | best-epoch val acc | final-epoch val acc | test acc "
        "| published | train time (s) | classical params | quantum params |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["summary"]:
        published = f"{s['published']:.4f}" if s["published"] is not None else ""
        time_s = f"{s['train_time_s_mean']:.0f}" if s["train_time_s_mean"] is not None else "n/a"
        lines.append(
            f"| {s['letter']} | {s['variant']} | {s['backbone']} | {s['n']} | "
            f"{', '.join(map(str, s['epochs']))} | {_pm(s['best_val_acc_mean'], s['best_val_acc_std'])} | "
            f"{_pm(s['final_val_acc_mean'], s['final_val_acc_std'])} | "
            f"{_pm(s.get('test_acc_mean'), s.get('test_acc_std'))} | {published} | {time_s} | "
            f"{s['classical']:,} | {s['quantum']:,} |"
        )
    lines += [
        "",
        f"Published: {report['published_source']}. Mean ± sample standard deviation over seeds; best epoch: "
        "the epoch with the highest val accuracy (what the paper reports, optimistic: selected on the split "
        "it scores); final epoch: the last one; test: the best epoch on the held-out test split, never used "
        "for selection (n/a without one: `--split kfold`). Parameter counts: what trains (a frozen "
        "backbone's parameters are not counted).",
    ]
    if report.get("comparisons"):
        metric = report.get("metric", "val_acc")
        lines += ["", f"Quantum vs its controls, paired by seed on {metric} (quantum - control):", ""]
        lines += comparison_header(report.get("effect", EFFECT))
        lines += [comparison_line(c, cell_name(c["quantum"])) for c in report["comparisons"]]
    if report.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    lines += [
        "",
        "## Runs",
        "",
        "| variant | seed | epochs | best epoch | best val acc | final val acc | source |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        final = f"{r['final_val_acc']:.4f}" if r.get("final_val_acc") is not None else "n/a"
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['epochs_done']} | {r['best_epoch']} | {r['val_acc']:.4f} | "
            f"{final} | {r.get('source', 'trained')} |"
        )
    return "\n".join(lines) + "\n"
