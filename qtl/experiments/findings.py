"""What a study found, from its finished runs: per dataset and data regime, the test accuracy of every
variant, the quantum heads against their controls with the power of each test, and a conclusion in words.

    sections = findings(db.rows("study"))          # one Section per (dataset, regime, feature width)
    study_markdown(db, "study", command="qtl sweep docs/study.toml ...")   # docs/study.md

Every comparison comes from `qtl.experiments.stats.comparisons` on the test accuracy, paired by seed,
with the Benjamini-Hochberg adjustment taken over every comparison of the study at once; data without a
test split (a dataset with no test/ on its given split) is reported on val accuracy, and says so. Each is then
called, in this order of precedence:

    better / worse   the adjusted p-value is below alpha
    equivalent       not significant, and the whole 95% interval of the difference lies within ±effect
    inconclusive     not significant, but the interval still reaches past ±effect (too few seeds for
                     the noise measured: the power analysis says how many would do)
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

from qtl.experiments.stats import (
    ALPHA,
    EFFECT,
    POWER,
    accuracy_interval,
    cell_key,
    cell_name,
    cells,
    comparison_header,
    comparison_line,
    comparisons,
    dataset_label,
    settings_apart,
    settings_text,
)
from qtl.utils.words import count, duration

SECTION_KEYS = ("dataset", "n_classes", "split", "per_class", "label_noise", "feature_dim")
"""What one section of a study holds fixed: the data, its regime and the width of the features."""
VERDICTS = ("better", "worse", "equivalent", "inconclusive", "not tested")


@dataclass
class Section:
    """One dataset in one regime: its cells (test accuracy per variant) and the quantum heads' comparisons."""

    key: dict
    cells: list[dict] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """test_acc where every cell has it, val_acc where none does, else "mixed"."""
        metrics = {c["metric"] for c in self.cells}
        return metrics.pop() if len(metrics) == 1 else "mixed"

    @property
    def title(self) -> str:
        k = self.key
        name = dataset_label(k["dataset"])  # as reports and the dry run name it: "three", "five.zip"
        parts = [f"{name}, {k['n_classes']} classes" if k.get("n_classes") else name]
        few = k.get("per_class")
        parts.append(f"{count(few, 'labelled image')} per class" if few else "all labels")
        if k.get("label_noise"):
            parts.append(f"{k['label_noise']:.0%} of training labels wrong")
        if k.get("feature_dim"):
            parts.append(f"features reduced to {k['feature_dim']} principal components")
        return "; ".join(parts)


def verdict(c: dict) -> str:
    """better | worse | equivalent | inconclusive | not tested (see the module docstring)."""
    if c["significant"]:
        return "better" if c["diff"] > 0 else "worse"
    if c["n"] < 2 or c["diff"] is None:
        return "not tested"
    if c["ci_low"] is not None and -c["effect"] <= c["ci_low"] and c["ci_high"] <= c["effect"]:
        return "equivalent"
    return "inconclusive"


def findings(rows: list[dict], metric: str | None = None, effect: float = EFFECT) -> list[Section]:
    """Sections in a stable order (dataset; more classes first; all labels, then fewer; clean, then noisier;
    full width, then narrower), each with its cells and its quantum cells' comparisons (`verdict` added).
    metric None: each cell on test accuracy where its runs have one, else on val accuracy, each pair on
    test accuracy where both its cells have it (`stats.cell_metric`, `stats.held_out_comparisons`): a run
    without a test split is in its section, on val accuracy, never left out."""
    rows = [r for r in rows if r.get(metric or "val_acc") is not None]
    comps = comparisons(rows, metric, effect=effect)
    all_cells = cells(rows, metric)
    # one naming for the whole study: the settings that tell its cells apart, the backbone where several
    apart = [k for k in settings_apart(all_cells) if k not in SECTION_KEYS]  # a section's title names those
    backbones = len({c.get("backbone") for c in all_cells}) > 1
    for cell in all_cells:
        cell["short"] = _short(cell, apart, backbones)
    configs: dict[str, set[str]] = {}  # kind of head -> its configurations in the study
    for c in comps:
        c["verdict_word"] = verdict(c)
        c["quantum_name"] = _short(c["quantum"], apart, backbones)
        configs.setdefault(_kind(c["quantum"]), set()).add(c["quantum_name"])
    for c in comps:  # a kind run in one configuration keeps its plain name, else each names its own
        kind = _kind(c["quantum"])
        c["head"] = kind if len(configs[kind]) == 1 else f"{kind} ({c['quantum_name']})"
    sections: dict[tuple, Section] = {}
    for cell in all_cells:
        key = tuple(cell.get(k) for k in SECTION_KEYS)
        sections.setdefault(key, Section(dict(zip(SECTION_KEYS, key, strict=True)))).cells.append(cell)
    for c in comps:
        key = tuple(c["quantum"].get(k) for k in SECTION_KEYS)
        sections[key].comparisons.append(c)

    def order(s: Section):
        k = s.key
        return (
            str(k["dataset"]),
            -(k["n_classes"] or 0),
            k["feature_dim"] is not None,
            -(k["feature_dim"] or 0),
            k["label_noise"] or 0.0,
            -(k["per_class"] or 10**9),
        )

    return sorted(sections.values(), key=order)


