"""The inspector in a real browser: Debian's chromium (playwright) against a real
server on loopback with real API keys. Covers sign-in, the memory views (list,
search, history, edit, delete, forget), sessions and windows, cache and cost,
hostile stored text, tenant isolation, and first paint with 10,000 memories.

Skips, with the launch error, only when chromium cannot start (see
scripts/browser.sh, which ``make test`` runs first).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from contextos.engine.session import Session
from contextos.types import Message
from ui_support import (  # noqa: F401 - module_browser, module_server: fixtures
    ADMIN_KEY,
    SHOTS,
    Held,
    LiveServer,
    auth,
    chromium,
    live_server,
    module_browser,
    module_server,
    new_page,
    paint_times,
    reads,
    said,
    shot,
    unmark_rendered,
    wait_read,
    wait_rendered,
    wait_text,
)

#: The issue's target: every page's first paint within 300 ms with 10k memories.
FIRST_PAINT_MS = 300.0
#: Fresh page loads per page; the median is compared with the target.
RUNS = 5


def rows(page: Any, selector: str = "#mem-rows tr") -> list[list[str]]:
    """The text of every cell of every row matching ``selector``."""
    return list(
        page.eval_on_selector_all(
            selector, "trs => trs.map(tr => [...tr.cells].map(td => td.innerText))"
        )
    )


def test_sign_in_then_see_memories_added_through_the_api(server: LiveServer, browser: Any) -> None:
    key = server.issue_key("signin")
    server.add(
        key,
        user_id="ana",
        messages=said("I moved to Lisbon in May.", "My sister Rita teaches piano."),
    )
    context, page = new_page(browser)
    page.goto(f"{server.base}/ui?user_id=ana")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.is_hidden("#view-memories")
    shot(page, "signin")

    page.fill("#key", "ctx_not-a-real-key")
    page.click("#signin-button")
    page.wait_for_selector("#error:not([hidden])")
    assert "refused" in page.inner_text("#error")
    assert page.evaluate("sessionStorage.getItem('contextos_key')") is None

    page.fill("#key", key)
    page.click("#signin-button")
    wait_rendered(page, "memories")
    texts = [r[0] for r in rows(page)]
    assert any("I moved to Lisbon in May." in t for t in texts)
    assert any("My sister Rita teaches piano." in t for t in texts)
    # Who is signed in is shown after the data (app.js), so wait for it rather than read it.
    wait_text(page, "#who", "tenant: signin")
    assert page.evaluate("sessionStorage.getItem('contextos_key')") == key
    assert context.cookies() == []  # the key never becomes a cookie

    # Added after the page loaded: a reload (still signed in, same tab) shows it.
    server.add(key, user_id="ana", messages="Ana's cat is called Miso.")
    page.reload()
    wait_rendered(page, "memories")
    assert "Ana's cat is called Miso." in page.inner_text("#mem-rows")
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('contextos_key')") is None
    context.close()


def test_search_shows_lexical_and_dense_rank_and_score(server: LiveServer, browser: Any) -> None:
    key = server.issue_key("search")
    server.add(
        key,
        user_id="ana",
        messages=said(
            "Ana adopted a grey cat named Miso.",
            "The quarterly report is due on Friday.",
            "Ana prefers green tea to coffee.",
        ),
    )
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    unmark_rendered(page)  # else the list's mark, set before the search, met the wait below
    page.fill("#f-query", "quarterly report Friday")
    page.click("#search-button")
    wait_rendered(page, "memories")
    header = page.eval_on_selector_all("#mem-head th", "ths => ths.map(th => th.innerText)")
    assert header[:4] == ["#", "score", "lexical rank", "dense rank"]
    shown = rows(page)
    assert "quarterly report is due on Friday" in shown[0][4]
    assert shown[0][2] == "1"  # the only lexical match ranks first lexically
    # Every hit as /v1 answers the same search: order, fused score, both ranks.
    api = server.call(
        "POST",
        "/v1/memories/search",
        key,
        {"query": "quarterly report Friday", "user_id": "ana", "limit": 20},
    )["results"]
    assert len(shown) == len(api) == 3

    def rank(value: int | None) -> str:
        return "–" if value is None else str(value)

    for cells, hit in zip(shown, api, strict=True):
        assert cells[1:4] == [
            f"{hit['score']:.4f}",
            rank(hit["lexical_rank"]),
            rank(hit["dense_rank"]),
        ]
        assert cells[4].startswith(hit["memory"]["text"])
    assert any(cells[2] != cells[3] for cells in shown)  # the two ranks are told apart
    assert "q=quarterly" in page.url  # the search is a link
    context.close()


def test_history_edit_and_delete(server: LiveServer, browser: Any) -> None:
    key = server.issue_key("history")
    (rec,) = server.add(key, user_id="ana", messages="Ana lives in Porto.")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    page.click("#mem-rows tr >> text=history / edit")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.inner_text("#d-id") == rec["id"]
    assert len(rows(page, "#history-rows tr")) == 1

    page.fill("#d-meta", "{not json")
    page.click("#d-save")
    page.wait_for_selector("#error:not([hidden])")
    assert "not valid JSON" in page.inner_text("#error")
    page.fill("#d-text", "Ana lives in Lisbon.")
    page.fill("#d-meta", '{"source": "correction"}')
    page.click("#d-save")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length === 2")
    old, new = rows(page, "#history-rows tr")[1][2:4]
    assert (old, new) == ("Ana lives in Porto.", "Ana lives in Lisbon.")
    stored = server.call("GET", f"/v1/memories/{rec['id']}", key)
    assert stored["text"] == "Ana lives in Lisbon."
    assert stored["metadata"]["source"] == "correction"
    wait_text(page, "#mem-rows", "Lisbon")

    page.click("#d-delete")
    page.click("#d-delete-confirm")
    page.wait_for_selector("#detail", state="hidden")
    wait_text(page, "#mem-rows", "Lisbon", present=False)
    resp = server.http.get(f"/v1/memories/{rec['id']}", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 404
    context.close()


def test_edit_panel_sends_only_what_the_user_changed(server: LiveServer, browser: Any) -> None:
    """The edit panel used to send both boxes back on Save, through JavaScript numbers
    and a textarea: a text-only edit rewrote the metadata (9007199254740993 became
    ...992, 1.0 became 1) and a metadata-only edit turned the text's CRLF into LF. Only
    the fields the user changed may be sent, and metadata as the server's own digits."""
    key = server.issue_key("roundtrip")
    big, neg = 9007199254740993, -1234567890123456789
    meta = {"order_id": big, "balance": neg, "ratio": 1.0, "note": "<b data-xss>n</b>"}
    (rec,) = server.add(key, user_id="ana", messages="first line\r\nsecond line", metadata=meta)
    path = f"/v1/memories/{rec['id']}"
    meta = rec["metadata"]  # as stored (the server adds the message's role)
    assert meta["order_id"] == big

    def stored() -> dict[str, Any]:
        return dict(server.call("GET", path, key))

    def history() -> int:
        return len(server.call("GET", path + "/history", key)["results"])

    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    assert str(big) in page.inner_text("#mem-rows .meta")  # the list shows the stored digits
    page.click("#mem-rows tr >> text=history / edit")
    page.wait_for_selector("#detail:not([hidden])")
    shown = page.input_value("#d-meta")
    assert str(big) in shown and str(neg) in shown and "1.0" in shown
    assert json.loads(shown) == meta

    page.click("#d-save")  # nothing changed: nothing is sent
    wait_text(page, "#error", "Nothing changed")
    assert history() == 1

    page.fill("#d-text", "first line\nsecond line (edited)")
    unmark_rendered(page)
    page.click("#d-save")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length === 2")
    wait_rendered(page, "memories")  # the list drawn again after the panel: the save is done
    after = stored()
    assert after["text"] == "first line\nsecond line (edited)"
    assert after["metadata"] == meta and isinstance(after["metadata"]["ratio"], float)

    server.call("PATCH", path, key, {"text": "first line\r\nsecond line"})
    page.click("#d-close")
    page.click("#mem-rows tr >> text=history / edit")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length === 3")
    page.fill("#d-meta", page.input_value("#d-meta").replace('"note"', '"note2"'))
    unmark_rendered(page)
    page.click("#d-save")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length === 4")
    # The list is drawn again after the panel, and clears the error box as it comes: still
    # on its way, it cleared the message of the next Save before wait_text saw it.
    wait_rendered(page, "memories")
    after = stored()
    assert after["text"] == "first line\r\nsecond line"  # untouched: CRLF kept
    renamed = {k: v for k, v in meta.items() if k != "note"}
    assert after["metadata"] == {**renamed, "note2": meta["note"]}
    assert after["metadata"]["order_id"] == big and isinstance(after["metadata"]["ratio"], float)

    page.fill("#d-meta", "[1, 2]")
    page.click("#d-save")
    wait_text(page, "#error", "must be a JSON object")
    assert history() == 4
    assert_no_injection(page, "edit panel")
    context.close()


