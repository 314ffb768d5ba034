"""Statistics that do not overclaim, over finished runs (rows as `qtl.experiments.database.ResultsDB.rows`
gives).

    cells(rows)          per configuration cell (`cell_key`): n seeds, mean, std, 95% CI of a metric (or,
                         metric None, of test_acc where the cell's runs have it, else val_acc: `cell_metric`)
    summarise(rows, fs)  per cell: mean and std of several fields (the compare tables)
    comparisons(rows)    every quantum cell vs its controls (dressed-classical of the same width, linear,
                         the quantum and RBF kernel SVMs), paired by seed: mean difference, its 95% CI,
                         paired t-test p-value, the p-value adjusted for every comparison made
                         (Benjamini-Hochberg), the test's power, and a verdict in words (metric None:
                         each pair on test_acc where both cells have it, else val_acc)
    power(n, effect, sd) the power of a two-sided paired t-test of n seeds to detect a mean difference
                         `effect` when the differences scatter with standard deviation `sd`
    seeds_needed(...)    the fewest seeds that reach a target power; `detectable(...)` the smallest
                         difference n seeds detect with it

Confidence intervals are Student t intervals (scipy.stats.t) on the seeds' values or on the paired
differences; with a handful of seeds they are wide, and the verdict says "no significant difference"
whenever the adjusted p-value is not below alpha. Power comes from the noncentral t distribution
(scipy.stats.nct; the tests check it against simulated studies): with the noise level a comparison
measured (the std of its paired differences), how likely was a test of this many seeds to find a true
difference of EFFECT, how many seeds would reach POWER, and what difference these seeds could find. It
is not "post-hoc power" at the observed difference (a function of p alone): the effect is fixed in
advance.
"""

from __future__ import annotations

import functools
import math
import os
import re

from qtl.paths import DEFAULT_DATASET
from qtl.utils.words import count

# scipy is imported inside the functions that test: the tables need none of it.

CELL_KEYS = (
    "variant",
    "backbone",
    "weights",
    "dataset",
    "qubits",
    "depth",
    "entangler",
    "rotation",
    "engine",
    "noise",
    "reupload",
    "feature_dim",
    "lr",
    "epochs",
    "recipe",
    "circuit_options",
    "split",
    "n_classes",
    "per_class",
    "label_noise",
)
"""What makes runs seeds of one configuration cell: rows equal on these fields differ only by seed.
`cell_key` is the one "same configuration" key; `setup_label` names a cell for people."""
REGIME_KEYS = ("dataset", "split", "n_classes", "per_class", "label_noise")
"""The data a cell saw: comparisons pair cells only within one dataset and regime."""
CONTROLS = {
    "dressed-classical": ("qubits", "lr", "epochs", "feature_dim"),  # parameter-matched: same width
    "linear": ("feature_dim",),
    "quantum-kernel": ("qubits",),  # the same n_qubits-wide inputs (the kernels reduce features themselves)
    "rbf-svm": ("qubits",),
}
"""Each control of a quantum cell, with what it must share beyond backbone, weights and REGIME_KEYS."""
PREFER = {
    "linear": ("lr", "epochs", "recipe"),
    "quantum-kernel": ("depth", "lr"),
    "rbf-svm": ("lr",),
    "dressed-classical": ("recipe",),
}
"""Among several matching control cells, those equal to the quantum cell on each key in turn (where any
is): a sweep over lr pairs each quantum lr with the linear head of that lr, not the first linear cell."""
ALPHA = 0.05
EFFECT = 0.02  # the difference (in accuracy) a study should be able to detect: two points
POWER = 0.8  # the conventional target power
EXACT = 1e-12  # differences that vary less than this across seeds are one constant (float rounding)


def cell_key(row: dict) -> tuple:
    """The configuration a run row belongs to (its CELL_KEYS values; a missing field counts as None). A
    kernel SVM's lr and epochs count as its recipe's: its one fit ignores them (`kernel_settings`)."""
    return tuple({**row, **kernel_settings(row)}.get(k) for k in CELL_KEYS)


def kernel_settings(row: dict) -> dict:
    """lr and epochs of a kernel SVM's row as its recipe has them ({} for any other variant): runs that a
    spec's epochs or lr gave other ids before (`qtl.experiments.runs.kernel_recipe`) are one cell."""
    from qtl.config import KERNEL_BASELINES, recipe

    if row.get("variant") not in KERNEL_BASELINES:
        return {}
    base = recipe(row["variant"])
    return {"lr": base.lr, "epochs": base.epochs}


