#!/usr/bin/env bash
# Installs the Debian chromium that the browser tests (tests/browser) drive through
# Playwright's Python package. Never use `playwright install`: it downloads browsers
# from the network, which these machines cannot reach. Idempotent; needs root (or sudo).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
echo "installed: $(command -v chromium)"
