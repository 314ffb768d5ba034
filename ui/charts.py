"""Altair charts for the pages: learning curves, gradient norms per parameter group, class probabilities,
per-qubit values, circuit weights, confusion matrices, the differentiation lab's timings and a study's
findings. Altair and pandas load on first use."""

from __future__ import annotations

import math
import numbers


def curves_chart(records: list[dict], metric: str):
    """Altair line chart of train and val `metric` ("loss" or "acc") per epoch, one colour per run.

    A history drawn with what it has: a run whose epochs lack a split's value (a hand-made or older
    checkpoint without train_loss, say) is drawn without that curve, and the chart's subtitle says in one
    line which curves are not recorded; a record without "epoch" counts as its run's next epoch."""
    import altair as alt
    import pandas as pd

    rows, missing, epochs = [], {}, {}
    for r in records:
        epoch = r.get("epoch")
        epoch = epochs.get(r["run"], 0) + 1 if not _number(epoch) else epoch
        epochs[r["run"]] = epoch
        for split in ("train", "val"):
            value = r.get(f"{split}_{metric}")
            if _number(value):
                rows.append({"run": r["run"], "epoch": epoch, "split": split, metric: value})
            else:
                missing.setdefault(f"{split}_{metric}", []).append(r["run"])
    title = {"loss": "cross-entropy loss", "acc": "accuracy"}[metric]
    runs = len({r["run"] for r in records})
    # past the theme's 10 colours, 20 distinct ones (with 12 runs two pairs of curves shared a colour)
    colours = alt.Scale(scheme="tableau20") if runs > 10 else alt.Undefined
    return (
        alt.Chart(
            pd.DataFrame(rows, columns=["run", "epoch", "split", metric]),
            title=alt.Title(title, subtitle=note) if (note := _not_recorded(missing, runs)) else title,
        )
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(zero=False)),
            color=alt.Color(
                "run:N",
                scale=colours,
                legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=420),
            ),
            strokeDash=alt.StrokeDash("split:N", sort=["val", "train"], legend=alt.Legend(orient="top")),
            tooltip=["run:N", "split:N", "epoch:Q", alt.Tooltip(f"{metric}:Q", format=".3f")],
        )
        # fit-x: 260 px is the plot's own height, and the run legend below adds to it (Streamlit's default
        # "fit" squeezes plot and legends into 260 px, and a few long run names leave no plot at all)
        .properties(height=260, autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))
    )


def _number(value) -> bool:
    """A value a curve can draw: a finite real number (not None, NaN, infinite, text or a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _not_recorded(missing: dict[str, list[str]], runs: int) -> str:
    """One line: which curves some epochs do not record, e.g. "not recorded: train_loss (run-a, run-b)",
    "not recorded: train_loss (every run)"; "" when every epoch has them all."""
    said = []
    for key, where in missing.items():
        names = list(dict.fromkeys(where))
        if len(names) == runs > 1:
            whose = "every run"
        else:
            whose = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        said.append(f"{key} ({whose})")
    return "not recorded: " + "; ".join(said) if said else ""


def grad_norms_chart(records: list[dict]):
    """Altair log-scale lines of each epoch's mean gradient norm per parameter group (backbone, pre-net,
    circuit, hidden, post-net), one colour per group, one dash per run; None (no chart) when no epoch
    recorded any."""
    import altair as alt
    import pandas as pd

    from qtl.training.gradients import GROUPS

    rows = [
        {"run": r["run"], "epoch": r["epoch"], "group": g.replace("_", "-"), "norm": r[f"grad_{g}"]}
        for r in records
        for g in GROUPS
        if r.get(f"grad_{g}")
    ]
    if not rows:
        return None
    return (
        alt.Chart(pd.DataFrame(rows), title="gradient norm per parameter group (mean over the epoch)")
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("norm:Q", title="L2 norm", scale=alt.Scale(type="log")),
            color=alt.Color(
                "group:N", sort=[g.replace("_", "-") for g in GROUPS], legend=alt.Legend(orient="top")
            ),
            strokeDash=alt.StrokeDash("run:N", legend=alt.Legend(orient="bottom", labelLimit=420)),
            tooltip=["run", "group", "epoch", alt.Tooltip("norm:Q", format=".2e")],
        )
        .properties(height=260, autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))
    )


CLASS_ROW_PX = 20  # a class's bar and its label in a per-model probability chart


def probs_chart(rows: list[dict]):
    """Altair grouped bars: probability per class, one group per model. rows: {model, class, probability}.
    Models of different classes (a 10-class and a 2-class one) get a chart each, stacked, so that no
    model's bars leave room for classes it does not have, and no two classes share a colour."""
    import altair as alt
    import pandas as pd

    frame = pd.DataFrame(rows)
    models = list(dict.fromkeys(frame["model"]))
    if len({tuple(frame.loc[frame["model"] == m, "class"]) for m in models}) > 1:
        tooltip = ["class", alt.Tooltip("probability:Q", format=".3f")]
        charts = [
            alt.Chart(frame[frame["model"] == m], title=alt.TitleParams(m, anchor="start", fontSize=12))
            .mark_bar()
            .encode(
                # every class named: at 14 px a row, the axis dropped every other label
                y=alt.Y("class:N", title=None, sort=None, axis=alt.Axis(labelOverlap=False)),
                x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
                color=alt.Color("class:N", legend=None),
                tooltip=tooltip,
            )
            .properties(height=alt.Step(CLASS_ROW_PX))
            for m in models
        ]
        return alt.vconcat(*charts).resolve_scale(color="independent", y="independent")
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("model:N", title=None, sort=None, axis=alt.Axis(labelLimit=320)),
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("class:N"),
            yOffset="class:N",
            tooltip=["model", "class", alt.Tooltip("probability:Q", format=".3f")],
        )
        .properties(height=alt.Step(14))
    )