def test_forget_a_user_needs_confirmation(server: LiveServer, browser: Any) -> None:
    key = server.issue_key("forget")
    server.add(key, user_id="ana", messages="Ana's passport number is X123.")
    server.add(key, user_id="bo", messages="Bo likes chess.")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    assert page.is_disabled("#forget-button")
    page.fill("#forget-confirm-input", "an")
    assert page.is_disabled("#forget-button")
    page.fill("#forget-confirm-input", "ana")
    assert page.is_enabled("#forget-button")
    page.click("#forget-button")
    wait_text(page, "#mem-status", "Forgot user ana")
    assert "1 records erased" in page.inner_text("#mem-status")
    assert server.call("GET", "/v1/memories?user_id=ana", key)["results"] == []
    assert len(server.call("GET", "/v1/memories?user_id=bo", key)["results"]) == 1
    context.close()


# -- hostile stored text ---------------------------------------------------------------

#: Each payload either marks what it injects with ``data-xss`` or sets ``window.__xss``.
PAYLOADS = [
    "<script data-xss>window.__xss=1</script>",
    '<img data-xss src=x onerror="window.__xss=1">',
    '<svg data-xss onload="window.__xss=1"></svg>',
    '"><img data-xss src=x onerror=window.__xss=1>',
    "'><script data-xss>window.__xss=1</script>",
    '<iframe data-xss srcdoc="<script>parent.__xss=1</script>"></iframe>',
    '<a data-xss href="javascript:window.__xss=1">click</a>',
    "<body data-xss onload=window.__xss=1>",
    "<details data-xss open ontoggle=window.__xss=1>",
    "<math data-xss><mtext><table><mglyph><style><img src=x onerror=window.__xss=1>",
    "</textarea><img data-xss src=x onerror=window.__xss=1>",
    "</title><script data-xss>window.__xss=1</script>",
    "<style data-xss>@import 'javascript:window.__xss=1';</style>",
    "<input data-xss autofocus onfocus=window.__xss=1>",
    "<video data-xss><source onerror=window.__xss=1></video>",
    '<object data-xss data="javascript:window.__xss=1"></object>',
    '<embed data-xss src="javascript:window.__xss=1">',
    "<form data-xss><button formaction=javascript:window.__xss=1>x</button></form>",
    "<marquee data-xss onstart=window.__xss=1>",
    '<base data-xss href="//evil.example/">',
    '<meta data-xss http-equiv="refresh" content="0;url=javascript:window.__xss=1">',
    "{{constructor.constructor('window.__xss=1')()}}",
    '<div data-xss style="background:url(javascript:window.__xss=1)">',
    "<template data-xss><script>window.__xss=1</script></template>",
    "&lt;img data-xss src=x onerror=window.__xss=1&gt;",
]
#: What one memory's text is edited to (so its history holds two payloads).
EDITED = "<svg data-xss><script>window.__xss=1</script></svg> (edited)"


def assert_no_injection(page: Any, where: str) -> None:
    """No payload ran, no element was injected, nothing even tried (no CSP report)."""
    found = page.evaluate(
        """() => ({
          ran: window.__xss,
          injected: document.querySelectorAll('[data-xss]').length,
          csp: window.__csp,
          frames: document.querySelectorAll('iframe, object, embed').length,
        })"""
    )
    assert found == {"ran": 0, "injected": 0, "csp": [], "frames": 0}, where


