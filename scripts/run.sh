#!/usr/bin/env bash
# Starts the trainer in the background and the web service in the foreground; stopping one stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m trainer &
trainer_pid=$!
trap 'kill "$trainer_pid" 2>/dev/null; wait "$trainer_pid" 2>/dev/null || true' EXIT INT TERM
$PY -m recommender_system serve