def qubit_chart(values: dict[str, list[float]], title: str):
    """Altair grouped bars per qubit for several named series, e.g. {"angle": [...], "<Z>": [...]}."""
    import altair as alt
    import pandas as pd

    rows = [{"qubit": i, "series": k, "value": v} for k, vs in values.items() for i, v in enumerate(vs)]
    return (
        alt.Chart(pd.DataFrame(rows), title=title)
        .mark_bar()
        .encode(
            x=alt.X("qubit:O"),
            y=alt.Y("value:Q"),
            color="series:N",
            xOffset="series:N",
            tooltip=["qubit", "series", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(height=260)
    )


def bond_chart(log2_bonds: list[int], title: str):
    """Altair bars of the exact MPS bond dimension at each cut (between wire i and i + 1): bar height
    log2(bond) on a linear axis labelled in bond dimensions (bars on a log scale start from 0, which a
    log scale cannot place, so none are drawn), a gridline at each power of 2 (every other one or fewer
    past 8) up to the tallest bar's, and room above the title, whose top the app's frame clipped."""
    import altair as alt
    import pandas as pd

    rows = [{"cut": f"{i}|{i + 1}", "log2 bond": b, "bond": 2**b} for i, b in enumerate(log2_bonds)]
    top = max(max(log2_bonds, default=0), 1)
    step = -(-top // 8)  # at most 9 ticks
    ticks = list(range(0, top + step, step))
    return (
        alt.Chart(pd.DataFrame(rows), title=alt.Title(title, anchor="start", offset=8))
        .mark_bar()
        .encode(
            x=alt.X("cut:N", sort=None, title="cut between wires"),
            y=alt.Y(
                "log2 bond:Q",
                title="exact bond dimension",
                scale=alt.Scale(domain=[0, ticks[-1]], nice=False),
                axis=alt.Axis(values=ticks, labelExpr="pow(2, datum.value)"),
            ),
            tooltip=["cut", "bond"],
        )
        .properties(height=220, padding={"top": 12, "left": 5, "right": 5, "bottom": 5})
    )


def weights_chart(weights):
    """Altair heatmap of trained circuit angles: (depth, n) or (depth, n, 3) -> one cell per angle."""
    import altair as alt
    import pandas as pd

    w = weights.detach().cpu().reshape(weights.shape[0], weights.shape[1], -1)
    rows = [
        {"layer": k, "qubit": i, "angle": j, "value": float(w[k, i, j])}
        for k in range(w.shape[0])
        for i in range(w.shape[1])
        for j in range(w.shape[2])
    ]
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_rect()
        .encode(
            x=alt.X("layer:O"),
            y=alt.Y("qubit:O"),
            color=alt.Color("value:Q", scale=alt.Scale(scheme="redblue", domainMid=0), title="θ (rad)"),
            facet=alt.Facet("angle:O", title=None) if w.shape[2] > 1 else alt.Undefined,
            tooltip=["layer", "qubit", alt.Tooltip("value:Q", format=".4f")],
        )
    )


def confusion_chart(metrics: dict, title: str):
    """Altair heatmap of a confusion matrix (rows = true class) with counts written in."""
    import altair as alt
    import pandas as pd

    names = metrics["class_names"]
    cm = metrics["confusion_matrix"]
    rows = [
        {"true": names[i], "predicted": names[j], "count": cm[i][j]}
        for i in range(len(names))
        for j in range(len(names))
    ]
    base = alt.Chart(pd.DataFrame(rows), title=alt.TitleParams(title, fontSize=11, limit=380)).encode(
        x="predicted:N", y="true:N"
    )
    heat = base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="purples"), legend=None))
    size = 14 if len(names) <= 5 else 10
    return (heat + base.mark_text(fontSize=size).encode(text="count:Q")).properties(
        # fit-x: the height is the plot's own (Streamlit's default "fit" squeezes the axes into it)
        height=max(200, 24 * len(names)),
        autosize=alt.AutoSizeParams(type="fit-x", contains="padding"),
    )