def test_hostile_text_in_every_field_renders_as_text(server: LiveServer, browser: Any) -> None:
    assert len(PAYLOADS) >= 20
    key = server.issue_key("xss")
    user, agent, mem_session = PAYLOADS[3], PAYLOADS[2], PAYLOADS[0]
    # Session ids travel in the URL path, where a "/" cannot be (the /v1 routes' rule).
    chat, chat2 = PAYLOADS[18], PAYLOADS[13]
    meta = {PAYLOADS[6]: PAYLOADS[7], "speaker": PAYLOADS[8]}
    added = server.add(
        key,
        user_id=user,
        agent_id=agent,
        session_id=mem_session,
        metadata=meta,
        messages=said(*PAYLOADS),
    )
    edited = added[0]["id"]
    server.call("PATCH", f"/v1/memories/{edited}", key, {"text": EDITED})
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": p, "name": PAYLOADS[11]}
        for i, p in enumerate(PAYLOADS)
    ]
    server.turns(key, quote(chat, safe=""), turns, user_id=user)
    server.turns(key, quote(chat2, safe=""), turns[:4], user_id=user)

    context, page = new_page(browser, key)
    q = quote(user, safe="")
    # Memories: text, metadata keys and values, user/agent/session ids.
    page.goto(f"{server.base}/ui?user_id={q}")
    wait_rendered(page, "memories")
    shown = page.inner_text("#mem-rows")
    for p in [*PAYLOADS[1:], EDITED]:  # PAYLOADS[0] was edited away (it is in the history)
        assert p in shown, p
    assert PAYLOADS[6] in shown and PAYLOADS[8] in shown and agent in shown
    assert page.input_value("#f-user") == user
    assert_no_injection(page, "memory list")
    # One memory: its fields, text box and history (old and new text).
    page.click(f"#mem-rows tr:has-text({json.dumps(EDITED)}) >> text=history / edit")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length === 2")
    assert page.input_value("#d-text") == EDITED
    history = page.inner_text("#history-rows")
    assert PAYLOADS[0] in history and EDITED in history
    assert_no_injection(page, "history")
    # Search hits.
    page.fill("#f-query", "window xss data")
    page.click("#search-button")
    wait_text(page, "#mem-head", "lexical")
    assert PAYLOADS[1] in page.inner_text("#mem-rows")
    assert_no_injection(page, "search")

    # Sessions: ids, turn content and names, the window's blocks and left-out keys.
    page.goto(f"{server.base}/ui?view=sessions&user_id={q}&session_id={quote(chat, safe='')}")
    wait_rendered(page, "sessions")
    assert chat in page.inner_text("#session-list") and chat2 in page.inner_text("#session-list")
    assert page.inner_text("#s-id") == chat
    log = page.inner_text("#turn-rows")
    assert PAYLOADS[11] in log and all(p in log for p in PAYLOADS)
    page.fill("#w-question", PAYLOADS[12])
    page.fill("#w-budget", "600")
    page.click("#w-build")
    page.wait_for_selector("#window-out:not([hidden])")
    assert PAYLOADS[12] in page.inner_text("#block-rows")
    assert_no_injection(page, "sessions and window")

    # Cache and cost: session ids in the list, the table and the chart's title.
    page.goto(f"{server.base}/ui?view=cache&user_id={q}&session_id={quote(chat2, safe='')}")
    wait_rendered(page, "cache")
    assert page.inner_text("#c-id") == chat2
    assert page.evaluate("document.querySelector('#c-chart').naturalWidth") > 0
    assert_no_injection(page, "cache")
    context.close()


def test_tenant_b_sees_nothing_of_tenant_a(server: LiveServer, browser: Any) -> None:
    a, b = server.issue_key("tenant-a"), server.issue_key("tenant-b")
    (rec,) = server.add(a, user_id="ana", messages="A-SECRET: ana's card ends 4242")
    server.turns(a, "a-chat", said("A-SECRET turn"), user_id="ana")
    context, page = new_page(browser, b)
    for path, view in (
        ("/ui?user_id=ana&validity=all", "memories"),
        ("/ui?session_id=a-chat", "memories"),
        ("/ui?user_id=ana&q=A-SECRET", "memories"),
        ("/ui?view=sessions&user_id=ana&session_id=a-chat", "sessions"),
        ("/ui?view=sessions", "sessions"),
        ("/ui?view=cache&session_id=a-chat", "cache"),
    ):
        page.goto(server.base + path)
        wait_rendered(page, view)
        assert "A-SECRET" not in page.inner_text("body"), path
        assert "a-chat" not in page.inner_text("main"), path
    # Through the page's own fetch with B's key: A's memory and its history are not
    # found (404, as for an id that never existed), A's log is empty.
    got = page.evaluate(
        """async (id) => {
          const h = {Authorization: 'Bearer ' + sessionStorage.getItem('contextos_key')};
          const one = await fetch('/v1/memories/' + id, {headers: h});
          const hist = await fetch('/v1/memories/' + id + '/history', {headers: h});
          const log = await (await fetch('/v1/sessions/a-chat/turns', {headers: h})).json();
          return [one.status, hist.status, log.results.length];
        }""",
        rec["id"],
    )
    assert got == [404, 404, 0]
    context.close()


def test_cache_chart_of_a_control_character_id_shows_and_a_broken_chart_says_so(
    server: LiveServer, browser: Any
) -> None:
    """A session id may hold C0 controls: its chart is still an image (it once was not,
    and the page then waited for it forever). A chart that cannot be decoded ends in an
    error message, with the table still there."""
    key = server.issue_key("controls")
    sid = "ctl\x01\x1b\x1f-id"
    server.turns(key, quote(sid, safe=""), said("one " + "word " * 700, "two", "three"))
    context, page = new_page(browser, key)
    url = f"{server.base}/ui?view=cache&session_id={quote(sid, safe='')}"
    page.goto(url)
    wait_rendered(page, "cache")
    assert page.evaluate("document.querySelector('#c-chart').naturalWidth") > 0
    assert page.is_hidden("#error")

    def broken_chart(route: Any) -> None:
        # The server's answer, with the SVG it once made for such an id (a raw \x01).
        resp = route.fetch()
        body = resp.json()
        body["svg"] = "<svg xmlns='http://www.w3.org/2000/svg'><text>ctl\x01</text></svg>"
        route.fulfill(response=resp, json=body)

    page.route(re.compile(r"/ui/api/cache\?"), broken_chart)
    page.goto(url)
    page.wait_for_selector("#error:not([hidden])")
    assert "cache chart could not be shown" in page.inner_text("#error")
    assert page.is_hidden("#c-chart")
    assert len(rows(page, "#call-rows tr")) == 3
    context.close()


def test_screenshots_of_each_page(server: LiveServer, browser: Any) -> None:
    """The pictures for docs/inspector.md, from a small realistic tenant."""
    key = server.issue_key("demo")
    facts = [
        ("Ana moved from Porto to Lisbon in May 2024.", "semantic", {"source": "chat"}),
        ("Ana's sister Rita teaches piano at the conservatory.", "semantic", {}),
        ("Ana is allergic to peanuts.", "semantic", {"confidence": 0.9}),
        ("Always answer Ana in Portuguese unless she writes in English.", "procedural", {}),
        ("Ana asked for a vegetarian restaurant near Alfama.", "episodic", {"speaker": "Ana"}),
    ]
    for text, kind, meta in facts:
        server.add(key, user_id="ana", messages=text, memory_type=kind, metadata=meta)
    chat = []
    for i in range(8):
        chat.append({"role": "user", "content": f"Day {i + 1} of planning the trip. " * 60})
        chat.append({"role": "assistant", "content": f"Noted the plans for day {i + 1}."})
    server.turns(key, "trip-planning", chat, user_id="ana")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    wait_text(page, "#who", "tenant: demo")  # shown after the data: else in some pictures only
    shot(page, "memories")
    page.click("#mem-rows tr:has-text('peanuts') >> text=history / edit")
    page.wait_for_selector("#detail:not([hidden])")
    shot(page, "memory-history")
    page.goto(f"{server.base}/ui?user_id=ana&q=where+does+Ana+live")
    wait_rendered(page, "memories")
    wait_text(page, "#who", "tenant: demo")
    shot(page, "search")
    page.goto(f"{server.base}/ui?view=sessions&user_id=ana&session_id=trip-planning")
    wait_rendered(page, "sessions")
    wait_text(page, "#who", "tenant: demo")
    page.fill("#w-question", "Which restaurant should we book for Ana?")
    page.fill("#w-budget", "4000")
    page.click("#w-build")
    page.wait_for_selector("#window-out:not([hidden])")
    assert page.locator(".bp-row").count() >= 1  # the cached prefix is drawn
    shot(page, "sessions-window")
    page.goto(f"{server.base}/ui?view=cache&user_id=ana&session_id=trip-planning")
    wait_rendered(page, "cache")
    wait_text(page, "#who", "tenant: demo")
    shot(page, "cache")
    for name in ("signin", "memories", "memory-history", "search", "sessions-window", "cache"):
        assert (SHOTS / f"{name}.png").stat().st_size > 5_000 or name == "signin"
    context.close()


