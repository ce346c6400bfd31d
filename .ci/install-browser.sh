#!/usr/bin/env bash
# Installs what the virtual terminal's browser test needs (vterm/tests/browser.rs):
# Debian's headless Chromium and its chromedriver. Idempotent: does nothing
# when chromedriver is already there.
set -euo pipefail

if [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; then
    echo "install-browser: chromium and chromedriver already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core
/usr/bin/chromedriver --version
/usr/bin/chromium --version