def lab_chart(results: list):
    """Altair log-scale lines: step time against qubits, one line per engine / method."""
    import altair as alt
    import pandas as pd

    rows = [
        {"engine / method": r.case.label, "qubits": r.case.n_qubits, "step (ms)": r.step_ms}
        for r in results
        if r.step_ms is not None
    ]
    return (
        alt.Chart(
            pd.DataFrame(rows, columns=["engine / method", "qubits", "step (ms)"]), title="time per step"
        )
        .mark_line(point=True)
        .encode(
            x=alt.X("qubits:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("step (ms):Q", scale=alt.Scale(type="log")),
            color="engine / method:N",
            tooltip=["engine / method", "qubits", alt.Tooltip("step (ms):Q", format=".2f")],
        )
        .properties(height=320)
    )


def _cells_frame(cells: list[dict]):
    """qtl.experiments.stats cells as a dataframe with printable qubits / depth ("-": the variant has
    none)."""
    import pandas as pd

    from qtl.experiments.stats import cell_names

    df = pd.DataFrame(cells)
    for col in ("qubits", "depth"):
        df[col] = [("-" if v is None or v != v else str(int(v))) for v in df[col]]
    df["cell"] = cell_names(cells)
    return df


def _ci_or_mean(df):
    """Cells without a confidence interval (one seed) get the mean as both ends."""
    df["ci_low"] = df["ci_low"].fillna(df["mean"])
    df["ci_high"] = df["ci_high"].fillna(df["mean"])
    return df


def heatmap_worth_drawing(cells: list[dict]) -> bool:
    """Whether some variant's cells vary in qubits or depth: else a heatmap is one square per panel."""
    grids: dict = {}
    for c in cells:
        grids.setdefault(c.get("variant"), set()).add((c.get("qubits"), c.get("depth")))
    return any(len(grid) > 1 for grid in grids.values())


def sweep_heatmap(cells: list[dict]):
    """Mean val accuracy over qubits x depth, one panel per variant (linear: one cell), and a row of
    panels per dataset, regime and other setting where the sweep has several (`stats.grid_name`)."""
    import altair as alt

    from qtl.experiments.stats import grid_name, settings_apart

    df = _cells_frame(cells)
    apart = settings_apart(cells)
    df["panel"] = [grid_name(c, apart) for c in cells]
    order = sorted({q for q in df["qubits"] if q != "-"}, key=int) + ["-"]
    depths = sorted({d for d in df["depth"] if d != "-"}, key=int) + ["-"]
    base = alt.Chart(df).encode(
        x=alt.X("qubits:O", sort=order, title="qubits"),
        y=alt.Y("depth:O", sort=depths, title="depth"),
    )
    rect = base.mark_rect().encode(
        color=alt.Color("mean:Q", title="val acc", scale=alt.Scale(scheme="viridis")),
        tooltip=["cell", "n", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("std:Q", format=".3f")],
    )
    middle = (df["mean"].min() + df["mean"].max()) / 2  # dark text on the light half of the colours
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("mean:Q", format=".3f"),
        color=alt.condition(f"datum.mean > {middle}", alt.value("black"), alt.value("white")),
    )
    rows = {"row": alt.Row("panel:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left"))}
    return (
        alt.layer(rect, text, data=df)
        .properties(width=170, height=150)
        .facet(column=alt.Column("variant:N", title=None), **(rows if df["panel"].nunique() > 1 else {}))
        .resolve_scale(x="independent")
    )


def cell_errorbars(cells: list[dict]):
    """Each cell's mean val accuracy with its 95% confidence interval (Student t over seeds)."""
    import altair as alt

    df = _ci_or_mean(_cells_frame(cells))
    domain = [max(0.0, df["ci_low"].min()), min(1.0, df["ci_high"].max())]  # accuracies: within [0, 1]
    y = alt.Y("cell:N", sort=None, title=None, axis=alt.Axis(labelLimit=260))
    tip = ["cell", "n", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
           alt.Tooltip("ci_high:Q", format=".3f")]  # fmt: skip
    bars = (
        alt.Chart(df)
        .mark_errorbar(ticks=True)
        .encode(
            x=alt.X(
                "ci_low:Q",
                title="val accuracy (mean, 95% CI; cut at 0 and 1)",
                scale=alt.Scale(domain=domain, clamp=True),
            ),
            x2="ci_high:Q",
            y=y,
            color="variant:N",
        )
    )
    points = (
        alt.Chart(df).mark_point(filled=True, size=50).encode(x="mean:Q", y=y, color="variant:N", tooltip=tip)
    )
    return (bars + points).properties(height=alt.Step(16))


