#!/usr/bin/env bash
# Set up emitlab on a fresh machine: a .venv with the project, the CPU build of torch 2.13.0
# (pinned in pyproject.toml), the test tools, Ray (batch prediction), and Debian's Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,tracking,ray]"

# Chromium drives the report and web-page tests through Playwright (never `playwright install`,
# which downloads its own browser). Without root or apt-get those tests are skipped, with the reason.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
      || echo "warning: could not install chromium; the browser tests will be skipped" >&2
  else
    echo "note: /usr/bin/chromium is missing and apt-get is not usable here; the browser tests will be skipped" >&2
  fi
fi
echo "emitlab is installed in .venv: try .venv/bin/emitlab --help"
