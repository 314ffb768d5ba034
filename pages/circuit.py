"""circuit page."""

import streamlit as st

st.title("circuit")