def _with_width(cells: list[dict]) -> list[dict]:
    """The cells of variants with a circuit width (linear has none: None, or NaN from a dataframe)."""
    return [c for c in cells if c.get("qubits") is not None and c["qubits"] == c["qubits"]]


def widths(cells: list[dict]) -> list[int]:
    """The distinct circuit widths (qubits) among the cells, sorted."""
    return sorted({int(c["qubits"]) for c in _with_width(cells)})


def width_chart(cells: list[dict]):
    """Mean val accuracy (95% CI) against the circuit's width, one line per variant and depth (log2 x)."""
    import altair as alt
    import pandas as pd

    df = _ci_or_mean(pd.DataFrame(_with_width(cells)))
    df["line"] = [
        v if d is None or d != d else f"{v}, depth {int(d)}"
        for v, d in zip(df["variant"], df["depth"], strict=True)
    ]
    x = alt.X(
        "qubits:Q",
        title="qubits (width)",
        scale=alt.Scale(type="log", base=2),
        axis=alt.Axis(values=widths(cells)),
    )
    tip = ["line", "qubits", "n", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
           alt.Tooltip("ci_high:Q", format=".3f"), alt.Tooltip("train_time_s:Q", format=".1f")]  # fmt: skip
    base = alt.Chart(df).encode(x=x, color=alt.Color("line:N", title=None))
    line = base.mark_line(point=True).encode(y=alt.Y("mean:Q", title="val accuracy (mean, 95% CI)",
                                                       scale=alt.Scale(zero=False)), tooltip=tip)  # fmt: skip
    bars = base.mark_errorbar(ticks=True).encode(y=alt.Y("ci_low:Q", title=None), y2="ci_high:Q")
    return line + bars


def params_chart(rows: list[dict]):
    """Every run's val accuracy against its trainable parameters (classical + quantum, log scale)."""
    import altair as alt
    import pandas as pd

    df = pd.DataFrame(rows)
    df["parameters"] = df["classical"] + df["quantum"]
    return (
        alt.Chart(df)
        .mark_circle(size=60, opacity=0.7)
        .encode(
            x=alt.X("parameters:Q", scale=alt.Scale(type="log"), title="trainable parameters"),
            y=alt.Y("val_acc:Q", title="val accuracy", scale=alt.Scale(zero=False)),
            color="variant:N",
            tooltip=[
                "variant",
                "qubits",
                "depth",
                "seed",
                "parameters",
                alt.Tooltip("val_acc:Q", format=".3f"),
            ],
        )
        .properties(height=280)
    )


def cost_chart(cells: list[dict]):
    """Mean training time per cell (seconds of training epochs, per run)."""
    import altair as alt

    df = _cells_frame(cells)
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("train_time_s:Q", title="training time per run (s)"),
            y=alt.Y("cell:N", sort=None, title=None, axis=alt.Axis(labelLimit=260)),
            color="variant:N",
            tooltip=["cell", alt.Tooltip("train_time_s:Q", format=".2f")],
        )
        .properties(height=alt.Step(16))
    )


def findings_chart(section_cells: list[dict]):
    """Altair points with 95% CI bars: the test accuracy of every variant in one section of a study."""
    import altair as alt
    import pandas as pd

    rows = [
        {
            "variant": c["variant"] + (" reupload" if c.get("reupload") else ""),
            "test accuracy": c["mean"],
            "low": c["ci_low"] if c["ci_low"] is not None else c["mean"],
            "high": c["ci_high"] if c["ci_high"] is not None else c["mean"],
            "seeds": c["n"],
        }
        for c in section_cells
    ]
    base = alt.Chart(pd.DataFrame(rows)).encode(y=alt.Y("variant:N", title=None, sort=None))
    bars = base.mark_rule().encode(
        x=alt.X("low:Q", title="test accuracy (95% CI)", scale=alt.Scale(zero=False)), x2="high:Q"
    )
    points = base.mark_point(filled=True, size=60).encode(
        x="test accuracy:Q", tooltip=["variant", alt.Tooltip("test accuracy:Q", format=".3f"), "seeds"]
    )
    return (bars + points).properties(height=alt.Step(22))
