"""Dataframes for `st.dataframe`: checkpoint metadata, latency, mean ± std summaries, lab results.
pandas loads on first use."""

from __future__ import annotations


def checkpoint_table(infos: list, loaded: set[str]):
    """A dataframe of checkpoint metadata, one row per CheckpointInfo."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "file": i.path.name,
                "loaded": str(i.path.resolve()) in loaded,
                "variant": i.variant,
                "backbone": i.backbone,
                "weights": i.weights,
                "qubits": i.n_qubits,
                "depth": i.depth,
                "val acc": None if i.val_acc is None else round(i.val_acc, 3),  # as Compare shows it
                "epochs": i.epochs,
                "finished": i.stop_note or "yes",  # a run stopped early: how far it got, and why
                "created": i.created[:19].replace("T", " "),
                "size": f"{i.size_bytes / 1024:.0f} KB"
                if i.size_bytes < 2**20
                else f"{i.size_bytes / 2**20:.1f} MB",
            }
            for i in infos
        ]
    )


def latency_table(timings: list[dict], n_images: int):
    """One row per model: variant and wall time for the images (a frozen model's share of a backbone pass
    it shares with others counted in full). timings: {model, variant, seconds, shared}."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "model": t["model"],
                "variant": t["variant"],
                "latency (ms)": round(t["seconds"] * 1e3, 1),
                "per image (ms)": round(t["seconds"] * 1e3 / n_images, 1),
                "shared backbone pass": t["shared"],
            }
            for t in timings
        ]
    )


def summary_table(summary: list[dict], fields: tuple[str, ...]):
    """A dataframe of qtl.experiments.stats.summarise output, each field as "mean ± std"."""
    import pandas as pd

    digits = {"val_acc": 3, "val_loss": 3, "train_time_s": 2, "latency_ms": 1}

    def cell(row, f):
        mean, std = row[f"{f}_mean"], row[f"{f}_std"]
        if mean is None:
            return "–"
        d = digits.get(f, 0)
        return f"{mean:.{d}f}" if std is None else f"{mean:.{d}f} ± {std:.{d}f}"

    names = {
        "val_acc": "val accuracy",
        "val_loss": "val loss",
        "classical": "classical params",
        "quantum": "quantum params",
        "train_time_s": "training time (s)",
        "latency_ms": "latency (ms)",
    }
    return pd.DataFrame(
        [{"setup": r["setup"], "seeds": r["n"], **{names[f]: cell(r, f) for f in fields}} for r in summary]
    )


def per_class_table(metrics: dict):
    """Per-class precision, recall, F1 and support (one row per class), then the macro averages."""
    import pandas as pd

    rows = [
        {"class": name, **{k: round(v, 3) if k != "support" else v for k, v in r.items()}}
        for name, r in metrics["per_class"].items()
    ]
    macro = {k: round(metrics[f"macro_{k}"], 3) for k in ("precision", "recall", "f1")}
    rows.append({"class": "macro average", **macro, "support": metrics["n"]})
    return pd.DataFrame(rows)


LAB_COLUMNS = {"max |grad − ref|": {"format": "%.1e"}}
"""How `lab_table`'s columns are shown (st.column_config.NumberColumn arguments): a gradient difference
as 3.4e-16, not 0.0000000000000003."""


def lab_table(results: list):
    """A dataframe of qtl.analysis.difflab results: one row per case (shown with `LAB_COLUMNS`)."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "engine / method": r.case.label,
                "qubits": r.case.n_qubits,
                "depth": r.case.depth,
                "batch": r.case.batch,
                "step (ms)": None if r.step_ms is None else round(r.step_ms, 2),
                "max |grad − ref|": r.max_grad_error,
                "note": r.error or ("over the time cap" if r.over_cap else ""),
            }
            for r in results
        ]
    )


def comparison_table(comps: list[dict], apart: list[str] | None = None):
    """A dataframe of qtl.experiments.stats.comparisons: one row per quantum cell and control, with the
    verdict; the quantum cells named as the page names its cells (`apart`: `stats.settings_apart`)."""
    import pandas as pd

    from qtl.experiments.stats import cell_names

    def num(value, fmt):
        return "–" if value is None else format(value, fmt)

    def seeds_needed(c: dict) -> str:  # text like its neighbours: one type per column for Arrow
        if c.get("power") is None:
            return "–"
        return f"{c['seeds_needed']:,}" if c["seeds_needed"] else "> 10,000"

    return pd.DataFrame(
        [
            {
                "quantum": name,
                "vs": c["control"],
                "seeds": c["n"],
                "difference": num(c["diff"], "+.3f"),
                "95% CI": "–" if c["ci_low"] is None else f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                "p": num(c["p"], ".3g"),
                "p adjusted": num(c["p_adjusted"], ".3g"),
                "verdict": c["verdict"],
                f"power for ±{c.get('effect', 0):.2f}": num(c.get("power"), ".2f"),
                "seeds for 80% power": seeds_needed(c),
            }
            for c, name in zip(comps, cell_names([c["quantum"] for c in comps], apart), strict=True)
        ]
    )


def csv_bytes(rows: list[dict]) -> bytes:
    """Rows (dicts with the same keys) as CSV bytes, for a download button."""
    import pandas as pd

    return pd.DataFrame(rows).to_csv(index=False).encode()