def group_cells(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows grouped by `cell_key`, in first-seen order; a kernel SVM's seed once per cell (a database may
    hold one fit per epochs or lr a spec gave it: the same fit, not more seeds)."""
    groups: dict[tuple, list[dict]] = {}
    seen: set[tuple] = set()
    for row in rows:
        key = cell_key(row)
        if kernel_settings(row):
            if (key, row.get("seed")) in seen:
                continue
            seen.add((key, row.get("seed")))
        groups.setdefault(key, []).append(row)
    return groups


def one_per_run(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The rows with each run once, the first seen, and the rest: rows of one run id (its settings and
    seed) on one dataset, two checkpoints of one run say, are one sample, not two seeds of a cell. Rows
    without an id are all kept."""
    seen: set[tuple] = set()
    kept, repeats = [], []
    for row in rows:
        key = (row.get("id"), row.get("dataset"))
        if row.get("id") is not None and key in seen:
            repeats.append(row)
        else:
            seen.add(key)
            kept.append(row)
    return kept, repeats


def setup_label(row: dict) -> str:
    """A cell's name for tables, e.g. "quantum (resnet18 random, 4q d6 native)": the settings its
    variant has, plus whatever differs from the recipe's usual (entangler, rotation, noise, data, regime,
    lr, epochs and the rest of the recipe: `_recipe_changes`)."""
    inner = f"{row.get('backbone')} {row.get('weights')}"
    if row.get("variant") in ("dressed-classical", "rbf-svm"):
        inner += f", width {row.get('qubits')}"
    elif row.get("depth") is not None:
        inner += f", {row.get('qubits')}q d{row.get('depth')}"
        inner += f" {row['engine']}" if row.get("engine") else ""
        extra = [row.get("entangler"), row.get("rotation"), "reupload" if row.get("reupload") else None]
        inner += "".join(f" {x}" for x in extra if x not in (None, "chain", "ry"))
    if row.get("feature_dim"):
        inner += f", features {row['feature_dim']}"
    if row.get("noise"):
        inner += f", noise {row['noise']}"
    if row.get("dataset") not in (None, DEFAULT_DATASET):
        inner += f", data {row['dataset']}"
    regime = regime_label(row)
    inner += f", {regime}" if regime else ""
    inner += "".join(f", {x}" for x in _recipe_changes(row))
    return f"{row.get('variant')} ({inner})"


def _recipe_changes(row: dict) -> list[str]:
    """A row's lr and epochs where they are not its variant's recipe's, and its `recipe` label: cells
    that differ there had one label in `qtl compare`'s table."""
    from qtl.config import VARIANTS, recipe

    out = []
    if row.get("variant") in VARIANTS:
        base = recipe(row["variant"])
        if row.get("lr") is not None and row["lr"] != base.lr:
            out.append(f"lr {row['lr']:g}")
        if row.get("epochs") is not None and row["epochs"] != base.epochs:
            out.append(count(row["epochs"], "epoch"))
    return out + [row[k] for k in ("recipe", "circuit_options") if row.get(k)]


def regime_label(row: dict) -> str:
    """The data regime of a row or cell in words ("" for the dataset's own split, all of it, clean), e.g.
    "kfold-5, 5 per class, 20% label noise"."""
    parts = [setting_text("split", row["split"])] if row.get("split") not in (None, "given") else []
    parts += [setting_text(k, row[k]) for k in ("per_class", "label_noise") if row.get(k)]
    return ", ".join(parts)


def summary(values: list[float], confidence: float = 0.95) -> dict:
    """n, mean, std (ddof=1), ci_low, ci_high (Student t; None with fewer than 2 values)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci_low": None, "ci_high": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if std == 0:
        low = high = mean
    else:
        low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci_low": float(low), "ci_high": float(high)}


def cells(rows: list[dict], metric: str = "val_acc") -> list[dict]:
    """One dict per cell (CELL_KEYS), first-seen order: the keys, `summary` of the metric over its
    seeds, seeds (sorted), the means of classical, quantum (parameters) and train_time_s, and `metric`.
    metric None: each cell on `cell_metric` (test_acc where its runs have it, else val_acc)."""
    out = []
    for key, members in group_cells(rows).items():
        on = metric or cell_metric(members)
        members = [r for r in members if r.get(on) is not None]
        if not members:
            continue
        cell = dict(zip(CELL_KEYS, key, strict=True), metric=on)
        cell.update(summary([float(r[on]) for r in members]))
        cell["seeds"] = sorted(r["seed"] for r in members)
        for f in ("classical", "quantum", "train_time_s"):
            values = [float(r[f]) for r in members if r.get(f) is not None]
            cell[f] = sum(values) / len(values) if values else None
        out.append(cell)
    return out


def accuracy_interval(cell: dict) -> tuple[float | None, float | None]:
    """A cell's 95% CI as reports print it: an accuracy's cut at 0 and 1 (a t interval over a few seeds
    reaches past them: [0.286, 1.071]), any other metric's as computed; (None, None) for one seed."""
    low, high = cell.get("ci_low"), cell.get("ci_high")
    if low is None or not str(cell.get("metric", "")).endswith("_acc"):
        return low, high
    return max(0.0, low), min(1.0, high)


