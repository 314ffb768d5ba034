"""diff_lab page."""

import streamlit as st

st.title("diff_lab")
