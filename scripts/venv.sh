#!/usr/bin/env bash
# Create .venv, or refresh it when requirements.txt or pyproject.toml changed since its last install.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.installed-from
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
[ -x .venv/bin/python ] || "$python" -m venv .venv
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing qtl's requirements into .venv (first time: several minutes) ..."
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
