#!/usr/bin/env bash
# Set up emitlab on a fresh machine: a .venv with the project, the CPU build of torch 2.13.0
# (pinned in pyproject.toml) and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
echo "emitlab is installed in .venv: try .venv/bin/emitlab --help"
