#!/usr/bin/env bash
# Sets up the project and starts the platform: the Dagster UI and daemon on http://127.0.0.1:3000.
# Without GEMINI_API_KEY it also starts the local Gemini Batch emulator and works offline.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp scripts/dagster.yaml "$DAGSTER_HOME/dagster.yaml"

if [ -z "${COTGEN_DATASETS_DIR:-}" ] && [ -d ../shared/data ]; then
  export COTGEN_DATASETS_DIR="$(cd ../shared/data && pwd)"
  echo "cotgen: reading datasets from $COTGEN_DATASETS_DIR (set COTGEN_DATASETS_DIR to change)"
fi

if [ -z "${GEMINI_API_KEY:-}" ]; then
  port="${COTGEN_EMULATOR_PORT:-8765}"
  export COTGEN_GEMINI_BASE_URL="http://127.0.0.1:$port"
  echo "cotgen: GEMINI_API_KEY is not set: OFFLINE mode, using the local Gemini emulator at $COTGEN_GEMINI_BASE_URL (log: .emulator.log)"
  .venv/bin/cotgen-emulator --host 127.0.0.1 --port "$port" --state-dir .emulator \
    --latency "${COTGEN_EMULATOR_LATENCY:-10}" > .emulator.log 2>&1 &
  emulator_pid=$!
  trap 'kill $emulator_pid 2>/dev/null' EXIT
fi

# In the foreground, so Ctrl-C stops Dagster (webserver, daemon, code server), then the emulator.
.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${COTGEN_UI_PORT:-3000}"