# -- first paint with 10,000 memories -----------------------------------------------------


def _seed_10k(server: LiveServer, key: str) -> None:
    topics = ("travel", "work", "family", "food", "health", "music", "books", "sport")
    for batch in range(10):
        messages = [
            {
                "role": "user",
                "content": f"Memory {batch * 1000 + i}: a note about {topics[i % 8]} "
                f"number {i} from batch {batch}.",
            }
            for i in range(1000)
        ]
        server.add(key, user_id="perf", messages=messages)
    chat = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "talk " * 150}
        for i in range(40)
    ]
    server.turns(key, "perf-chat", chat, user_id="perf")
    server.app.state.tenants.flush()  # measure the steady state, not the embedding backlog


@pytest.mark.serial
def test_first_paint_with_10k_memories(server: LiveServer, browser: Any) -> None:
    key = server.issue_key("perf")
    _seed_10k(server, key)
    assert server.call("GET", "/ui/api/memories?user_id=perf&limit=1", key)["total"] == 10_000
    pages = {
        "memories": ("/ui?user_id=perf", "memories"),
        "memories-last-page": ("/ui?user_id=perf&offset=9950", "memories"),
        "search": ("/ui?user_id=perf&q=note+about+music", "memories"),
        "sessions": ("/ui?view=sessions&user_id=perf&session_id=perf-chat", "sessions"),
        "cache": ("/ui?view=cache&user_id=perf&session_id=perf-chat", "cache"),
    }
    context, page = new_page(browser, key)
    page.goto(server.base + pages["memories"][0])  # warm the browser and the server once
    wait_rendered(page, "memories")
    context.close()
    results: dict[str, dict[str, Any]] = {}
    for name, (path, view) in pages.items():
        runs = []
        for _ in range(RUNS):
            context, page = new_page(browser, key)
            page.goto(server.base + path)
            wait_rendered(page, view)
            runs.append(paint_times(page))
            context.close()
        results[name] = {
            "fcp_ms": statistics.median(r["fcp"] for r in runs),
            "data_ms": statistics.median(r["data"] for r in runs),
            "fcp_runs": [r["fcp"] for r in runs],
            "data_runs": [r["data"] for r in runs],
        }
    SHOTS.mkdir(parents=True, exist_ok=True)
    Path(SHOTS / "paint.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(json.dumps(results, indent=1))
    for name, r in results.items():
        assert r["fcp_ms"] <= FIRST_PAINT_MS, (name, r)


# -- sign-in, ids, long lists and long text (review findings) -----------------------------


def test_a_refused_key_leaves_nothing_of_its_tenant_for_the_next_sign_in(
    server: LiveServer, browser: Any
) -> None:
    """Why: after a 401 (tenant A's key revoked while the tab was open) the sign-in form
    came back over A's page: A's memory panel and history, and A's turn log, stayed in
    the page, and stayed on screen when tenant B's key signed in on the same tab."""

    def issue(tenant: str) -> dict[str, Any]:
        resp = server.http.post("/v1/keys", json={"tenant": tenant}, headers=auth(ADMIN_KEY))
        return dict(resp.json())

    other = server.issue_key("refused-b")
    owner = issue("refused-a")["key"]
    server.add(owner, user_id="ana", messages="A-SECRET: ana's card ends 4242")
    server.turns(owner, "a-chat", said("A-SECRET-TURN hello"), user_id="ana")
    views = (
        ("/ui?user_id=ana", "memories", "#detail", "#apply"),
        (
            "/ui?view=sessions&user_id=ana&session_id=a-chat",
            "sessions",
            "#session-detail",
            "#sess-scope button",
        ),
    )
    for path, view, panel, click in views:
        a = issue("refused-a")
        context, page = new_page(browser)
        page.goto(server.base + path)
        page.fill("#key", a["key"])
        page.click("#signin-button")
        wait_text(page, "#who", "tenant: refused-a")
        if view == "memories":
            page.click("#mem-rows tr >> text=history / edit")
        page.wait_for_selector(f"{panel}:not([hidden])")
        assert "A-SECRET" in page.content()
        assert server.http.delete(f"/v1/keys/{a['id']}", headers=auth(ADMIN_KEY)).status_code == 200
        page.click(click)
        page.wait_for_selector("#signin:not([hidden])")
        assert "A-SECRET" not in page.content(), view  # not shown, not hidden in the page either
        page.fill("#key", other)
        page.click("#signin-button")
        # The page before the sign-in's reload still has its data-rendered mark (A's page
        # set it): B's tenant name, shown after B's data, is what tells the new page.
        wait_text(page, "#who", "tenant: refused-b")
        wait_rendered(page, view)
        assert "A-SECRET" not in page.content(), view
        assert "a-chat" not in page.inner_text("main"), view
        assert page.is_hidden(panel)
        context.close()


def test_ids_are_used_as_given_spaces_included(server: LiveServer, browser: Any) -> None:
    """Why: the page trimmed the ids it read, but the library keeps a trailing space as
    part of an id: the page for user "ana " showed, and offered to forget, user "ana"."""
    key = server.issue_key("spaces")
    server.add(key, user_id="ana", messages="I am plain ana.")
    server.add(key, user_id="ana ", messages="I am ana-with-a-space.")
    server.turns(key, "plain-chat", said("hi"), user_id="ana")
    server.turns(key, "space-chat", said("hi"), user_id="ana ")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?view=sessions&user_id={quote('ana ')}")
    wait_rendered(page, "sessions")
    assert chips(page, "#session-list") == ["space-chat"]

    page.goto(f"{server.base}/ui?user_id={quote('ana ')}")
    wait_rendered(page, "memories")
    shown = page.eval_on_selector_all("#mem-rows .text", "ds => ds.map(d => d.textContent)")
    assert shown == ["I am ana-with-a-space."]
    assert page.text_content("#forget-user") == "ana "
    page.fill("#forget-confirm-input", "ana")
    assert page.is_disabled("#forget-button")
    page.fill("#forget-confirm-input", "ana ")
    page.click("#forget-button")
    wait_text(page, "#mem-status", "Forgot user")

    def texts(user: str) -> list[str]:
        found = server.call("GET", f"/v1/memories?user_id={quote(user)}", key)["results"]
        return [r["text"] for r in found]

    assert texts("ana ") == [] and texts("ana") == ["I am plain ana."]
    page.fill("#f-user", "   ")  # only a field of blanks counts as empty
    page.click("#apply")
    wait_text(page, "#mem-status", "Enter a user")
    context.close()


def chips(page: Any, selector: str) -> list[str]:
    return list(page.eval_on_selector_all(f"{selector} button", "bs => bs.map(b => b.textContent)"))


def _sessions_view(
    server: LiveServer, browser: Any, tenant: str, count: int, extra: str = ""
) -> tuple[str, Any, Any]:
    """``count`` sessions of user ana (``chat-0000`` on, one turn each, the newest last)
    in a new tenant, and its sessions view open (``extra`` added to the URL): the key,
    the browser context and the page."""
    key = server.issue_key(tenant)
    for i in range(count):
        server.turns(key, f"chat-{i:04d}", said(f"turn of chat {i}"), user_id="ana")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?view=sessions&user_id=ana{extra}")
    wait_rendered(page, "sessions")
    return key, context, page


def test_sessions_past_a_thousand_list_newest_first_and_any_link_opens(
    server: LiveServer, browser: Any
) -> None:
    """Why: the views asked for the first 1,000 sessions, least recently active first,
    and never paged: of 1,010 the newest 10 were not listed, a link to one opened
    nothing, and the Cache view's "most recently active" default was chat-0999."""
    key, context, page = _sessions_view(server, browser, "many", 1010, "&session_id=chat-1009")
    listed = chips(page, "#session-list")
    assert listed == [f"chat-{i:04d}" for i in range(1009, 909, -1)]
    assert page.inner_text("#s-id") == "chat-1009"
    page.click("#session-list-more")
    page.wait_for_function("() => document.querySelectorAll('#session-list button').length === 200")
    assert chips(page, "#session-list")[100:102] == ["chat-0909", "chat-0908"]

    page.goto(f"{server.base}/ui?view=sessions&user_id=ana&session_id=chat-0000")
    wait_rendered(page, "sessions")  # far down the list: opened from its log
    assert page.inner_text("#s-id") == "chat-0000"
    assert "turn of chat 0" in page.inner_text("#turn-rows")

    page.goto(f"{server.base}/ui?view=cache&user_id=ana")
    wait_rendered(page, "cache")
    assert page.inner_text("#c-id") == "chat-1009"  # the most recently active
    page.goto(f"{server.base}/ui?view=cache&user_id=ana&session_id=chat-0003")
    wait_rendered(page, "cache")
    assert page.inner_text("#c-id") == "chat-0003"
    context.close()


def test_window_of_a_long_log_lists_the_newest_left_out_and_counts_the_rest(
    server: LiveServer, browser: Any
) -> None:
    """Why: the left-out table had a row for every turn of the log that did not fit:
    with 50,000 turns, a 9.8 MB answer and 9 s before the page drew it."""
    key = server.issue_key("long-window")
    for start in (0, 1000):
        turns = [
            {"role": "user", "content": f"turn {start + i} " + "text " * 5} for i in range(1000)
        ]
        server.turns(key, "long", turns, user_id="ana")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?view=sessions&user_id=ana&session_id=long")
    wait_rendered(page, "sessions")
    page.fill("#w-question", "what about turn 7?")
    page.click("#w-build")
    page.wait_for_selector("#window-out:not([hidden])")
    shown = rows(page, "#leftout-rows tr")
    assert len(shown) == 101
    count = re.fullmatch(r"(\d+) older turns not placed \(not listed\)", shown[0][1])
    assert count and shown[0][0] == "turns"
    placed = len([r for r in rows(page, "#block-rows tr") if r[1] == "turns"])
    assert int(count.group(1)) + 100 == 2000 - placed
    assert f"· {2000 - placed} left out" in page.inner_text("#w-summary")
    assert shown[-1][1] == f"turn:{2000 - placed - 1}"  # the newest turn left out, last
    context.close()


def test_a_failed_page_fetch_keeps_the_page_and_a_later_success_clears_the_error(
    server: LiveServer, browser: Any
) -> None:
    """Why: "older" moved the offset before the fetch, so a failed fetch (the server
    restarting) still advanced it: the next click showed "101–60 of 60", and the
    error stayed on screen after later requests succeeded."""
    key = server.issue_key("pager")
    server.add(key, user_id="ana", messages=said(*[f"m{i}" for i in range(60)]))
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    assert page.inner_text("#page-info") == "1–50 of 60"
    down = re.compile(r"/ui/api/memories\?")
    page.route(down, lambda route: route.abort())
    page.click("#next")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#page-info") == "1–50 of 60"
    assert "offset" not in page.url
    page.unroute(down)
    page.click("#next")
    wait_text(page, "#page-info", "51–60 of 60")
    assert page.is_hidden("#error")
    assert "offset=50" in page.url and len(rows(page)) == 10
    context.close()


def test_more_turns_goes_away_after_the_last_page(server: LiveServer, browser: Any) -> None:
    """Why: "more turns" showed after every full page of 200, so a log of 400 turns
    still offered more after its last page."""
    key = server.issue_key("turn-pages")
    server.turns(key, "four-hundred", said(*[f"turn {i}" for i in range(400)]))
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?view=sessions&session_id=four-hundred")
    wait_rendered(page, "sessions")
    assert len(rows(page, "#turn-rows tr")) == 200 and page.is_visible("#turns-more")
    page.click("#turns-more")
    page.wait_for_function("() => document.querySelectorAll('#turn-rows tr').length === 400")
    page.wait_for_selector("#turns-more", state="hidden")
    assert rows(page, "#turn-rows tr")[-1][0] == "399"
    context.close()


def test_long_unbroken_text_wraps_and_long_history_scrolls(
    server: LiveServer, browser: Any
) -> None:
    """Why: a long word wrapped in the memory list's text only: the scope cell, the
    history's old and new text, a speaker's name and session chips widened the page
    (to 30,201 px with the history open), and a 100k-character edit made the history
    table 82,897 px tall."""
    key = server.issue_key("wide")
    user, chat = "u" + "x" * 250, "S" * 250
    (rec,) = server.add(key, user_id=user, messages="short text")
    server.call("PATCH", f"/v1/memories/{rec['id']}", key, {"text": "A" * 3000})
    server.call("PATCH", f"/v1/memories/{rec['id']}", key, {"text": "x " * 50_000})
    server.turns(key, chat, [{"role": "user", "content": "hi", "name": "N" * 256}], user_id=user)
    context, page = new_page(browser, key)

    def width() -> int:
        return int(page.evaluate("document.documentElement.scrollWidth"))

    page.goto(f"{server.base}/ui?user_id={user}")
    wait_rendered(page, "memories")
    assert width() <= 1280
    page.click("#mem-rows tr >> text=history / edit")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length === 3")
    assert width() <= 1280
    assert page.evaluate("document.querySelector('#history').getBoundingClientRect().height") < 1200
    page.goto(f"{server.base}/ui?view=sessions&user_id={user}&session_id={chat}")
    wait_rendered(page, "sessions")
    assert page.inner_text("#s-id") == chat
    assert width() <= 1280
    context.close()


def test_a_right_to_left_override_in_an_id_stays_inside_the_id(
    server: LiveServer, browser: Any
) -> None:
    """Why: the scope cell was one line of text, so a user id holding U+202E (right-to-
    left override) drew the rest of it backwards: "user 7-tahc noisses · tob-troppus
    tnega"; in the one-line metadata JSON, one value did the same to the values after it."""
    key = server.issue_key("bidi")
    user = "\u202eana"
    server.add(
        key,
        user_id=user,
        agent_id="support-bot",
        session_id="chat-7",
        messages="hello",
        metadata={"note": "\u202eevil", "zz": "after"},
    )
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id={quote(user)}")
    wait_rendered(page, "memories")
    # Where the first and last letters of each word are drawn (x of their left edges).
    drawn = page.evaluate(
        """() => {
          const cell = document.querySelector('#mem-rows tr').cells[2];
          const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
          const x = (n, k) => { const r = document.createRange(); r.setStart(n, k);
            r.setEnd(n, k + 1); return r.getBoundingClientRect().left; };
          const out = {};
          for (let n = walk.nextNode(); n; n = walk.nextNode()) {
            for (const w of ['agent', 'support-bot', 'session', 'chat-7']) {
              const i = n.textContent.indexOf(w);
              if (i >= 0) out[w] = [x(n, i), x(n, i + w.length - 1)];
            }
          }
          return out;
        }"""
    )
    assert set(drawn) == {"agent", "support-bot", "session", "chat-7"}
    for word, (first, last) in drawn.items():
        assert first < last, word  # read left to right, not mirrored
    assert "\\u202eevil" in page.inner_text("#mem-rows .meta")
    context.close()


def test_forget_box_has_a_name_row_buttons_name_their_memory_close_returns_focus(
    server: LiveServer, browser: Any
) -> None:
    """Why: the confirmation box had no accessible name, every row's button was just
    "history / edit", and closing the memory's panel left focus on Close, far from
    the row it was opened from."""
    key = server.issue_key("a11y")
    tea, _ = server.add(
        key, user_id="ana", messages=said("Ana likes green tea.", "Ana rides a bike.")
    )
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    assert page.get_by_role("textbox", name="user id to confirm").count() == 1
    opener = page.get_by_role("button", name="history / edit: Ana likes green tea.")
    assert opener.count() == 1 and opener.inner_text() == "history / edit"
    opener.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.inner_text("#d-id") == tea["id"]
    page.focus("#d-close")
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail", state="hidden")
    assert page.evaluate("document.activeElement.dataset.memoryId") == tea["id"]
    context.close()


def test_sessions_with_dot_and_slash_ids_open_in_every_view(
    server: LiveServer, browser: Any
) -> None:
    """Why: the library takes session ids such as ".", ".." and "team/chat-1", and the
    page listed them, but opened none: it put the id in the URL's path, where the
    browser drops "." and ".." segments and the server reads "%2F" as "/"."""
    key = server.issue_key("dots")
    ids = [".", "..", "team/chat-1", "a/../b"]
    for sid in ids:  # written by the application through the library, not over HTTP
        log = Session(server.app.state.tenants.store, sid, tenant="dots", user_id="ana")
        log.add(Message(role="user", content=f"hello from {sid}"))
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?view=sessions&user_id=ana")
    wait_rendered(page, "sessions")
    assert sorted(chips(page, "#session-list")) == sorted(ids)
    for i, sid in enumerate(reversed(ids)):  # newest first
        assert chips(page, "#session-list")[i] == sid
        page.locator("#session-list button").nth(i).click()
        page.wait_for_function("s => document.getElementById('s-id').textContent === s", arg=sid)
        assert rows(page, "#turn-rows tr")[0][4] == f"hello from {sid}"
        assert page.is_hidden("#error")
    page.fill("#w-question", "who said hello?")
    page.click("#w-build")
    page.wait_for_selector("#window-out:not([hidden])")
    assert page.is_hidden("#error")
    turns = [r[4] for r in rows(page, "#block-rows tr") if r[1] == "turns"]
    assert turns == ["hello from ."]  # the session "." (opened last)
    for sid in ("..", "team/chat-1"):
        page.goto(f"{server.base}/ui?view=cache&user_id=ana&session_id={quote(sid, safe='')}")
        wait_rendered(page, "cache")
        assert page.inner_text("#c-id") == sid and page.is_hidden("#error")
        assert len(rows(page, "#call-rows tr")) == 1
    context.close()


# -- slow answers, pasted keys, look-alike ids (third review) ------------------------------


def answered(page: Any, action: Any, url: str) -> None:
    """Does ``action`` and waits until the page has read and handled its answer: one
    whose URL includes ``url`` (any one more answer could be another request's, such as
    the whoami the page sends after its first render)."""
    since = reads(page)
    action()
    wait_read(page, since, [url])


def test_a_slow_answer_is_not_drawn_into_the_session_opened_meanwhile(
    server: LiveServer, browser: Any
) -> None:
    """Why: only the session lists checked that an answer was still wanted. With session
    `long` open, a slow "more turns" answer arrived after session `short` was opened and
    appended long's turns 200-399 to short's table; a slow window of `long` was drawn
    under short's heading; two clicks on "more turns" appended the same page twice."""
    key = server.issue_key("stale-sessions")
    server.turns(key, "long", said(*[f"LONG turn {i}" for i in range(450)]), user_id="ana")
    server.turns(key, "short", said("SHORT hello"), user_id="ana")
    context, page = new_page(browser, key)

    def open_session(sid: str, turns: int) -> None:
        page.locator("#session-list").get_by_role("button", name=sid, exact=True).click()
        page.wait_for_function(
            "([s, n]) => document.getElementById('s-id').textContent === s"
            " && document.querySelectorAll('#turn-rows tr').length === n",
            arg=[sid, turns],
        )

    def only_short_shown() -> None:
        assert page.inner_text("#s-id") == "short" and "session_id=short" in page.url
        assert [r[4] for r in rows(page, "#turn-rows tr")] == ["SHORT hello"]
        assert page.is_hidden("#turns-more") and page.is_hidden("#error")

    page.goto(f"{server.base}/ui?view=sessions&user_id=ana&session_id=long")
    wait_rendered(page, "sessions")
    assert len(rows(page, "#turn-rows tr")) == 200
    # "more turns" of long (asked from its last turn shown), slow; short opened meanwhile.
    held = Held(page, re.compile(r"/ui/api/turns\?session_id=long&after_seq=198&"))
    page.click("#turns-more")
    held.wait()
    open_session("short", 1)
    held.release()
    only_short_shown()

    # The window of long, slow; short is opened meanwhile.
    open_session("long", 200)
    held = Held(page, re.compile(r"/ui/api/window\?session_id=long$"))
    page.fill("#w-question", "what was said?")
    page.click("#w-build")
    held.wait()
    open_session("short", 1)
    held.release()
    assert page.is_hidden("#window-out")
    only_short_shown()
    page.click("#w-build")  # short's own window: short's turns only
    page.wait_for_selector("#window-out:not([hidden])")
    assert [r[4] for r in rows(page, "#block-rows tr") if r[1] == "turns"] == ["SHORT hello"]

    # "more turns" clicked twice before the first answer: each turn is listed once.
    open_session("long", 200)
    held = Held(page, re.compile(r"/ui/api/turns\?session_id=long&after_seq=198&"))
    page.click("#turns-more")
    page.click("#turns-more")
    held.wait(2)
    held.release()
    seqs = [r[0] for r in rows(page, "#turn-rows tr")]
    assert seqs == [str(i) for i in range(400)]
    context.close()


def test_a_slow_answer_is_not_drawn_over_the_memories_or_replay_shown_since(
    server: LiveServer, browser: Any
) -> None:
    """Why: the memory list drew whichever page arrived last: user `bulk`'s slow older
    page, asked for before user `ana`'s, replaced ana's in the table, the pager and the
    forget box while the form said ana. A memory, a search and a session's replay could
    be overtaken the same way."""
    key = server.issue_key("stale-memories")
    server.add(key, user_id="bulk", messages=said(*[f"BULK fact {i}" for i in range(60)]))
    server.add(key, user_id="ana", messages="ANA fact")
    context, page = new_page(browser, key)

    def only_ana_shown() -> None:
        assert page.eval_on_selector_all("#mem-rows .text", "ds => ds.map(d => d.textContent)") == [
            "ANA fact"
        ]
        assert page.inner_text("#page-info") == "1–1 of 1"
        assert page.text_content("#forget-user") == "ana" and page.is_hidden("#error")
        assert "user_id=ana" in page.url and "offset" not in page.url

    page.goto(f"{server.base}/ui?user_id=bulk")
    wait_rendered(page, "memories")
    # bulk's older page, slow; ana is shown meanwhile.
    held = Held(page, re.compile(r"/ui/api/memories\?user_id=bulk&"))
    page.click("#next")
    held.wait()
    page.fill("#f-user", "ana")
    page.click("#apply")
    wait_text(page, "#mem-rows", "ANA fact")
    held.release()
    only_ana_shown()
    # A search, slow; the list is shown meanwhile.
    held = Held(page, re.compile(r"/v1/memories/search$"))
    page.fill("#f-query", "ANA")
    page.click("#search-button")
    held.wait()
    answered(page, lambda: page.click("#apply"), "/ui/api/memories?user_id=ana&")
    held.release()
    assert page.inner_text("#mem-head").split()[0] == "memory"  # not the hits' "#"
    only_ana_shown()

    # One memory, slow; another one is opened meanwhile.
    page.goto(f"{server.base}/ui?user_id=bulk")
    wait_rendered(page, "memories")
    first, second = (
        page.locator("#mem-rows button").nth(i).get_attribute("data-memory-id") for i in (0, 1)
    )
    held = Held(page, re.compile(rf"/v1/memories/{first}$"))
    page.locator("#mem-rows button").nth(0).click()
    held.wait()
    page.locator("#mem-rows button").nth(1).click()
    page.wait_for_function("id => document.getElementById('d-id').textContent === id", arg=second)
    text = page.input_value("#d-text")
    held.release()
    assert page.inner_text("#d-id") == second and page.input_value("#d-text") == text

    # A session's replay, slow; another session's is shown meanwhile.
    server.turns(key, "long", said(*[f"LONG turn {i}" for i in range(30)]), user_id="ana")
    server.turns(key, "short", said("SHORT hello"), user_id="ana")
    page.goto(f"{server.base}/ui?view=cache&user_id=ana&session_id=short")
    wait_rendered(page, "cache")
    held = Held(page, re.compile(r"/ui/api/cache\?session_id=long&"))
    chip = page.locator("#cache-sessions").get_by_role("button", exact=True, name="long")
    chip.click()
    held.wait()
    short = page.locator("#cache-sessions").get_by_role("button", exact=True, name="short")
    answered(page, short.click, "/ui/api/cache?session_id=short&")
    held.release()
    assert page.inner_text("#c-id") == "short" and "session_id=short" in page.url
    assert len(rows(page, "#call-rows tr")) == 1
    context.close()


def test_a_pasted_key_no_header_can_carry_is_refused_with_the_form_back(
    server: LiveServer, browser: Any
) -> None:
    """Why: a pasted key holding U+200B or "…" made the browser's fetch throw ("String
    contains non ISO-8859-1 code point"): the key stayed in sessionStorage, the page
    showed that error on every load and the sign-in form never came back."""
    key = server.issue_key("pasted")
    server.add(key, user_id="ana", messages="Ana likes tea.")
    context, page = new_page(browser)
    page.goto(f"{server.base}/ui?user_id=ana")
    page.wait_for_selector("#signin:not([hidden])")
    for bad, named in (
        (key[:8] + "\u200b" + key[8:], "U+200B at character 9"),
        ("ctx_…", "U+2026 at character 5"),
        ("ctx_café", "U+00E9 at character 8"),  # ISO-8859-1, but no key has it
    ):
        page.fill("#key", bad)
        page.click("#signin-button")
        wait_text(page, "#error", named)
        assert "keys are printable ASCII" in page.inner_text("#error")
        assert page.is_visible("#signin") and page.is_hidden("#signout")
        assert page.evaluate("sessionStorage.getItem('contextos_key')") is None
    page.fill("#key", " " + key + " ")  # blanks around a pasted key are not part of it
    page.click("#signin-button")
    wait_rendered(page, "memories")
    assert "Ana likes tea." in page.inner_text("#mem-rows")
    context.close()

    # A key stored before sign-in checked keys: refused at the first request.
    context, page = new_page(browser)
    page.goto(f"{server.base}/ui?user_id=ana")
    page.evaluate("sessionStorage.setItem('contextos_key', 'ctx_abc…def')")
    page.reload()
    page.wait_for_selector("#signin:not([hidden])")
    wait_text(page, "#error", "cannot carry")
    assert page.evaluate("sessionStorage.getItem('contextos_key')") is None
    assert page.is_hidden("#view-memories") and page.is_hidden("#signout")
    page.fill("#key", key)
    page.click("#signin-button")
    wait_text(page, "#who", "tenant: pasted")
    assert "Ana likes tea." in page.inner_text("#mem-rows") and page.is_hidden("#error")
    context.close()


#: Ids that differ from "dup" only by characters that do not show (or show as a plain
#: space), and the marks the page must draw in them (code points; "␣" for U+0020).
LOOKALIKES = {
    "dup": [],
    "dup\u200b": ["U+200B"],
    "d\u2060up": ["U+2060"],
    "dup\u00a0": ["U+00A0"],
    "dup ": ["␣"],
    " dup": ["␣"],
    "du  p": ["␣", "␣"],
    "\ufeffdup": ["U+FEFF"],
    "dup\x01": ["U+0001"],
    "\u202edup": ["U+202E"],
}

#: Each element's text, the marks in it, and its rendered width.
MARKS_JS = """els => els.map(e => [e.textContent,
  [...e.querySelectorAll('.mark')].map(m => m.dataset.mark), e.getBoundingClientRect().width])"""


def test_ids_that_differ_only_by_unseen_characters_look_different(
    server: LiveServer, browser: Any
) -> None:
    """Why: sessions "dup", "dup" + U+200B, "dup" + U+00A0 and "dup " were listed as
    chips that all read "dup", and headings, scope cells and the forget box showed such
    ids the same way: which one was open, or about to be forgotten, could not be told."""
    key = server.issue_key("lookalike")
    for sid in LOOKALIKES:
        server.turns(key, quote(sid, safe=""), said(f"turn of [{sid}]"), user_id="zw")
    user, agent = "zw\u200b", "bot\u00a0"
    server.add(key, user_id=user, agent_id=agent, session_id="dup ", messages="hello")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?view=sessions&user_id=zw")
    wait_rendered(page, "sessions")
    wait_text(page, "#who", "tenant: lookalike")  # the page as it stays, in the picture
    chips = page.eval_on_selector_all("#session-list button", MARKS_JS)
    # The text is the id exactly (copying it copies the id); its unseen characters marked.
    assert {text: marks for text, marks, _ in chips} == LOOKALIKES
    width = {text: w for text, _, w in chips}
    assert all(width[sid] > width["dup"] + 8 for sid in LOOKALIKES if sid != "dup")
    pictures = [page.locator("#session-list button").nth(i).screenshot() for i in range(10)]
    assert len(set(pictures)) == len(LOOKALIKES)  # no two chips are drawn alike
    shot(page, "lookalike-ids")

    page.click("#session-list button:has(.mark[data-mark='U+200B'])")
    page.wait_for_function("() => document.getElementById('s-id').textContent === 'dup\u200b'")
    assert page.eval_on_selector_all("#s-id", MARKS_JS)[0][1] == ["U+200B"]
    assert rows(page, "#turn-rows tr")[0][4] == "turn of [dup\u200b]"
    page.goto(f"{server.base}/ui?view=cache&user_id=zw&session_id={quote(' dup')}")
    wait_rendered(page, "cache")
    assert page.eval_on_selector_all("#c-id", MARKS_JS)[0][:2] == [" dup", ["␣"]]

    page.goto(f"{server.base}/ui?user_id={quote(user)}")
    wait_rendered(page, "memories")
    scope = page.eval_on_selector_all("#mem-rows bdi", MARKS_JS)
    assert [s[:2] for s in scope] == [[user, ["U+200B"]], [agent, ["U+00A0"]], ["dup ", ["␣"]]]
    assert page.eval_on_selector_all("#forget-user", MARKS_JS)[0][:2] == [user, ["U+200B"]]
    page.fill("#forget-confirm-input", "zw")
    assert page.is_disabled("#forget-button")
    page.fill("#forget-confirm-input", user)
    page.click("#forget-button")
    wait_text(page, "#mem-status", "Forgot user")
    assert page.eval_on_selector_all("#mem-status bdi", MARKS_JS)[0][:2] == [user, ["U+200B"]]
    assert_no_injection(page, "look-alike ids")
    context.close()


def test_an_agents_tool_calls_and_results_show_in_the_turn_log(
    server: LiveServer, browser: Any
) -> None:
    """An assistant turn that called a tool showed as an empty row: the turns API left
    its calls out (a review). Logged through the library, as an agent loop logs them."""
    from contextos.types import ToolCall

    key = server.issue_key("agent-turns")
    log = Session(server.app.state.tenants.store, "agent", tenant="agent-turns", user_id="ana")
    call = ToolCall("call_7", "get_weather", '{"city": "Lisbon", "note": "<b>x</b>"}')
    log.add(
        Message("user", "weather in Lisbon?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "sunny, 24 C", tool_call_id="call_7"),
    )
    listed = server.call("GET", "/v1/sessions/agent/turns", key)
    assert listed["results"][1]["tool_calls"] == [
        {"id": "call_7", "name": "get_weather", "arguments": call.arguments}
    ]
    assert listed["results"][0]["tool_calls"] == []
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?view=sessions&session_id=agent")
    wait_rendered(page, "sessions")
    shown = rows(page, "#turn-rows tr")
    assert shown[1][4] == '\u2192 get_weather({"city": "Lisbon", "note": "<b>x</b>"})  [call_7]'
    assert shown[2][4] == "sunny, 24 C\n\u21a9 result of call_7"
    context.close()


def test_more_sessions_lists_a_session_that_became_active_while_paging(
    server: LiveServer, browser: Any
) -> None:
    """The list is ordered by activity and was paged by offset: a session of the second
    page that got a turn after the first was drawn moved above the offset, and "more
    sessions" never listed it (129 of 130; a review). "More" now draws the whole list
    so far again, in its current order."""
    key, context, page = _sessions_view(server, browser, "moving", 130)
    assert chips(page, "#session-list") == [f"chat-{i:04d}" for i in range(129, 29, -1)]
    server.turns(key, "chat-0005", said("back again"), user_id="ana")  # on the page not drawn
    page.click("#session-list-more")
    page.wait_for_function("() => document.querySelectorAll('#session-list button').length === 130")
    listed = chips(page, "#session-list")
    assert listed[0] == "chat-0005" and sorted(listed) == [f"chat-{i:04d}" for i in range(130)]
    assert page.is_hidden("#session-list-more")
    context.close()


def test_older_memories_do_not_repeat_when_memories_are_added_meanwhile(
    server: LiveServer, browser: Any
) -> None:
    """Paged by offset, "older" after three memories were added showed the last three of
    the page before again (a review). Later pages are listed as of the first page."""
    key = server.issue_key("pager-adds")
    for i in range(60):  # one add each: each its own time, the newest first in the list
        server.add(key, user_id="ana", messages=f"memory number {i:03d}")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    first = [r[0].splitlines()[0] for r in rows(page)]  # the text, not its metadata
    assert first[0] == "memory number 059" and len(first) == 50
    for i in range(60, 63):
        server.add(key, user_id="ana", messages=f"memory number {i:03d}")
    page.click("#next")
    wait_text(page, "#page-info", "51–60 of 63")  # numbered as paged, of the total now
    older = [r[0].splitlines()[0] for r in rows(page)]
    assert older == [f"memory number {i:03d}" for i in range(9, -1, -1)]
    page.click("#prev")  # the first page again: as it is now
    wait_text(page, "#page-info", "1–50 of 63")
    assert rows(page)[0][0].splitlines()[0] == "memory number 062"
    context.close()
