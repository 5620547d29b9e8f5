#!/usr/bin/env bash
# Run the whole suite: start the services the tests need, run pytest, stop them.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ -x scripts/postgres.sh ]; then
  # Starts a private PostgreSQL + pgvector on loopback and exports CONTEXTOS_TEST_PG_URL.
  # shellcheck disable=SC1091
  source scripts/postgres.sh start || echo "postgres: could not start; its tests will skip with the reason"
  trap 'bash scripts/postgres.sh stop' EXIT
fi

if [ -f scripts/browser.sh ]; then
  # Debian's chromium and the playwright package for the inspector's browser tests.
  # shellcheck disable=SC1091
  source scripts/browser.sh || echo "browser: unavailable; the browser tests will skip with the reason"
fi

python -m pytest "$@"
rc=$?
exit $rc
