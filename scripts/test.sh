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

# Quality gates (issue 11): lint, format and strict types, all with 0 errors. They run
# before the suite and fail the run after it, so one report shows everything.
gates=0
echo "== ruff check src tests"
ruff check src tests || gates=1
echo "== ruff format --check src tests"
ruff format --check src tests || gates=1
echo "== mypy --strict src"
mypy --strict src || gates=1

# Bytecode is written as modules are imported, for the whole run. This project's
# machines set PYTHONDONTWRITEBYTECODE, and with it set nothing is ever cached: every
# pytest process rewrote the asserts of all ~480 test modules again (collection took
# 19-21 s of CPU a process, 8 s with the rewritten modules cached), and every CLI call,
# server and MCP process the suite starts compiled again what it imports (our modules:
# test_cli_memory took 121 s of CPU against 92 s with them compiled; fastapi on every
# server start; the dev extra, installed with --no-compile, once).
unset PYTHONDONTWRITEBYTECODE

# Two parts: the tests that measure no time run on every core (pytest-xdist; one
# worker per core, CONTEXTOS_TEST_WORKERS to choose; a file on one worker, so its
# module fixtures are built once), then those that do run alone
# (the `serial` mark, tests/conftest.py: SERIAL_MODULES), so no other test's load
# moves their clock. pytest exits 5 when a part selects nothing (a path given that
# holds only one kind): that part is fine if the other ran.
for arg in "$@"; do
  case "$arg" in
    -m|-m*|-n|-n*|--numprocesses*)
      echo "scripts/test.sh chooses -m and -n itself (the serial mark, CONTEXTOS_TEST_WORKERS): select with paths or -k" >&2
      exit 2 ;;
  esac
done
# One worker more than the cores: these tests wait much of their time on the processes
# they start (CLI calls, servers, fake model servers), and a worker waiting leaves its
# core idle (the 30 test_cli_* files, session 50, 2 cores: 2 workers 177 / 131 s, 3
# workers 141 / 117 s). At most 4: each opens PostgreSQL connections (its stores'
# pools, the servers it starts), and scripts/postgres.sh allows 60.
workers=${CONTEXTOS_TEST_WORKERS:-$(python -c 'import os; print(min(4, (os.cpu_count() or 1) + 1))')}
echo "== pytest, in parallel ($workers workers): the tests that measure no time"
# --durations: the slowest tests of each part in the log, so the suite's time (kept well
# under 20 minutes) can be followed run by run.
python -m pytest -m "not serial" -n "$workers" --dist loadfile --durations=20 "$@"
parallel=$?
echo "== pytest, alone: the tests that measure time"
python -m pytest -m serial -p no:xdist --durations=20 "$@"
alone=$?
if [ "$parallel" = 5 ] && [ "$alone" = 5 ]; then
  echo "pytest collected no test: that is a failure here" >&2
  rc=1
elif [ "$parallel" != 0 ] && [ "$parallel" != 5 ]; then
  rc=$parallel
elif [ "$alone" != 0 ] && [ "$alone" != 5 ]; then
  rc=$alone
else
  rc=0
fi
if [ "$gates" != 0 ]; then
  echo "quality gates failed: see the ruff/mypy output above" >&2
  [ "$rc" = 0 ] && rc=1
fi
exit $rc