def conclusion(section: Section) -> str:
    """The section's answer in one or two sentences per quantum head."""
    lines = []
    for name, comps in _by_quantum(section.comparisons).items():
        said = []
        for c in comps:
            word, diff = c["verdict_word"], c["diff"]
            if word in ("better", "worse"):
                said.append(
                    f"{word} than {c['control']} by {abs(diff):.3f} (adjusted p {c['p_adjusted']:.2g})"
                )
            elif word == "equivalent":
                said.append(f"equivalent to {c['control']} within ±{c['effect']:.2f}")
            elif word == "inconclusive":
                needed = c["seeds_needed"] or "over 10,000"
                said.append(
                    f"not distinguishable from {c['control']} ({diff:+.3f}, power {c['power'] or 0:.2f}; "
                    f"{needed} seeds would give {POWER:.0%})"
                )
            else:
                said.append(f"not tested against {c['control']}")
        lines.append(f"**{name}**: " + "; ".join(said) + ".")
    return "\n".join(lines) if lines else "No quantum head ran in this regime."


def _kind(quantum: dict) -> str:
    return "re-uploading circuit" if quantum.get("reupload") else "dressed circuit"


def _by_quantum(comps: list[dict]) -> dict[str, list[dict]]:
    """head -> its comparisons; a head is its kind, with its configuration where the study ran several
    of that kind ("dressed circuit (quantum 2q d1)"), so that no head's numbers hide another's."""
    out: dict[str, list[dict]] = {}
    for c in comps:
        out.setdefault(c["head"], []).append(c)
    return out


def tally(sections: list[Section]) -> dict[str, dict[str, int]]:
    """control -> verdict -> count, over every section."""
    out: dict[str, dict[str, int]] = {}
    for s in sections:
        for c in s.comparisons:
            out.setdefault(c["control"], dict.fromkeys(VERDICTS, 0))[c["verdict_word"]] += 1
    return out


NO_TEST = (
    "No test split in this data: the accuracies below are val accuracy, the split that also selected each "
    "run's epoch (optimistic), and the comparisons pair the runs on it."
)


def _cell_table(section: Section) -> list[str]:
    if section.metric == "val_acc":  # no test column to fill: the val accuracy is what is reported
        lines = ["| variant | seeds | val accuracy (no test split) | 95% CI |", "|---|---|---|---|"]
    else:
        lines = [
            "| variant | seeds | test accuracy | 95% CI | val accuracy (selection) |",
            "|---|---|---|---|---|",
        ]
    for c in section.cells:
        low, high = accuracy_interval(c)  # cut at 0 and 1, as every report prints it
        ci = "" if low is None else f"[{low:.3f}, {high:.3f}]"
        val = "" if c.get("val_mean") is None else f"{c['val_mean']:.3f}"
        if section.metric == "val_acc":
            lines.append(f"| {c['short']} | {c['n']} | {c['mean']:.3f} | {ci} |")
        else:  # a cell without test accuracy among others: its val accuracy, said
            mean = f"{c['mean']:.3f}" + (" (val: no test split)" if c["metric"] == "val_acc" else "")
            lines.append(f"| {c['short']} | {c['n']} | {mean} | {ci} | {val} |")
    return lines


