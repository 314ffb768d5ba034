#!/usr/bin/env bash
# Run the whole test suite, lint included: sets up .venv and the test browser when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
# The end-to-end test drives Debian's Chromium with Playwright; it never downloads a browser.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's chromium for the end-to-end test ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will report it missing"
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