def cell_metric(members: list[dict]) -> str:
    """What a cell's runs are reported on where no metric is asked for: test_acc where every one has a
    held-out test accuracy, else val_acc (a dataset without test/, selected on val: optimistic)."""
    return "test_acc" if members and all(r.get("test_acc") is not None for r in members) else "val_acc"


HELD_OUT = "test_acc where a cell's runs have a test split, else val_acc"
"""What metric None reports (`cells`, `comparisons`, `format_report`), in words."""


def unreported(rows: list[dict], metric: str | None) -> str:
    """A note naming the runs a report on `metric` leaves out, having none ("" where it leaves none
    out): a sweep over datasets with and without test/ lost the latter from its test_acc report, unsaid."""
    left = [r for r in rows if metric is not None and r.get(metric) is None]
    if not left:
        return ""
    where = ", ".join(sorted({dataset_label(r.get("dataset") or DEFAULT_DATASET) for r in left}))
    other = "val_acc" if metric == "test_acc" else "test_acc"
    return f"left out {len(left)} run(s) without {metric} (on {where}): --metric {other} reports them"


def summarise(rows: list[dict], fields: tuple[str, ...]) -> list[dict]:
    """Per cell (first-seen order): setup (`setup_label`), variant, n, and <field>_mean / <field>_std
    for each field, from `summary` (std None for a single value; both None when no row has the field)."""
    out = []
    for members in group_cells(rows).values():
        row = {"setup": setup_label(members[0]), "variant": members[0].get("variant"), "n": len(members)}
        for f in fields:
            values = [float(r[f]) for r in members if r.get(f) is not None]
            s = summary(values) if values else {"mean": None, "std": None}
            row[f"{f}_mean"], row[f"{f}_std"] = s["mean"], s["std"]
        out.append(row)
    return out