def _short(cell: dict, apart: list[str], backbone: bool) -> str:
    """The variant with what tells its cells apart within a section, e.g. "quantum 4q d6 reupload", with
    the settings `apart` (`stats.settings_apart`: "noise-free", "lr 0.01") and the backbone where the
    study has several."""
    section = ("dataset", "split", "per_class", "label_noise")  # the section's heading names these
    name = cell_name({k: v for k, v in cell.items() if k not in section}, settings_text(cell, apart))
    name = name.replace(f" f{cell.get('feature_dim')}", "")
    return name if backbone else name.replace(f" {cell.get('backbone')}", "")


HOW_TO_TEST = 'train with split = "kfold", or on a dataset with a test/ split'
"""How runs get a held-out test accuracy, for messages where they have none."""


def study_markdown(
    db, sweep: str, *, command: str | None = None, effect: float = EFFECT, out: str | Path | None = None
) -> str:
    """docs/study.md: the question, the protocol, the answer (a tally and a table), then one part per
    dataset and regime, and the cost, all from the finished runs of `sweep` in the ResultsDB `db`.
    command: the sweep's command line, as it ran; out: where the document goes (default beside `db`)."""
    rows = db.rows(sweep)
    if not rows:
        raise ValueError(f"the sweep {sweep!r} has no finished runs in {db.path}")
    if all(r.get("test_acc") is None for r in rows):
        raise ValueError(
            f"the sweep {sweep!r} has no held-out test accuracy, which a study reports: {HOW_TO_TEST} "
            "('qtl runs --report' sums up its val accuracy)"
        )
    val_means = {cell_key(c): c["mean"] for c in cells(rows, "val_acc")}
    sections = findings(rows, effect=effect)
    untested = any(s.metric != "test_acc" for s in sections)
    on_val = " (val accuracy on data without a test split)" if untested else ""
    for s in sections:
        for c in s.cells:
            c["val_mean"] = val_means.get(cell_key(c))
    env = db.environment(rows[0]["id"]) or {}
    seeds = sorted({r["seed"] for r in rows})
    out = [
        "# Study: when does the quantum layer differ from classical parameters?",
        "",
        f"{_question(rows)} {_asked(sections)}",
        "",
        "## How it was run",
        "",
        "```sh",
        command or f"qtl sweep <spec> --db {db.path}",
        f"qtl study --db {db.path} --sweep {sweep} --out {out or db.path.with_suffix('.md')}"
        "     # this document",
        "```",
        "",
        "The spec, as run:",
        "",
        "```toml",
        (db.spec(sweep) or "").strip(),
        "```",
        "",
        f"{len(rows)} finished runs, seeds {seeds[0]}..{seeds[-1]}, on {env.get('device', 'cpu')} "
        f"({env.get('cpus', '?')} CPUs, {env.get('platform', platform.platform())}; "
        f"torch {env.get('torch')}).",
        "",
        f"**Protocol.** {_splits_text(rows)} A gradient-trained head keeps the epoch with the best **val** "
        "accuracy; a kernel SVM picks its C and kernel width on val; the **test** split is scored once, on "
        "what was selected, and never used for selection. The regime narrows the training part only, drawn "
        "from the seed so every variant sees the same images and labels: `per_class` labelled images per "
        "class (few-shot), `label_noise` the share of training labels moved to another class, `feature_dim` "
        "the training features' principal components in front of the head, `classes` the first k classes. "
        "Val and test stay whole and clean.",
        "",
        f"**Statistics.** Per variant the mean test accuracy{on_val} over seeds with a Student t 95% "
        "interval. Each "
        f"quantum head against each control paired by seed (same folds, same training images): mean "
        f"difference (quantum - control) with its 95% interval, paired t-test, p-values adjusted over all "
        f"{sum(len(s.comparisons) for s in sections)} comparisons of the study (Benjamini-Hochberg, alpha "
        f"{ALPHA:g}). **Power**: with the noise each comparison measured (the std of its paired "
        f"differences), the probability that its paired t-test finds a true difference of ±{effect:.2f} "
        f"(noncentral t), and the seeds that would give {POWER:.0%}. A comparison is *equivalent* when it is "
        f"not significant and its whole 95% interval lies within ±{effect:.2f}, *inconclusive* when the "
        "interval still reaches past that.",
        "",
        "## Answer",
        "",
        "| quantum head vs | " + " | ".join(VERDICTS) + " |",
        "|---|" + "---|" * len(VERDICTS),
    ]
    for control, counts in tally(sections).items():
        out.append(f"| {control} | " + " | ".join(str(counts[v]) for v in VERDICTS) + " |")
    out += [""] + _summary(sections)
    grid = "difference in test accuracy" + (", or val accuracy where the row says so" if untested else "")
    out += ["", f"Per dataset and regime ({grid}, quantum - control, and the call):", ""]
    out += _answer_grid(sections)
    for s in sections:
        out += ["", f"## {s.title}", ""]
        out += [NO_TEST, ""] if s.metric == "val_acc" else []
        out += _cell_table(s)
        if s.comparisons:
            out += ["", *comparison_header(effect)]
            out += [comparison_line(c, c["quantum_name"]) for c in s.comparisons]
        out += ["", conclusion(s)]
    out += ["", "## Cost", ""] + _cost(db, rows)
    return "\n".join(out) + "\n"


