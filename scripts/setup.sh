#!/usr/bin/env bash
# Creates .venv with Python 3.11+ and installs the project (editable) with the given extras
# (comma-separated: test, vertex, postgres, gcs, s3) at exactly the versions in uv.lock, the ones the
# tests passed with. Sourced by start.sh and test.sh, and CI through test.sh; re-installs only when
# pyproject.toml or uv.lock changed. uv is installed into .venv with pip when it is not on PATH.
set -euo pipefail
extras="${1:-}"
python=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python="$candidate"; break
  fi
done
[ -n "$python" ] || { echo "cotgen: Python 3.11 or newer is needed" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.cotgen-installed${extras:+-${extras//,/-}}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ uv.lock -nt "$stamp" ]; then
  uv="$(command -v uv || true)"
  if [ -z "$uv" ]; then
    [ -x .venv/bin/uv ] || .venv/bin/python -m pip install -q "uv>=0.13,<0.14"
    uv=.venv/bin/uv
  fi
  # --locked: a uv.lock that no longer matches pyproject.toml is an error (run `uv lock`), never a
  # silent re-resolve. --inexact: start.sh (no extras) keeps what test.sh installed, and uv itself.
  # uv reads no pip configuration (index, constraints): the lock's PyPI wheels are what it installs.
  UV_PROJECT_ENVIRONMENT=.venv "$uv" sync -q --locked --inexact --python .venv/bin/python \
    ${extras:+$(printf -- '--extra %s ' ${extras//,/ })}
  touch "$stamp"
fi