def paired(a: dict, b: dict, confidence: float = 0.95) -> dict:
    """a, b: seed -> value. On the seeds both have: n, mean difference a - b, std of the differences,
    its Student t CI, and the paired t-test p-value (scipy.stats.ttest_rel); p is None when it is
    undefined (fewer than 2 seeds, or the difference is the same on every seed)."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    out = {"n": len(seeds), "seeds": seeds, "diff": None, "diff_std": None, "ci_low": None, "ci_high": None}
    out["p"] = None
    if not seeds:
        return out
    s = summary(diffs, confidence)
    out.update(diff=s["mean"], diff_std=s["std"], ci_low=s["ci_low"], ci_high=s["ci_high"])
    if len(seeds) >= 2 and s["std"] > EXACT:
        out["p"] = float(stats.ttest_rel([a[x] for x in seeds], [b[x] for x in seeds]).pvalue)
    return out


def power(n: int, effect: float, sd: float, alpha: float = ALPHA) -> float | None:
    """The power of a two-sided paired t-test on n seeds at level alpha to detect a true mean difference
    `effect` when the paired differences have standard deviation `sd`: P(|T| > t_crit) with T noncentral
    t (df n - 1, noncentrality effect sqrt(n) / sd). None when undefined (n < 2, or sd not positive)."""
    if n < 2 or not sd or sd <= 0:
        return None
    return _power_at(n - 1, abs(effect) * math.sqrt(n) / sd, alpha)


def _power_at(df: int, nc: float, alpha: float) -> float:
    """P(|T| > t_crit) for T noncentral t with `df` degrees of freedom and noncentrality `nc`."""
    from scipy import stats

    t_crit = stats.t.ppf(1 - alpha / 2, df)
    tails = [float(stats.nct.sf(t_crit, df, nc)), float(stats.nct.cdf(-t_crit, df, nc))]
    return min(1.0, sum(0.0 if math.isnan(t) else t for t in tails))  # a far tail can come back NaN


@functools.lru_cache(maxsize=4096)
def _critical_nc(df: int, alpha: float, target: float) -> float:
    """The noncentrality at which the two-sided t-test with `df` degrees of freedom reaches power `target`
    (power rises with it): what n seeds need of effect sqrt(n) / sd."""
    from scipy import optimize, stats

    high = 2 * (stats.t.ppf(1 - alpha / 2, df) + stats.norm.ppf(target) + 4)  # power is ~1 there
    return float(optimize.brentq(lambda nc: _power_at(df, nc, alpha) - target, 0.0, high, xtol=1e-7))


def seeds_needed(effect: float, sd: float, target: float = POWER, alpha: float = ALPHA, most: int = 10_000):
    """The fewest seeds (2 or more) whose paired test reaches power `target` for `effect` at noise `sd`;
    None where sd is not positive, or when even `most` seeds do not. Starts from Guenther's normal
    approximation (within a seed or two) and steps to the exact noncentral t answer: n seeds suffice
    when effect sqrt(n) / sd reaches the critical noncentrality of df n - 1."""
    from scipy import stats

    if not sd or sd <= 0 or not effect:
        return None
    ratio, z_alpha = abs(effect) / sd, stats.norm.ppf(1 - alpha / 2)
    n = max(2, math.ceil(((z_alpha + stats.norm.ppf(target)) / ratio) ** 2 + z_alpha**2 / 2))  # Guenther
    if n > most + 2:
        return None

    def enough(k: int) -> bool:
        return ratio * math.sqrt(k) >= _critical_nc(k - 1, alpha, target)

    while n > 2 and enough(n - 1):
        n -= 1
    while not enough(n):
        n += 1
        if n > most:
            return None
    return n


def detectable(n: int, sd: float, target: float = POWER, alpha: float = ALPHA) -> float | None:
    """The smallest true difference a paired test of n seeds detects with power `target` at noise `sd`
    (None where undefined)."""
    if n < 2 or not sd or sd <= 0:
        return None
    return _critical_nc(n - 1, alpha, target) * sd / math.sqrt(n)


def comparisons(
    rows: list[dict], metric: str = "val_acc", alpha: float = ALPHA, effect: float = EFFECT
) -> list[dict]:
    """Every quantum cell against each of its controls (`CONTROLS`: dressed-classical of the same width,
    lr and epochs; linear; the quantum-kernel and rbf-svm SVMs of the same width), within one backbone,
    dataset and data regime, paired by seed. Each: quantum (the cell), control (its variant), `paired`
    fields, p_adjusted (Benjamini-Hochberg over all comparisons returned), significant (p_adjusted <
    alpha), verdict, and the power analysis at the measured noise (the std of the paired differences):
    effect, power (to detect `effect` with these seeds), seeds_needed (for POWER), detectable (the
    difference these seeds detect with POWER), and `metric`. metric None: each pair on test_acc where both
    its cells have it on every seed they pair, else on val_acc (`held_out_comparisons`)."""
    if metric is None:
        return held_out_comparisons(rows, alpha, effect)
    groups = group_cells([r for r in rows if r.get(metric) is not None])
    cell_list = [
        (dict(zip(CELL_KEYS, key, strict=True)), {r["seed"]: float(r[metric]) for r in members})
        for key, members in groups.items()
    ]
    out = []
    for cell, seeds in cell_list:
        if cell["variant"] != "quantum":
            continue
        for control in CONTROLS:
            match = _control(cell, control, cell_list)
            if match is not None:
                out.append({"quantum": cell, "control": control, **paired(seeds, match), "metric": metric})
    adjust(out, alpha)
    for c in out:
        sd = c["diff_std"]
        c["effect"] = effect
        c["power"] = power(c["n"], effect, sd, alpha) if sd and sd > EXACT else None
        c["seeds_needed"] = seeds_needed(effect, sd, alpha=alpha) if sd and sd > EXACT else None
        c["detectable"] = detectable(c["n"], sd, alpha=alpha) if sd and sd > EXACT else None
    return out


def held_out_comparisons(rows: list[dict], alpha: float = ALPHA, effect: float = EFFECT) -> list[dict]:
    """`comparisons` with each pair on its runs' test accuracy where both its cells have one on every seed
    they pair, else on their val accuracy (a dataset without test/): `metric` says which. The p-values
    are adjusted (Benjamini-Hochberg) over the comparisons as made: one family."""
    rows = [r for r in rows if r.get("val_acc") is not None]
    on_val = comparisons(rows, "val_acc", alpha, effect)
    # The same cells, so the same pairs, in the same order, on test accuracy: a run without one scores
    # NaN, and so does the difference of a pair with such a run on a seed it pairs.
    nan = [{**r, "test_acc": math.nan if r.get("test_acc") is None else r["test_acc"]} for r in rows]
    on_test = comparisons(nan, "test_acc", alpha, effect)
    out = []
    for test, val in zip(on_test, on_val, strict=True):
        whole = test["diff"] is not None and not math.isnan(test["diff"])
        out.append(test if whole else val)
    adjust(out, alpha)  # the family: each pair's p on its own metric
    return out


def adjust(comps: list[dict], alpha: float = ALPHA) -> None:
    """Set each comparison's p_adjusted (Benjamini-Hochberg over those with a p-value: one family),
    significant (p_adjusted < alpha) and verdict, in place."""
    from scipy import stats

    tested = [c for c in comps if c["p"] is not None]
    adjusted = stats.false_discovery_control([c["p"] for c in tested], method="bh") if tested else []
    for c in comps:
        c["p_adjusted"] = None
    for c, q in zip(tested, adjusted, strict=True):
        c["p_adjusted"] = float(q)
    for c in comps:
        c["significant"] = c["p_adjusted"] is not None and c["p_adjusted"] < alpha
        c["verdict"] = _verdict(c, alpha)


def _control(cell: dict, control: str, cell_list: list) -> dict | None:
    """The seeds of the control cell matching `cell` (see CONTROLS and PREFER), or None."""
    same = ("backbone", "weights", *REGIME_KEYS, *CONTROLS[control])
    found = [(c, s) for c, s in cell_list if c["variant"] == control and all(c[k] == cell[k] for k in same)]
    for key in PREFER.get(control, ()):  # e.g. several linear recipes: the one of the same lr, as long
        if key == "recipe":
            found = _trained_alike(cell, found)
        else:
            found = [(c, s) for c, s in found if c.get(key) == cell.get(key)] or found
    return found[0][1] if found else None


def _trained_alike(cell: dict, found: list) -> list:
    """Of the control cells `found`, those whose recipe settings that differ among them are most like
    `cell`'s (fewest differences), as trained (`recipe_settings`): a `recipe` label is relative to its own
    variant's recipe (linear's augments, quantum's does not), so labels rarely matched across variants,
    and a grid over batch size and augmentation paired each quantum cell with the first linear cell."""
    if len(found) < 2:
        return found
    mine, theirs = recipe_settings(cell), [recipe_settings(c) for c, _ in found]
    varied = [k for k in mine if len({t.get(k) for t in theirs}) > 1]
    apart = [sum(t.get(k) != mine[k] for k in varied) for t in theirs]
    return [f for f, d in zip(found, apart, strict=True) if d == min(apart)]


def recipe_settings(cell: dict) -> dict[str, str]:
    """A cell's recipe settings (`qtl.config.RECIPE_SETTINGS`, as text) as its runs were trained: its
    variant's recipe, changed where its `recipe` label says ("batch_size 2, augment True")."""
    from qtl.config import RECIPE_SETTINGS, recipe

    try:
        base = recipe(cell["variant"]).to_dict()
    except (KeyError, ValueError):  # a variant this qtl has no recipe for
        base = {}
    out = {k: str(base.get(k)) for k in RECIPE_SETTINGS}
    for part in (cell.get("recipe") or "").split(", "):
        key, _, value = part.partition(" ")
        if key in out:
            out[key] = value
    return out