def _summary(sections: list[Section]) -> list[str]:
    """One bullet per quantum head and control: in which datasets and regimes it was better, worse or
    equivalent; inconclusive ones are counted, and those not tested (fewer than 2 paired seeds) apart, as
    the Answer table counts them."""
    lines = []
    heads = dict.fromkeys(name for s in sections for name in _by_quantum(s.comparisons))
    for name in heads:
        for control in dict.fromkeys(c["control"] for s in sections for c in s.comparisons):
            found: dict[str, list[str]] = {v: [] for v in VERDICTS}
            for s in sections:
                for c in _by_quantum(s.comparisons).get(name, []):
                    if c["control"] == control:
                        found[c["verdict_word"]].append(f"{s.title} ({c['diff']:+.3f})")
            said = [
                f"{v} in {len(found[v])}: " + "; ".join(found[v]) for v in ("better", "worse", "equivalent")
            ]
            said = [x for x, v in zip(said, ("better", "worse", "equivalent"), strict=True) if found[v]]
            said += [f"{v} in {len(found[v])}" for v in ("inconclusive", "not tested") if found[v]]
            said += [] if found["inconclusive"] or found["not tested"] else ["conclusive everywhere"]
            lines.append(f"- **{name} vs {control}**: " + ". ".join(said) + ".")
    return lines


def _question(rows: list[dict]) -> str:
    """The study's question, naming the quantum heads and the controls its runs trained."""
    ran = {(r["variant"], bool(r.get("reupload"))) for r in rows}
    variants = {v for v, _ in ran}
    heads = [
        text
        for text, run in (
            ("the dressed quantum circuit of Mari et al. (2019)", ("quantum", False)),
            ("a data re-uploading circuit", ("quantum", True)),
        )
        if run in ran
    ]
    head = f"{heads[0]}, or {heads[1]} in its place," if len(heads) == 2 else "".join(heads)
    kernels = [
        k for k, v in (("quantum fidelity", "quantum-kernel"), ("classical RBF", "rbf-svm")) if v in variants
    ]
    controls = [
        text
        for text, variant in (
            (
                "the same head with a classical layer of equal width (`dressed-classical`, its "
                "parameter-matched control)",
                "dressed-classical",
            ),
            ("a plain linear head", "linear"),
        )
        if variant in variants
    ]
    if kernels:
        controls.append(
            f"support vector machines with a {' kernel or a '.join(kernels)} kernel on the same inputs"
        )
    controls = [f"from {c}" for c in controls]
    if len(controls) > 2:
        listed = ", ".join(controls[:-1]) + ", and " + controls[-1]
    else:
        listed = " and ".join(controls)
    return f"Does {head or 'a quantum head'} classify differently {listed or 'from its controls'}?"


