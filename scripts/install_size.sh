#!/usr/bin/env bash
# Issue 12's install target, measured as a new user meets it: `make demo` on a fresh
# clone of HEAD (the venv <= 400 MB, install <= 60 s with a warm pip cache), then the
# README's next steps in that venv (keys, serve + curl, mcp, chat --provider anthropic
# and openai against the local fake providers, a postgresql:// --db when
# CONTEXTOS_TEST_PG_URL is set), failing if any of them asks for a missing package.
# The venv is measured again after them: Python writes bytecode for what it imports.
#
# Usage: bash scripts/install_size.sh [WORKDIR [REV]]
#   WORKDIR: default a new temporary folder; REV: the commit to clone (default HEAD),
#   e.g. an older one to compare under the same load.
# Prints one line per stage and a last line of JSON.
set -euo pipefail

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
rm -rf "$work/clone" "$work/data" "$work/cache" "$work/config" "$work/fakes.txt"
git clone -q "$repo" "$work/clone"
cd "$work/clone"
git checkout -q "${2:-HEAD}"
echo "measuring $(git log -1 --format='%h %s' | cut -c1-72)"
# As a user's shell: Python writes bytecode on import (the venv is measured with it).
unset PYTHONDONTWRITEBYTECODE
# The demo and the steps write their database, keys and graph cache here, not in ~.
export XDG_DATA_HOME="$work/data" XDG_CACHE_HOME="$work/cache" XDG_CONFIG_HOME="$work/config"
log="$work/steps.log"
: >"$log"

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
mb() { du -sm "$1" | cut -f1; }

load() { cut -d' ' -f1 /proc/loadavg; }
echo "load average at the start: $(load) ($(nproc) cores)"
t0=$(now)
make -s .venv/.installed >>"$log" 2>&1
t1=$(now)
install_s=$(secs "$t0" "$t1")
installed_mb=$(mb .venv)
echo "install: ${install_s} s, venv ${installed_mb} MB (du -sm .venv)"

make -s demo >>"$log" 2>&1
t2=$(now)
demo_s=$(secs "$t1" "$t2")
demo_mb=$(mb .venv)
echo "demo run: ${demo_s} s, venv ${demo_mb} MB after it"

bin="$PWD/.venv/bin"
step() {  # step NAME CMD...: run, keep its output, refuse a missing-package hint
    local out rc=0
    out=$("${@:2}" 2>&1) || rc=$?
    printf '== %s (exit %s)\n%s\n' "$1" "$rc" "$out" >>"$log"
    if grep -qiE "pip install|No module named|needs the optional package" <<<"$out"; then
        echo "FAILED: $1 asks for a missing package:"
        grep -iE "pip install|No module named|needs the optional package" <<<"$out"
        exit 1
    fi
    echo "$1: exit $rc"
    if [ "$rc" != 0 ]; then
        echo "FAILED: $1 (its output is in $log)"
        exit 1
    fi
}

keys=$("$bin/contextos" keys create --tenant acme --name laptop 2>>"$log")
KEY=${keys%%$'\n'*}  # the first line: ctx_<id>_<secret>
port=$("$bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$bin/contextos" serve --port "$port" >>"$log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
step "serve + curl add" curl -sf -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
    -d '{"messages": "I moved to Lisbon", "user_id": "ana"}' "http://127.0.0.1:$port/v1/memories"
step "serve + curl search" curl -sf -H "Authorization: Bearer $KEY" \
    -d '{"query": "where does ana live", "user_id": "ana"}' "http://127.0.0.1:$port/v1/memories/search"
kill -TERM "$serve_pid"
wait "$serve_pid" || true

# MCP over stdio: an initialize request, then end of input.
init='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"install_size","version":"0"}}}'
step "mcp" env CONTEXTOS_API_KEY="$KEY" timeout 60 "$bin/contextos" mcp <<<"$init"

# chat --provider against the shipped fake providers (a real key would reach the real API).
fakes="$work/fakes.txt"
"$bin/python" -c "
import sys, time
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_openai import FakeOpenAI
a, o = FakeAnthropic().start(), FakeOpenAI().start()
open(sys.argv[1], 'w').write(a.base_url + ' ' + o.base_url + '\n')
time.sleep(600)
" "$fakes" &
fakes_pid=$!
for _ in $(seq 100); do [ -s "$fakes" ] && break; sleep 0.1; done
read -r anthropic_url openai_url <"$fakes"
step "chat --provider anthropic" env ANTHROPIC_API_KEY=test ANTHROPIC_BASE_URL="$anthropic_url" \
    timeout 120 "$bin/contextos" chat --provider anthropic --no-show-window <<<"I moved to Lisbon"
step "chat --provider openai" env OPENAI_API_KEY=test timeout 120 \
    "$bin/contextos" chat --provider openai --base-url "$openai_url" --no-show-window <<<"hello"
kill "$fakes_pid"
wait "$fakes_pid" 2>/dev/null || true

if [ -n "${CONTEXTOS_TEST_PG_URL:-}" ]; then
    step "--db postgresql://" "$bin/contextos" --db "$CONTEXTOS_TEST_PG_URL" add "I moved to Lisbon" -u ana
    step "search --db postgresql://" "$bin/contextos" --db "$CONTEXTOS_TEST_PG_URL" \
        search "where does ana live" -u ana
else
    echo "--db postgresql://: skipped (no CONTEXTOS_TEST_PG_URL; source scripts/postgres.sh start)"
fi

after_mb=$(mb .venv)
echo "venv after the README steps: ${after_mb} MB; log: $log"
echo "load average at the end: $(load)"
printf '{"install_s": %s, "venv_mb_installed": %s, "demo_s": %s, "venv_mb_after_demo": %s, "venv_mb_after_steps": %s}\n' \
    "$install_s" "$installed_mb" "$demo_s" "$demo_mb" "$after_mb"