def _verdict(c: dict, alpha: float) -> str:
    if c["n"] < 2:
        return f"not tested: {c['n']} paired seed(s)"
    if c["p"] is None:
        same = abs(c["diff"]) <= EXACT
        return "identical on every seed" if same else "the same difference on every seed (no test)"
    if not c["significant"]:
        return "no significant difference"
    return f"quantum {'better' if c['diff'] > 0 else 'worse'} (adjusted p < {alpha:g})"


def power_text(c: dict) -> str:
    """A comparison's power analysis in words, e.g. "power 0.41 for ±0.020; 80% needs 10 seeds; these 5
    detect ±0.031"."""
    if c.get("power") is None:
        return "power n/a (no spread in the paired differences)" if c["n"] >= 2 else "power n/a"
    needed = "over 10,000" if c["seeds_needed"] is None else str(c["seeds_needed"])
    return (
        f"power {c['power']:.2f} for ±{c['effect']:.3f}; {POWER:.0%} needs {needed} seeds; "
        f"these {c['n']} detect ±{c['detectable']:.3f}"
    )


def comparison_header(effect: float = EFFECT) -> list[str]:
    """The Markdown header (two lines) of `comparison_line`'s table."""
    head = (
        f"| quantum | vs | n | difference | 95% CI | p | p adjusted | verdict | power for ±{effect:.2f} "
        f"| seeds for {POWER:.0%} power | detectable with these seeds |"
    )
    return [head, "|" + "---|" * 11]