def _splits_text(rows: list[dict]) -> str:
    """How the runs' images were split, in words, from their `split` labels ("kfold-5", "given"), and the
    datasets whose runs had no test split (reported on val accuracy)."""
    splits = sorted({r.get("split") or "given" for r in rows})
    untested = sorted({dataset_label(r["dataset"]) for r in rows if r.get("test_acc") is None})
    also = (
        f" Data without a test split ({_and(untested)}): its runs are reported on val accuracy, the split "
        "that selected their epoch (optimistic), and say so."
        if untested
        else ""
    )
    if splits == ["given"]:
        return (
            'Every run used its dataset\'s own split (`split = "given"`): its train/ and val/ folders, val '
            "drawn from the training images, stratified, where it has none (a folder of class folders, or "
            "train/ with test/ alone), and its test/ folder where it has one." + also
        )
    folds = sorted({int(s.split("-")[1]) for s in splits if s.startswith("kfold-")})
    k = folds[0] if len(folds) == 1 else None
    if k is None or len(splits) > 1:
        return (
            f"The runs used these splits: {', '.join(splits)} (kfold-k: stratified folds of every image; "
            "given: the dataset's own train/, val/ and test/ where it has them)." + also
        )
    return (
        f"Every image of a dataset is pooled and cut into {k} stratified folds (`split = kfold`): seed s "
        f"tests on fold s mod {k}, selects on the next fold and trains on the other {k - 2}, so seeds 0 to "
        f"{k - 1} test every image once, and each further round of {k} seeds again with new folds."
    )


NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _and(names: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else ""


def _asked(sections: list[Section]) -> str:
    """What the study asked on, in words, from its sections: the metric (held-out test accuracy, and val
    accuracy on the data without a test split, named), the datasets, and the regimes it varied, e.g.
    "Asked on held-out test accuracy, on two datasets that need no network, with few labels, many classes,
    wrong labels and narrow features." A torchvision dataset is downloaded: then it does not say "that
    need no network"; folders, zips, digits (scikit-learn's) and a copy of hymenoptera need none."""
    datasets = sorted({str(s.key["dataset"]) for s in sections})
    tested = sorted({dataset_label(s.key["dataset"]) for s in sections if s.metric == "test_acc"})
    untested = sorted({dataset_label(s.key["dataset"]) for s in sections if s.metric != "test_acc"})
    if not untested:
        on = "held-out test accuracy"
    else:
        on = (
            f"held-out test accuracy where the data has a test split ({_and(tested) or 'none'}) and on val "
            f"accuracy, which also selected each run's epoch, where it has none ({_and(untested)})"
        )
    n = len(datasets)
    number = NUMBERS[n] if n < len(NUMBERS) else str(n)
    offline = not any(d.startswith("torchvision/") for d in datasets)
    data = f"{number} dataset{'s' if n != 1 else ''}" + (" that need no network" if offline else "")
    if n == 1:
        data = data.replace("need ", "needs ")
    keys = [s.key for s in sections]
    classes = {}
    for k in keys:
        classes.setdefault(k["dataset"], set()).add(k.get("n_classes"))
    varied = [
        ("few labels", any(k.get("per_class") for k in keys)),
        ("many classes", any(len(v) > 1 for v in classes.values())),
        ("wrong labels", any(k.get("label_noise") for k in keys)),
        ("narrow features", any(k.get("feature_dim") for k in keys)),
    ]
    regimes = _and([words for words, found in varied if found])
    return f"Asked on {on}, on {data}" + (f", with {regimes}" if regimes else "") + "."


def _answer_grid(sections: list[Section]) -> list[str]:
    controls = list(dict.fromkeys(c["control"] for s in sections for c in s.comparisons))
    lines = ["| dataset and regime | quantum head | " + " | ".join(controls) + " |"]
    lines.append("|---|---|" + "---|" * len(controls))
    for s in sections:
        for name, comps in _by_quantum(s.comparisons).items():
            by = {c["control"]: c for c in comps}
            cols = []
            for control in controls:
                c = by.get(control)
                cols.append("" if c is None else f"{c['diff']:+.3f} {c['verdict_word']}")
            title = s.title + (" (val accuracy: no test split)" if s.metric == "val_acc" else "")
            lines.append(f"| {title} | {name} | " + " | ".join(cols) + " |")
    return lines


def _cost(db, rows: list[dict]) -> list[str]:
    """Training time per variant and the whole sweep's wall time, from the database's timings."""
    per: dict[str, list[float]] = {}
    for r in rows:
        per.setdefault(r["variant"], []).append(r.get("wall_s") or 0.0)
    total = sum(sum(v) for v in per.values())
    lines = [f"{len(rows)} runs, {duration(total)} of run time in all (one run at a time). Per variant:", ""]
    lines += ["| variant | runs | mean wall time per run (s) |", "|---|---|---|"]
    lines += [f"| {v} | {len(t)} | {sum(t) / len(t):.1f} |" for v, t in per.items()]
    return lines
