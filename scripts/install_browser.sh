#!/usr/bin/env bash
# Installs what the browser end-to-end test (tests/e2e, `make e2e`) needs; idempotent.
#   scripts/install_browser.sh [VENV]      (VENV defaults to .venv)
# * Debian's `chromium` (apt; needs root or sudo). Playwright's own browser download (`playwright install`)
#   is NOT used: it fetches from a CDN that CI cannot reach; the test drives the system chromium instead.
# * Playwright for Python, pinned, into VENV.
# Does nothing for a part that is already there. Exit status non-zero when something could not be installed.
set -euo pipefail
PLAYWRIGHT_VERSION="${PLAYWRIGHT_VERSION:-1.63.0}"
VENV="${1:-.venv}"
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install_browser: $PY not found (run 'make install' first)" >&2; exit 2; }

if command -v chromium >/dev/null 2>&1; then
  echo "install_browser: chromium already installed ($(command -v chromium))"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_browser: need root or sudo for apt-get" >&2; exit 2; }
    SUDO="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "install_browser: no apt-get; install chromium by hand" >&2; exit 2; }
  echo "install_browser: apt-get install chromium"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if [ "$("$PY" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || true)" = "$PLAYWRIGHT_VERSION" ]; then
  echo "install_browser: playwright $PLAYWRIGHT_VERSION already in $VENV"
else
  echo "install_browser: pip install playwright==$PLAYWRIGHT_VERSION into $VENV"
  "$PY" -m pip install --quiet "playwright==$PLAYWRIGHT_VERSION"
fi
echo "install_browser: $(chromium --version 2>/dev/null | head -n1); playwright $PLAYWRIGHT_VERSION"