def comparison_line(c: dict, name: str) -> str:
    """One comparison as a Markdown table row (`comparison_header`): the test and its power: the power to
    detect ±effect, the seeds that would reach POWER, and the difference these seeds detect with POWER."""
    ci = "" if c["ci_low"] is None else f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
    p = "" if c["p"] is None else f"{c['p']:.3g}"
    q = "" if c["p_adjusted"] is None else f"{c['p_adjusted']:.3g}"
    diff = "" if c["diff"] is None else f"{c['diff']:+.3f}"
    pw = "n/a" if c.get("power") is None else f"{c['power']:.2f}"
    needed = "n/a" if c.get("power") is None else str(c["seeds_needed"] or "> 10,000")
    detect = "n/a" if c.get("detectable") is None else f"±{c['detectable']:.3f}"
    cols = (name, c["control"], c["n"], diff, ci, p, q, c["verdict"], pw, needed, detect)
    return "| " + " | ".join(map(str, cols)) + " |"


NO_RUN_FINISHED = "no run finished: nothing to report (only finished runs count)"


def format_report(rows: list[dict], metric: str | None = "val_acc", effect: float = EFFECT) -> str:
    """The text report: one line per cell (mean ± std, 95% CI), then the paired comparisons, each with
    its power analysis. metric None: each cell on test_acc where its runs have it, else on val_acc, each
    line saying which where they differ (`cell_metric`; the comparisons as `held_out_comparisons`);
    runs a given metric leaves out are counted and named by dataset (`unreported`)."""
    cell_list = cells(rows, metric)
    if not cell_list:  # every run failed or was stopped: no header over nothing
        return NO_RUN_FINISHED
    metrics = {c["metric"] for c in cell_list}
    mixed = len(metrics) > 1
    on = metrics.pop() if len(metrics) == 1 else metric or "val_acc"
    head = f"per cell, {HELD_OUT} (each line says which)" if mixed else f"{on} per cell"
    lines = [f"{head} (mean ± std over seeds, 95% CI, cut at 0 and 1)"]
    apart = settings_apart(cell_list)  # one naming for the cells and the comparisons' cells
    for c, name in zip(cell_list, cell_names(cell_list, apart), strict=True):
        std = "" if c["std"] is None else f" ± {c['std']:.4f}"
        low, high = accuracy_interval(c)
        ci = "" if low is None else f"  [{low:.4f}, {high:.4f}]"
        tag = f"{c['metric']:<9} " if mixed else ""
        lines.append(f"  {name:<44} {tag}n={c['n']}  {c['mean']:.4f}{std}{ci}")
    note = unreported(rows, metric)
    lines += [f"  note: {note}"] if note else []
    comps = comparisons(rows, metric, effect=effect)
    if comps:
        lines += ["", *format_comparisons(comps, apart)]
    return "\n".join(lines)


def format_comparisons(comps: list[dict], apart: list[str] | None = None) -> list[str]:
    """`comparisons` as text lines: each test, then its power analysis, then the count significant;
    the quantum cells named by `cell_names` with `apart`."""
    mixed = len({c.get("metric") for c in comps}) > 1  # each says its metric
    lines = ["quantum vs controls, paired by seed (difference = quantum - control)"]
    if mixed:
        lines[0] += ": on test_acc where both cells have it on every paired seed, else on val_acc"
    for c, quantum in zip(comps, cell_names([c["quantum"] for c in comps], apart), strict=True):
        diff = "n/a" if c["diff"] is None else f"{c['diff']:+.4f}"
        ci = "" if c["ci_low"] is None else f" [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
        p = "" if c["p"] is None else f"  p={c['p']:.3g} adj={c['p_adjusted']:.3g}"
        name = f"{quantum} vs {c['control']}" + (f", on {c['metric']}" if mixed else "")
        lines.append(f"  {name:<56} n={c['n']}  {diff}{ci}{p}  {c['verdict']}")
        lines.append(f"  {'':<56} {power_text(c)}")
    wins = sum(c["significant"] for c in comps)
    lines.append(f"  {wins} of {len(comps)} comparisons significant after adjustment (alpha {ALPHA:g})")
    return lines


