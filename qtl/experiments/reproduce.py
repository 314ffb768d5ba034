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
it where both have it on every seed paired (on val accuracy otherwise), with the power of every
comparison (`qtl.experiments.stats`), pairing the runs as the table pools them (`protocol_rows`).

A table row holds the seeds of one variant under one protocol (`protocol_groups`: the data, its split and
regime, backbone, circuit, lr, epochs and the rest of the recipe): a merged report of runs on the given
split and on k folds, or of two recipes, has a row for each, named by what sets them apart, and says so.
"""

from __future__ import annotations

import logging
import platform
import time

from qtl.config import VARIANTS
from qtl.experiments.runs import Outcome, checkpoint_row
from qtl.experiments.stats import (
    ALPHA,
    CELL_KEYS,
    EFFECT,
    REGIME_KEYS,
    cell_name,
    comparison_header,
    comparison_line,
    held_out_comparisons,
    one_per_run,
    setting_text,
    settings_apart,
    settings_text,
    summary,
)
from qtl.models.weights import describe_backbone

log = logging.getLogger(__name__)

PAPER_VARIANTS = VARIANTS  # quantum, finetuned, linear, hybrid, dressed-classical
LETTERS = {"quantum": "A", "finetuned": "B", "linear": "C"}
PUBLISHED = {"quantum": 0.9673, "linear": 0.9542}
"""Mari et al. 2019, ResNet18 with ImageNet weights, hymenoptera val accuracy of the best epoch."""
PUBLISHED_SOURCE = "Mari et al. 2019 (arXiv:1912.08278): ResNet18, ImageNet weights, best epoch on val"
REPORT_FORMAT = "qtl-paper-report/1"
PROTOCOL_KEYS = tuple(k for k in CELL_KEYS if k != "variant")
"""What the runs of one variant share to be seeds of one table row (`stats.CELL_KEYS` less the variant):
the data and its regime (dataset, split, classes, few-shot, label noise), backbone and weights, circuit,
lr, epochs and the rest of the recipe."""
UNRECORDED = {"split": "given", "per_class": None, "label_noise": 0.0}
"""What runs whose rows predate the regime columns trained in: the dataset's own split, every training
image, clean labels. Other settings a row does not record match any value."""


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


def _settings(row: dict) -> dict:
    """The row's PROTOCOL_KEYS that it records (those of UNRECORDED always; no split is the given one, no
    label noise 0)."""
    out = {}
    for k in PROTOCOL_KEYS:
        if k in row or k in UNRECORDED:
            out[k] = row.get(k, UNRECORDED.get(k))
    out["split"] = out["split"] or "given"
    out["label_noise"] = out["label_noise"] or 0.0
    return out


def protocol_groups(rows: list[dict]) -> list[dict]:
    """The rows in groups of one variant and one protocol (equal on every PROTOCOL_KEYS setting both
    record), the paper's variants first (PAPER_VARIANTS order), then first seen. Each: variant, rows,
    settings (what its rows record), apart (the settings that tell it from other groups: a data setting
    where any two groups differ in it, another where two groups of its variant do) and label (those
    settings in words, e.g. "kfold-5, epochs 1"; "" where nothing sets it apart)."""
    groups: list[dict] = []
    for row in rows:
        mine = _settings(row)
        for g in groups:
            if g["variant"] == row["variant"] and _agree(g["settings"], mine, PROTOCOL_KEYS):
                g["rows"].append(row)
                g["settings"] = {**mine, **g["settings"]}
                break
        else:
            groups.append({"variant": row["variant"], "rows": [row], "settings": mine})
    order = {v: i for i, v in enumerate(PAPER_VARIANTS)}
    groups.sort(key=lambda g: order.get(g["variant"], len(order)))  # stable: first seen within a variant

    def differ(key: str, among: list[dict]) -> bool:
        return len({g["settings"][key] for g in among if key in g["settings"]}) > 1

    data = [k for k in REGIME_KEYS if differ(k, groups)]
    for g in groups:
        kin = [h for h in groups if h["variant"] == g["variant"]]
        keys = data + [k for k in PROTOCOL_KEYS if k not in REGIME_KEYS and differ(k, kin)]
        g["apart"] = [k for k in keys if k in g["settings"]]
        g["label"] = ", ".join(setting_text(k, g["settings"][k]) for k in g["apart"])
    return groups


def data_text(settings: dict) -> str:
    """The data protocol of a report whose rows share it, in words."""
    split = settings.get("split")
    if split == "given":
        words = "the dataset's own split (`--split given`): train/, val/ selects the epoch, test/ if any"
    else:
        words = (
            f"{split} (`--split kfold`): each seed selects its epoch on one fold and is tested on another, "
            "held out from training and selection"
        )
    extra = [setting_text(k, settings[k]) for k in ("per_class", "label_noise") if settings.get(k)]
    return words + "".join(f"; {x}" for x in extra)


def summarise_variants(rows: list[dict], groups: list[dict] | None = None) -> list[dict]:
    """Per variant and protocol (`groups`, by default `protocol_groups(rows)`, in PAPER_VARIANTS order):
    what sets the protocol apart (`protocol`, "" where nothing does), seeds, best- and final-epoch val
    accuracy mean and std, mean training time, parameter counts and the published accuracy."""
    groups = protocol_groups(rows) if groups is None else groups
    out = []
    for g in [g for g in groups if g["variant"] in PAPER_VARIANTS]:
        variant, group = g["variant"], g["rows"]
        best, best_std = _stat(group, "val_acc")
        final, final_std = _stat(group, "final_val_acc")
        test, test_std = _stat(group, "test_acc")
        time_s, _ = _stat(group, "train_time_s")
        out.append(
            {
                "variant": variant,
                "protocol": g["label"],
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
    """The JSON report: the command, the machine, the data protocol (`data`, where every run shares it),
    the summary per variant and protocol, the paired comparisons (`_comparisons`: of the runs each table
    row holds, each pair on test accuracy where both its cells have it on every paired seed, else on val
    accuracy: `metric` of each, with their power to detect `effect`) and every run's row, each run once
    (`stats.one_per_run`: a second checkpoint of a run, or a report merged twice, is left out and said in
    the notes; it counted as more seeds), each seed once per variant and protocol (a second run of it is
    left out and said). Runs of several protocols (a given-split report merged with a k-fold one, say) are
    never pooled: each has its own rows, named by what sets them apart, and the notes say so."""
    rows, repeats = one_per_run(rows)
    notes = list(notes)
    if repeats:
        notes.append(f"left out {len(repeats)} row(s) of runs already counted (the same run id and data)")
    groups = protocol_groups(rows)
    dropped: set[int] = set()
    for g in groups:
        first: dict = {}
        for r in g["rows"]:
            if r.get("seed") in first:
                dropped.add(id(r))
                kept = first[r["seed"]]
                name = g["variant"] + (f" ({g['label']})" if g["label"] else "")
                notes.append(
                    f"left out a second run of {name} seed {r['seed']} (run {r.get('id')}; "
                    f"run {kept.get('id')} is counted): one seed of one protocol counts once"
                )
            else:
                first[r.get("seed")] = r
    rows = [r for r in rows if id(r) not in dropped]
    groups = protocol_groups(rows)  # the table's rows and the comparisons' cells, of the runs counted
    apart = [k for k in (*REGIME_KEYS, *PROTOCOL_KEYS) if any(k in g["apart"] for g in groups)]
    apart = list(dict.fromkeys(apart))  # the data first
    if apart:
        note = (
            f"runs of several protocols (they differ in {', '.join(apart)}): each table row holds one "
            "variant under one protocol, named beside it, and comparisons pair runs of one data regime only"
        )
        notes.append(note)
        log.warning("%s", note)
    data = None if any(k in REGIME_KEYS for k in apart) or not groups else data_text(groups[0]["settings"])
    metric = "test_acc" if any(r.get("test_acc") is not None for r in rows) else "val_acc"
    return {
        "format": REPORT_FORMAT,
        "command": command,
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "backbone_notice": backbone_notice,
        "published_source": PUBLISHED_SOURCE,
        "data": data,
        "notes": notes,
        "summary": summarise_variants(rows, groups),
        "metric": metric,
        "comparisons": _comparisons(groups, effect),
        "effect": effect,
        "runs": rows,
    }


def protocol_rows(groups: list[dict]) -> list[dict]:
    """The groups' rows (`protocol_groups`), each with what its group records filled in: the UNRECORDED
    regime of a row from before the regime columns, a setting other rows of its group record, and a data
    setting no row of its group records (n_classes: a run from before that column trained on every class,
    which new rows record as a count) where every other group of the same data records one value of it.
    The rows of one group (one table row) share one `stats.cell_key`, and rows of two groups never do, so
    that `stats.comparisons` pairs the runs as the table pools them: old quantum runs with new controls."""
    out = []
    for g in groups:
        mine = dict(g["settings"])
        for k in [k for k in REGIME_KEYS if k not in mine]:
            values = {
                h["settings"][k]
                for h in groups
                if k in h["settings"] and _agree(h["settings"], mine, REGIME_KEYS)
            }
            if len(values) == 1:
                (mine[k],) = values
        out += [{**r, **mine} for r in g["rows"]]
    return out


def _agree(a: dict, b: dict, keys) -> bool:
    """Whether settings `a` and `b` are equal on every one of `keys` that both record (REGIME_KEYS: of one
    data regime; PROTOCOL_KEYS: of one protocol)."""
    return all(a[k] == b[k] for k in keys if k in a and k in b)


def _comparisons(groups: list[dict], effect: float, alpha: float = ALPHA) -> list[dict]:
    """`stats.held_out_comparisons` of the groups' runs (`protocol_rows`): each pair on its runs' test
    accuracy where both its cells have one on every seed they pair, else on their val accuracy (a given
    split without test/, a run from before test_acc was recorded); one family of p-values."""
    return held_out_comparisons(protocol_rows(groups), alpha, effect)


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
    if report.get("data"):
        lines += [f"Data: {report['data']}.", ""]
    lines += [
        "| | variant | backbone | seeds | epochs | best-epoch val acc | final-epoch val acc | test acc "
        "| published | train time (s) | classical params | quantum params |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["summary"]:
        published = f"{s['published']:.4f}" if s["published"] is not None else ""
        time_s = f"{s['train_time_s_mean']:.0f}" if s["train_time_s_mean"] is not None else "n/a"
        variant = s["variant"] + (f" ({s['protocol']})" if s.get("protocol") else "")
        lines.append(
            f"| {s['letter']} | {variant} | {s['backbone']} | {s['n']} | "
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
        comps = report["comparisons"]
        metrics = {c.get("metric", report.get("metric", "val_acc")) for c in comps}
        mixed = len(metrics) > 1
        on = (
            "test_acc where both cells have it on every paired seed, else val_acc" if mixed else metrics.pop()
        )
        lines += ["", f"Quantum vs its controls, paired by seed on {on} (quantum - control):", ""]
        lines += comparison_header(report.get("effect", EFFECT))
        apart = settings_apart([c["quantum"] for c in comps])
        for c in comps:
            name = cell_name(c["quantum"], settings_text(c["quantum"], apart))
            lines.append(comparison_line(c, f"{name}, on {c['metric']}" if mixed else name))
    if report.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    lines += [
        "",
        "## Runs",
        "",
        "| variant | seed | epochs | best epoch | best val acc | final val acc | source |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    protocol = {id(r): g["label"] for g in protocol_groups(report["runs"]) for r in g["rows"]}
    for r in report["runs"]:
        final = f"{r['final_val_acc']:.4f}" if r.get("final_val_acc") is not None else "n/a"
        variant = r["variant"] + (f" ({protocol[id(r)]})" if protocol[id(r)] else "")
        lines.append(
            f"| {variant} | {r['seed']} | {r['epochs_done']} | {r['best_epoch']} | {r['val_acc']:.4f} | "
            f"{final} | {r.get('source', 'trained')} |"
        )
    return "\n".join(lines) + "\n"
