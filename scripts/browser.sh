#!/usr/bin/env bash
# The browser the inspector's tests drive: Debian's chromium and the playwright Python
# package (the package only: `playwright install` would download a browser; never run it).
#
#   source scripts/browser.sh    # installs what is missing, exports CONTEXTOS_TEST_CHROMIUM
#   bash scripts/browser.sh      # the same, printing the export line
#
# On failure the reason goes to stderr and to CONTEXTOS_TEST_BROWSER_SKIP_REASON; the
# browser tests (tests/test_ui_browser.py) then skip with it. They also skip, with the
# launch error, when chromium is there but cannot start.

_ctxbrowser_main() {
  local repo chromium="${CONTEXTOS_TEST_CHROMIUM:-/usr/bin/chromium}" reason=""
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [ ! -x "$chromium" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "browser: installing Debian's chromium (apt-get install chromium)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
        || reason="apt-get install chromium failed"
    else
      reason="$chromium is missing and apt-get cannot run here (needs root)"
    fi
    [ -x "$chromium" ] || reason="${reason:-$chromium is missing after apt-get install chromium}"
  fi
  if [ -z "$reason" ] && ! "$repo/.venv/bin/python" -c "import playwright" 2>/dev/null; then
    echo "browser: installing the playwright package (no browser download)" >&2
    "$repo/.venv/bin/python" -m pip install -q --disable-pip-version-check playwright >/dev/null 2>&1 \
      || reason="pip install playwright failed"
  fi
  if [ -n "$reason" ]; then
    echo "browser: $reason; the browser tests will skip" >&2
    export CONTEXTOS_TEST_BROWSER_SKIP_REASON="$reason"
    return 1
  fi
  export CONTEXTOS_TEST_CHROMIUM="$chromium"
  unset CONTEXTOS_TEST_BROWSER_SKIP_REASON
  if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "export CONTEXTOS_TEST_CHROMIUM='$chromium'"
  fi
  return 0
}

_ctxbrowser_main "$@"
