"""Helpers for the inspector's tests: a real server on loopback and a real chromium.

The server is the app ``contextos serve`` runs (HashEmbedder, admin key, no rate
limit) served by uvicorn on 127.0.0.1 in a thread. The browser is Debian's
chromium driven by playwright (``scripts/browser.sh`` installs both); when it
cannot start, the browser tests skip with the launch error.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from contextos.server.app import ServerConfig, close_app, create_app  # noqa: E402
from contextos.server.ratelimit import RateLimit  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402

ADMIN_KEY = "test-admin-key-0123456789"
REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "bench-out" / "ui"
CHROMIUM = os.environ.get("CONTEXTOS_TEST_CHROMIUM", "/usr/bin/chromium")

#: Run in every page before its own script: counts script execution by payloads and
#: CSP violations, so a test can tell "no script ran" from "nothing was tried".
XSS_HOOK = """
window.__xss = 0;
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""

#: Run in every page before its own script: lists the URLs of the answers the page has
#: read (the page reads each body with ``text()``), in the order read. A test waits for
#: the answer it is after (``wait_read``: by its URL, not by a count, as another answer,
#: such as the whoami after the first render, can be read meanwhile), and the page's own
#: handling of that answer has run by then: it goes on in microtasks, which run before
#: anything else the page does.
ANSWERS_HOOK = """
window.__read = [];
const __text = Response.prototype.text;
Response.prototype.text = function () {
  const url = this.url;
  return __text.call(this).finally(() => { window.__read.push(url); });
};
"""


class LiveServer:
    """A real HTTP server (uvicorn) on 127.0.0.1 over a fresh store at ``db``."""

    def __init__(self, db: Path) -> None:
        self.app = create_app(
            ServerConfig(
                db=str(db), embedder="hash", admin_key=ADMIN_KEY, rate_limit=RateLimit(rate=0)
            ),
            embedder=HashEmbedder(),
        )
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base, timeout=60)

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        close_app(self.app)

    # -- the API, as a client of the server ------------------------------------------------
    def issue_key(self, tenant: str) -> str:
        resp = self.http.post("/v1/keys", json={"tenant": tenant}, headers=auth(ADMIN_KEY))
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"])

    def call(self, method: str, path: str, key: str, body: Any = None) -> Any:
        resp = self.http.request(method, path, json=body, headers=auth(key))
        assert resp.status_code < 300, resp.text
        return resp.json()

    def add(self, key: str, **body: Any) -> list[dict[str, Any]]:
        return list(self.call("POST", "/v1/memories", key, body)["results"])

    def turns(self, key: str, session_id: str, messages: list[dict[str, str]], **scope: Any) -> Any:
        body = {"messages": messages, **scope}
        return self.call("POST", f"/v1/sessions/{session_id}/turns", key, body)


def said(*texts: str) -> list[dict[str, str]]:
    """``texts`` as the user's messages, the wire form ``POST /v1/memories`` takes."""
    return [{"role": "user", "content": text} for text in texts]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def live_server(db: Path) -> Iterator[LiveServer]:
    server = LiveServer(db)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian chromium under playwright; skips with the reason if it cannot start."""
    reason = os.environ.get("CONTEXTOS_TEST_BROWSER_SKIP_REASON")
    if reason:
        pytest.skip(f"browser unavailable: {reason}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(
            "browser unavailable: the playwright package is not installed (scripts/browser.sh)"
        )
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser unavailable: {CHROMIUM} does not exist (scripts/browser.sh)")
    with sync_playwright() as pw:
        try:
            # --no-sandbox: the test machines run as root, where chromium's sandbox refuses.
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
        except Exception as exc:  # the one place a launch failure turns into a skip
            pytest.skip(f"browser unavailable: chromium did not start: {exc}")
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, key: str | None = None) -> tuple[Any, Any]:
    """A fresh context (own sessionStorage) and page with the XSS hook; signed in with ``key``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(XSS_HOOK)
    context.add_init_script(ANSWERS_HOOK)
    if key is not None:
        context.add_init_script(f"sessionStorage.setItem('contextos_key', {json.dumps(key)});")
    page = context.new_page()
    page.set_default_timeout(20_000)
    return context, page


