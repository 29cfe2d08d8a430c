#!/usr/bin/env bash
# Sets up the project and starts the platform: the Dagster UI and daemon on http://127.0.0.1:3000.
# Without GEMINI_API_KEY it also starts the local Gemini Batch emulator and works offline.
# With COTGEN_GEMINI_BACKEND=vertex (Vertex AI batch prediction) and no Google credentials, it starts
# the emulator in Vertex mode and a local GCS stand-in beside it, and works offline the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

backend="$(printf %s "${COTGEN_GEMINI_BACKEND:-}" | tr '[:upper:]' '[:lower:]')"
if [ -z "$backend" ]; then
  case "${GOOGLE_GENAI_USE_VERTEXAI:-}" in [Tt][Rr][Uu][Ee]|1) backend=vertex ;; *) backend=developer ;; esac
fi
if [ "$backend" = vertex ]; then
  source scripts/setup.sh vertex  # gcsfs for the staging bucket, the GCS stand-in for offline use
else
  source scripts/setup.sh
fi

export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp scripts/dagster.yaml "$DAGSTER_HOME/dagster.yaml"

if [ -z "${COTGEN_DATASETS_DIR:-}" ] && [ -d ../shared/data ]; then
  export COTGEN_DATASETS_DIR="$(cd ../shared/data && pwd)"
  echo "cotgen: reading datasets from $COTGEN_DATASETS_DIR (set COTGEN_DATASETS_DIR to change)"
fi

# Each server starts as the leader of its own process group (set -m), so that stopping the group stops
# what the server started too: dagster dev's webserver, daemon and code servers.
servers=()
spawn() {
  set -m
  "$@" < /dev/null &
  set +m
  servers+=($!)
}
# Ctrl-C reaches this script alone (the servers are in their groups), as does a SIGTERM: either way
# every group gets SIGINT (dagster dev stops on it, not on SIGTERM), and SIGKILL when still there 5 s on.
stop_servers() {
  trap '' INT TERM  # a second Ctrl-C must not cut the shutdown short
  [ ${#servers[@]} -gt 0 ] || return 0
  local group left
  for group in "${servers[@]}"; do kill -INT -- "-$group" 2>/dev/null || true; done
  for _ in {1..50}; do
    left=()
    for group in "${servers[@]}"; do ! kill -0 -- "-$group" 2>/dev/null || left+=("$group"); done
    [ ${#left[@]} -gt 0 ] || return 0
    sleep 0.1
  done
  for group in "${left[@]}"; do kill -KILL -- "-$group" 2>/dev/null || true; done
}
trap stop_servers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start_emulator() {
  spawn .venv/bin/cotgen-emulator --host 127.0.0.1 --port "$port" --state-dir .emulator \
    --latency "${COTGEN_EMULATOR_LATENCY:-10}" > .emulator.log 2>&1
}

if [ "$backend" = vertex ]; then
  if ! .venv/bin/python -c "import google.auth; google.auth.default()" 2>/dev/null; then
    port="${COTGEN_EMULATOR_PORT:-8765}"
    gcs_port="${COTGEN_GCS_EMULATOR_PORT:-9023}"
    export COTGEN_GEMINI_BASE_URL="http://127.0.0.1:$port"
    export STORAGE_EMULATOR_HOST="http://127.0.0.1:$gcs_port" FSSPEC_GS_TOKEN=anon
    export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false  # else gcsfs probes each bucket over gRPC, 60 s a call
    export GOOGLE_CLOUD_PROJECT="${GOOGLE_CLOUD_PROJECT:-cotgen-offline}"
    export COTGEN_VERTEX_STAGING="${COTGEN_VERTEX_STAGING:-gs://cotgen-offline/staging}"
    bucket="${COTGEN_VERTEX_STAGING#gs://}"
    echo "cotgen: no Google credentials: OFFLINE mode, Vertex AI batch prediction goes to the local emulator at $COTGEN_GEMINI_BASE_URL (log: .emulator.log) and $COTGEN_VERTEX_STAGING to a local GCS stand-in at $STORAGE_EMULATOR_HOST (files in .gcs-emulator/, log: .gcs-emulator.log)"
    mkdir -p .gcs-emulator
    STORAGE_BASE="$PWD/.gcs-emulator" spawn .venv/bin/gcp-storage-emulator start --host 127.0.0.1 \
      --port "$gcs_port" --default-bucket "${bucket%%/*}" > .gcs-emulator.log 2>&1
    start_emulator
  fi
  # A missing or bad Vertex AI setting is one line here, not a code location that fails to load.
  .venv/bin/python - <<'PY' || exit 1
import sys
from cotgen_assets.core.settings import SettingError
from cotgen_assets.backends.resource import gemini_from_env
try:
    print("cotgen: " + gemini_from_env().describe())
except SettingError as error:
    sys.exit(f"cotgen: {error}")
PY
elif [ -z "${GEMINI_API_KEY:-}" ]; then
  port="${COTGEN_EMULATOR_PORT:-8765}"
  export COTGEN_GEMINI_BASE_URL="http://127.0.0.1:$port"
  echo "cotgen: GEMINI_API_KEY is not set: OFFLINE mode, using the local Gemini emulator at $COTGEN_GEMINI_BASE_URL (log: .emulator.log)"
  start_emulator
fi

# In the background and waited for: bash runs a trap only once a foreground command has ended.
spawn .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${COTGEN_UI_PORT:-3000}"
wait "$!"
