"""checkpoints page."""

import streamlit as st

st.title("checkpoints")