class Held:
    """Requests of ``page`` whose URL matches ``pattern`` are held (not sent on) until
    released: a slow network for them, while the test does something else in the page."""

    def __init__(self, page: Any, pattern: Any) -> None:
        self.page, self.pattern, self.routes = page, pattern, []
        page.route(pattern, self._hold)

    def _hold(self, route: Any) -> None:
        self.routes.append(route)

    def wait(self, count: int = 1) -> None:
        """Until ``count`` requests are held."""
        deadline = time.monotonic() + 20
        while len(self.routes) < count:
            assert time.monotonic() < deadline, f"no request for {self.pattern} was held"
            self.page.wait_for_timeout(20)

    def release(self) -> None:
        """Sends the held requests on and waits until the page has read and handled
        the answer of each (no further route holds them). Waited for by their URLs, not
        by a count of answers: one the page read meanwhile (its whoami after the first
        render, the other half of a memory's two requests) met a count before them."""
        since = reads(self.page)
        routes, self.routes = self.routes, []
        for route in routes:
            route.continue_()
        # After the requests went on: unrouting sends held ones on itself (handled twice).
        self.page.unroute(self.pattern)
        wait_read(self.page, since, [route.request.url for route in routes], exact=True)


def reads(page: Any) -> int:
    """How many answers the page has read so far: the mark ``wait_read`` counts from."""
    return int(page.evaluate("window.__read.length"))


def wait_read(page: Any, since: int, urls: list[str], *, exact: bool = False) -> None:
    """Wait until the page has read, and handled, an answer for each of ``urls`` (each
    as many times as it is listed) since the mark ``since`` (``reads``): answers whose
    URL is one of ``urls`` (``exact``), or includes it."""
    page.wait_for_function(
        """([since, urls, exact]) => {
          const read = window.__read.slice(since);
          return urls.every((u) => read.filter((r) => (exact ? r === u : r.includes(u))).length
            >= urls.filter((v) => v === u).length);
        }""",
        arg=[since, urls, exact],
    )


def wait_rendered(page: Any, view: str) -> None:
    """Wait until the page says its data is on screen (``data-rendered`` on <html>).

    The mark stays once set: after an action in the same page (a search, a save that
    draws the list again) it says nothing of that action, unless ``unmark_rendered``
    took it off before the action."""
    page.wait_for_selector(f"html[data-rendered='{view}']", state="attached")


def unmark_rendered(page: Any) -> None:
    """Takes ``data-rendered`` off <html>, so that the next ``wait_rendered`` waits for the
    page's next render: the list or the search drawn again by the action that follows
    (a search, a save, a delete). The rest of that action's handling (a save's message
    after the list came back) goes on in microtasks, so it has run by then too."""
    page.evaluate("document.documentElement.removeAttribute('data-rendered')")


def paint_times(page: Any) -> dict[str, float]:
    """First contentful paint and the time the data was rendered (ms since navigation).

    The browser records the paint entry after the frame is presented, which can come
    after the page marked its data rendered (CI saw it absent once), so wait for both."""
    page.wait_for_function(
        """() => performance.getEntriesByName('first-contentful-paint').length > 0
                 && performance.getEntriesByName('ui:data').length > 0"""
    )
    return dict(
        page.evaluate(
            """() => ({
              fcp: performance.getEntriesByName('first-contentful-paint')[0].startTime,
              data: performance.getEntriesByName('ui:data')[0].startTime,
            })"""
        )
    )


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_text(page: Any, selector: str, text: str, *, present: bool = True) -> None:
    """Wait until the element's text does (or no longer does) include ``text``. An
    element not there yet (the page between a sign-in's reload and its first render)
    is waited for, not a TypeError that fails the test."""
    page.wait_for_function(
        "([s, t, p]) => { const e = document.querySelector(s);"
        " return e !== null && e.innerText.includes(t) === p; }",
        arg=[selector, text, present],
    )


def row_texts(page: Any) -> list[str]:
    """The memory text of each row shown (not its metadata)."""
    return list(
        page.eval_on_selector_all(
            "#mem-rows tr", "trs => trs.map(tr => tr.cells[0].innerText.split('\\n')[0])"
        )
    )


@pytest.fixture(name="browser", scope="module")
def module_browser() -> Iterator[Any]:
    """One headless chromium for a test module's pages. A UI test file imports it (and
    :func:`module_server`) under any name: pytest knows it as ``browser``."""
    with chromium() as b:
        yield b


@pytest.fixture(name="server", scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server on a fresh SQLite file for a test module (known as ``server``)."""
    with live_server(tmp_path_factory.mktemp("ui") / "ui.db") as s:
        yield s
