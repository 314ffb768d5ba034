"""qtl explorer: `streamlit run app.py`.

The entry point: page config, session state (initialised once, in `ui.init_session`), the sidebar and
the navigation over `pages/`.
"""

import streamlit as st

import ui

st.set_page_config(page_title="qtl: quantum transfer learning", page_icon=":material/memory:", layout="wide")
ui.init_session()

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/checkpoints.py", title="Checkpoints", icon=":material/inventory_2:"),
    st.Page("pages/circuit.py", title="Circuit", icon=":material/schema:"),
    st.Page("pages/classify.py", title="Classify", icon=":material/image_search:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/diff_lab.py", title="Differentiation lab", icon=":material/speed:"),
]

page = st.navigation(PAGES)
page.run()
ui.sidebar()  # after the page, so it shows what the page just changed (st.sidebar renders in place)
