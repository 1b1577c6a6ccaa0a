#!/bin/sh
# Make sure a headless Chromium is on PATH for the report's browser test
# (tests/integration/test_report_browser.py). Idempotent and quiet: does nothing when
# `chromium` is already installed. Never fails the build: when it cannot install (no root,
# no apt, no network) it prints a warning and the browser test skips with its own reason.
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "warning: chromium not found and not root; the report browser test will skip" >&2
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: chromium not found and apt-get unavailable; the report browser test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 \
         && $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; then
    exit 0
fi
echo "warning: could not install chromium with apt-get; the report browser test will skip" >&2
exit 0