def cell_name(cell: dict, also: str = "") -> str:
    """A short name for a cell, e.g. "quantum 4q d6 resnet18" or "quantum 4q d6 reupload efficientnet_lite0
    on digits (kfold-5, 5 per class)" (only the settings the variant has, a dataset and a regime other
    than the default); `also`, settings more (`settings_text`), goes before the regime."""
    parts = [cell["variant"]]
    if cell.get("qubits") is not None:
        parts.append(f"{cell['qubits']}q" + (f" d{cell['depth']}" if cell.get("depth") is not None else ""))
    if cell.get("reupload"):
        parts.append("reupload")
    if cell.get("feature_dim"):
        parts.append(f"f{cell['feature_dim']}")
    parts.append(str(cell.get("backbone")))
    if cell.get("dataset") not in (None, DEFAULT_DATASET):  # cells of several datasets stay apart
        parts.append(setting_text("dataset", cell["dataset"]))
    if also:
        parts.append(also)
    regime = regime_label(cell)
    return " ".join(parts) + (f" ({regime})" if regime else "")


NAMED_KEYS = ("variant", "backbone", "dataset", "qubits", "depth", "reupload", "feature_dim", "split",
              "per_class", "label_noise")  # fmt: skip
"""The CELL_KEYS `cell_name` names; the others (weights, entangler, rotation, engine, noise, lr, epochs,
n_classes) are named where cells differ in them (`settings_apart`)."""


def settings_apart(cell_list: list[dict]) -> list[str]:
    """The CELL_KEYS that `cell_name` leaves out and that tell apart some cells of `cell_list` it names
    alike, None a value like any other (an ideal cell's noise is None, a noisy one's is not); where each
    variant has its own recipe, lr and epochs differ between names, not within one, and stay unnamed."""
    groups: dict[str, list[dict]] = {}
    for c in cell_list:
        groups.setdefault(cell_name(c), []).append(c)
    return [
        k
        for k in CELL_KEYS
        if k not in NAMED_KEYS and any(len({c.get(k) for c in group}) > 1 for group in groups.values())
    ]


def dataset_label(dataset) -> str:
    """A dataset as tables name it: a path by its last part, with / or \\ between parts ("data/digits/"
    and "C:\\data\\digits" are "digits"), a name as it is."""
    text = str(dataset).rstrip("/\\")
    return re.split(r"[/\\]", text)[-1] or str(dataset)


def dataset_names(dataset) -> set[str]:
    """Every name qtl shows a run's dataset by: the path as the spec or command gave it, with or without
    a trailing / and written with / ("ds/three"), its last part as reports name it (`dataset_label`:
    "three", "five.zip"), and a zip's name without .zip, as its checkpoints record it ("five"). None is
    the default dataset."""
    text = str(dataset or DEFAULT_DATASET)
    label = dataset_label(text)
    names = {text, text.rstrip("/\\"), text.replace("\\", "/").rstrip("/"), label}
    names.add(os.path.normpath(text).replace("\\", "/"))
    if label.lower().endswith(".zip"):
        names.add(label[: -len(".zip")])
    return names


def dataset_matches(dataset, name: str) -> bool:
    """Whether `name` (a --dataset filter) is one of `dataset_names(dataset)`: "three", "ds/three/" and
    "ds/three" all pick the runs on ds/three."""
    given = str(name).replace("\\", "/").rstrip("/") or str(name)
    return bool({given, os.path.normpath(given)} & dataset_names(dataset))


def setting_text(key: str, value) -> str:
    """One CELL_KEYS setting in words, e.g. "lr 0.001", "noise-free", "on digits", "given split", "all
    classes", "5 per class", "clean labels" (a regime setting's default in words too, not "default")."""
    if key == "split":
        return "given split" if value in (None, "given") else str(value)
    if key == "dataset":
        return f"on {dataset_label(value or DEFAULT_DATASET)}"
    if key == "n_classes":
        return "all classes" if value is None else f"{value} classes"
    if key == "per_class":
        return "every training image" if value is None else f"{value} per class"
    if key == "label_noise":
        return f"{value:.0%} label noise" if value else "clean labels"
    if value is None:
        return "noise-free" if key == "noise" else f"{key} default"
    if key == "weights":
        return f"{value} weights"
    return f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"


