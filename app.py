"""qtl explorer: `streamlit run app.py`.

The entry point: page config, session state (initialised once, in `ui.session.init_session`), the
sidebar and the navigation over `app_pages/`; the shared UI helpers are in `ui/`.

The pages folder is deliberately not called `pages/`: Streamlit treats a `pages/` folder beside the entry
point as the legacy multipage layout until `st.navigation` has run once in the process, so a deep link
(e.g. /classify) as a fresh server's first request would run that page without this file.
"""

from pathlib import Path

import streamlit as st

from ui import datasets, session, sidebar

# a file beside the app, served by the app itself: a ":material/...:" favicon is fetched from Google Fonts
ICON = Path(__file__).parent / "ui" / "icon.svg"
st.set_page_config(page_title="qtl: quantum transfer learning", page_icon=ICON, layout="wide")
session.init_session()
datasets.restore_active()  # a reload keeps the active dataset (named in the address)

# The pages, in the navigation's order; add a page here (a thin script in app_pages/) to extend the app.
PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("app_pages/data.py", title="Data", icon=":material/dataset:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/checkpoints.py", title="Checkpoints", icon=":material/inventory_2:"),
    st.Page("app_pages/circuit.py", title="Circuit", icon=":material/schema:"),
    st.Page("app_pages/classify.py", title="Classify", icon=":material/image_search:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("app_pages/noise.py", title="Noise", icon=":material/blur_on:"),
    st.Page("app_pages/hardware.py", title="Hardware", icon=":material/developer_board:"),
    st.Page("app_pages/experiments.py", title="Experiments", icon=":material/science:"),
    st.Page("app_pages/diff_lab.py", title="Differentiation lab", icon=":material/speed:"),
]

page = st.navigation(PAGES)
try:
    page.run()
finally:
    datasets.remember_active()
    session.keep_choices()  # a page's picks survive a visit to another page (after it: no warnings)
sidebar.render()  # after the page, so it shows what the page just changed (st.sidebar renders in place)
