"""Altair charts for the pages: learning curves, class probabilities, per-qubit values, circuit weights,
confusion matrices and the differentiation lab's timings. Altair and pandas load on first use."""

from __future__ import annotations


def curves_chart(records: list[dict], metric: str):
    """Altair line chart of train and val `metric` ("loss" or "acc") per epoch, one colour per run."""
    import altair as alt
    import pandas as pd

    rows = [
        {"run": r["run"], "epoch": r["epoch"], "split": split, metric: r[f"{split}_{metric}"]}
        for r in records
        for split in ("train", "val")
    ]
    title = {"loss": "cross-entropy loss", "acc": "accuracy"}[metric]
    return (
        alt.Chart(pd.DataFrame(rows), title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(zero=False)),
            color=alt.Color(
                "run:N", legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=420)
            ),
            strokeDash=alt.StrokeDash("split:N", sort=["val", "train"], legend=alt.Legend(orient="top")),
            tooltip=["run", "split", "epoch", alt.Tooltip(f"{metric}:Q", format=".3f")],
        )
        # fit-x: 260 px is the plot's own height, and the run legend below adds to it (Streamlit's default
        # "fit" squeezes plot and legends into 260 px, and a few long run names leave no plot at all)
        .properties(height=260, autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))
    )


def probs_chart(rows: list[dict]):
    """Altair grouped bars: probability per class, one group per model. rows: {model, class, probability}."""
    import altair as alt
    import pandas as pd

    return (
        alt.Chart(pd.DataFrame(rows))
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
        height=max(200, 24 * len(names))
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
