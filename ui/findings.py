"""The Experiments page's findings view: a study's answer per dataset and regime, from its finished runs
(`qtl.experiments.findings`), the same as `qtl study` writes to docs/study.md."""

from __future__ import annotations

import streamlit as st

from ui import charts, tables


def render(rows: list[dict], effect: float) -> None:
    """The tally of verdicts, then one expander per dataset and regime: test accuracy per variant with
    95% intervals, the quantum heads' paired comparisons with their power, and the conclusion."""
    import pandas as pd

    from qtl.experiments.findings import VERDICTS, conclusion, findings, tally

    if not any(r.get("test_acc") is not None for r in rows):
        st.info("These runs have no held-out test accuracy (split = given without test/): no findings view.")
        return
    sections = findings(rows, effect=effect)
    counts = tally(sections)
    if counts:
        frame = pd.DataFrame(
            [{"quantum head vs": k, **v} for k, v in counts.items()], columns=["quantum head vs", *VERDICTS]
        )
        st.dataframe(frame, hide_index=True, width="stretch")
        st.caption(
            f"Test accuracy, paired by seed; better/worse: Benjamini-Hochberg adjusted p < 0.05 over all "
            "comparisons; equivalent: not significant and the 95% CI of the difference within "
            f"±{effect:.2f}; "
            "inconclusive: neither (the power analysis says how many seeds would settle it)."
        )
    for s in sections:
        with st.expander(s.title, expanded=False):
            st.altair_chart(charts.findings_chart(s.cells), width="stretch")
            if s.comparisons:
                st.dataframe(tables.comparison_table(s.comparisons), hide_index=True, width="stretch")
            st.markdown(conclusion(s))
