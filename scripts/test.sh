#!/usr/bin/env bash
# Sets up the project with its test extras and runs the whole test suite (arguments go to pytest).
# The browser tests need Debian's chromium, the Postgres tests a PostgreSQL server (initdb, pg_ctl):
# installed here when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh test

if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "cotgen: installing Debian chromium for the browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "cotgen: the browser tests need chromium (sudo apt-get install chromium)" >&2
  fi
fi

if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "cotgen: installing Debian postgresql for the Postgres tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "cotgen: the Postgres tests need a PostgreSQL server (sudo apt-get install postgresql)" >&2
  fi
fi

if [ -z "${COTGEN_DATASETS_DIR:-}" ] && [ -d ../shared/data ]; then
  export COTGEN_DATASETS_DIR="$(cd ../shared/data && pwd)"
fi
# The architecture and the style first: a broken layer or an unformatted file fails the run.
echo "cotgen: ruff check, ruff format --check, lint-imports"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
# Four workers, a module per worker at a time (its module-scoped fixtures are made once): the
# platform tests mostly wait on sensor ticks and job latency, so more workers than cores pay.
exec .venv/bin/python -m pytest -n 4 --dist loadscope --no-loadscope-reorder "$@"
