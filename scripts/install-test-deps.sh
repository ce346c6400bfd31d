#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo: pyiso8583 (the
# independent ISO 8583 implementation for interoperability tests) and
# Debian's chromium with chromedriver (the virtual terminal's browser test).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import iso8583' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
fi
if [ -f .ci/install-browser.sh ]; then
  bash .ci/install-browser.sh
fi
