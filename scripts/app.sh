#!/usr/bin/env bash
# Launch the qtl explorer: sets up .venv when needed, then `streamlit run app.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
exec .venv/bin/streamlit run app.py "$@"