def settings_text(cell: dict, apart: list[str]) -> str:
    """The cell's values of the settings `apart`, e.g. "lr 0.001 epochs 30" or "noise-free" ("" for
    none apart)."""
    return " ".join(setting_text(k, cell.get(k)) for k in apart)


def cell_names(cell_list: list[dict], apart: list[str] | None = None) -> list[str]:
    """`cell_name` of each cell, with the settings it leaves out where cells differ in them (`apart`,
    by default `settings_apart(cell_list)`; a report passes its cells' own to name its comparisons' cells
    the same way), so that no two cells share a name: "quantum 4q d6 resnet18 lr 0.001" and "... lr 0.01"."""
    apart = settings_apart(cell_list) if apart is None else apart
    return [cell_name(c, settings_text(c, apart)) for c in cell_list]


def grid_name(cell: dict, apart: list[str]) -> str:
    """What a qubits x depth grid (a heatmap's panel, a report's table) holds fixed beyond the variant:
    the cell's name without variant, qubits and depth, with its settings `apart`, e.g.
    "reupload efficientnet_lite0 on digits lr 0.01 (kfold-5, 5 per class)"."""
    return cell_name(
        {**cell, "variant": "", "qubits": None, "depth": None}, settings_text(cell, apart)
    ).strip()


def markdown_report(rows: list[dict], metric: str | None = "val_acc", effect: float = EFFECT) -> str:
    """The report as Markdown: per variant and `grid_name` a qubits x depth table of mean ± std, then the
    comparisons, then the runs without `metric` it leaves out, if any (`unreported`). metric None: each
    cell on `cell_metric`, a table titled by its cells' one metric, or with each cell on val_acc marked
    where they differ; each comparison as `held_out_comparisons` makes it, said where they differ."""
    cell_list = cells(rows, metric)
    apart = settings_apart(cell_list)
    grids = [grid_name(c, apart) for c in cell_list]
    several = len(set(grids)) > 1  # else no table needs naming its grid
    tables: dict[tuple, list[dict]] = {}
    for c, grid in zip(cell_list, grids, strict=True):
        tables.setdefault((c["variant"], grid), []).append(c)
    out = []
    for (variant, grid), mine in tables.items():
        depths = sorted({c["depth"] for c in mine}, key=lambda d: -1 if d is None else d)
        qubits = sorted({c["qubits"] for c in mine}, key=lambda q: -1 if q is None else q)
        on = {c["metric"] for c in mine}
        mixed = len(on) > 1  # some cells without a test split: each of those says so
        on = "test_acc, val_acc where marked (no test split)" if mixed else on.pop()
        head = ["qubits \\ depth"] + [str(d) for d in depths] if depths != [None] else ["qubits", on]
        title = f"**{variant}** {grid}" if several else f"**{variant}**"
        out += [f"{title} ({on}, mean ± std over seeds, n per cell)", ""]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for q in qubits:
            line = ["any" if q is None else str(q)]
            for d in depths:
                c = next((c for c in mine if c["qubits"] == q and c["depth"] == d), None)
                std = "" if c is None or c["std"] is None else f" ± {c['std']:.3f}"
                tag = ", val_acc" if mixed and c is not None and c["metric"] == "val_acc" else ""
                line.append("" if c is None else f"{c['mean']:.3f}{std} (n={c['n']}{tag})")
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    comps = comparisons(rows, metric, effect=effect)
    if comps:
        mixed = len({c["metric"] for c in comps}) > 1  # each pair says its metric, as the text report does
        if mixed:
            out += [
                "Comparisons on test_acc where both cells have it on every paired seed, else on val_acc:",
                "",
            ]
        out += comparison_header(effect)
        names = cell_names([c["quantum"] for c in comps], apart)
        names = [f"{n}, on {c['metric']}" if mixed else n for c, n in zip(comps, names, strict=True)]
        out += [comparison_line(c, name) for c, name in zip(comps, names, strict=True)]
        wins = sum(c["significant"] for c in comps)
        out += ["", f"{wins} of {len(comps)} comparisons significant after adjustment (alpha {ALPHA:g})."]
    note = unreported(rows, metric)
    out += ["", f"Note: {note}."] if note else []
    return "\n".join(out)
