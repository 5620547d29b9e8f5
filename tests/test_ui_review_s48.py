"""The inspector after the session-48 review, in a real browser (docs/inspector.md): a
double click sends one request, the window is of the user listed, an answer cut off or
not JSON says so, bidi controls in stored text are marked, the search query stays out
of the URL the server sees, focus and live regions after a delete or a forget, how long
a 429 asks to wait, and a bad ``after`` answered as ``/v1`` answers it. Debian's chromium
(playwright) against a real server on loopback over a SQLite file (ui_support)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from ui_support import (  # noqa: F401 - module_browser, module_server: fixtures
    Held,
    LiveServer,
    auth,
    chromium,
    live_server,
    module_browser,
    module_server,
    new_page,
    said,
    unmark_rendered,
    wait_rendered,
    wait_text,
)


def sent(page: Any, method: str, pattern: str) -> list[str]:
    """The URLs of the requests ``page`` sends from now on, of ``method``, matching ``pattern``."""
    urls: list[str] = []
    page.on(
        "request",
        lambda r: urls.append(r.url) if r.method == method and re.search(pattern, r.url) else None,
    )
    return urls


def error_text(page: Any) -> str | None:
    return page.evaluate(
        "() => { const e = document.getElementById('error');"
        " return e.hidden ? null : e.textContent; }"
    )


def test_a_double_click_on_save_delete_or_forget_sends_one_request(
    server: LiveServer, browser: Any
) -> None:
    """Review 1: a double click on Save sent two PATCHes; the second, on the version the
    first replaced, got a 409 and the page said the saved edit was not saved. Two
    forgets said "0 records erased" after erasing them all; two DELETEs were sent."""
    key = server.issue_key("dbl")
    tea, bike = server.add(key, user_id="ana", messages=said("ana likes tea", "ana rides a bike"))
    server.add(key, user_id="fg", messages=said("fg one", "fg two", "fg three"))
    context, page = new_page(browser, key)
    patches = sent(page, "PATCH", r"/v1/memories/")
    deletes = sent(page, "DELETE", r"/v1/memories/")
    forgets = sent(page, "POST", r"/v1/memories/forget$")
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")

    page.get_by_role("button", name="history / edit: ana likes tea").click()
    page.wait_for_selector("#detail:not([hidden])")
    page.fill("#d-text", "ana likes green tea")
    unmark_rendered(page)
    page.dblclick("#d-save")
    wait_rendered(page, "memories")  # the list drawn again after the save
    page.wait_for_function("() => !document.getElementById('d-save').disabled")
    assert len(patches) == 1
    assert error_text(page) is None and page.is_hidden("#d-unsaved")
    assert server.call("GET", f"/v1/memories/{tea['id']}", key)["text"] == "ana likes green tea"

    # While its answer is on its way, Save is off and a submit by other means does nothing.
    held = Held(page, re.compile(r"/v1/memories/[^/?]+$"))
    page.fill("#d-text", "ana likes black tea")
    page.click("#d-save")
    held.wait()
    assert page.is_disabled("#d-save")
    page.evaluate("document.getElementById('edit-form').requestSubmit()")
    unmark_rendered(page)
    held.release()
    wait_rendered(page, "memories")
    page.wait_for_function("() => !document.getElementById('d-save').disabled")
    assert len(patches) == 2 and error_text(page) is None

    page.get_by_role("button", name="history / edit: ana rides a bike").click()
    page.wait_for_function(
        f"() => document.getElementById('d-id').textContent === {json.dumps(bike['id'])}"
    )
    page.click("#d-delete")
    unmark_rendered(page)
    page.dblclick("#d-delete-confirm")
    wait_rendered(page, "memories")
    assert len(deletes) == 1 and error_text(page) is None
    assert page.inner_text("#mem-status") == "1 memories"

    page.goto(f"{server.base}/ui?user_id=fg")
    wait_rendered(page, "memories")
    page.fill("#forget-confirm-input", "fg")
    page.dblclick("#forget-button")
    wait_text(page, "#mem-status", "Forgot user")
    assert len(forgets) == 1
    assert page.inner_text("#mem-status") == "Forgot user fg: 3 records erased."
    context.close()


def test_the_window_is_of_the_user_listed_not_one_typed_and_not_submitted(
    server: LiveServer, browser: Any
) -> None:
    """Review 2: the window took its user from the box, so a user typed and not
    submitted had their memories placed in the window of another user's session."""
    key = server.issue_key("win")
    server.turns(key, "w1", said("hello, who cooks pasta?"), user_id="wa")
    server.add(key, user_id="wa", messages="wa is vegetarian and cooks pasta")
    server.add(key, user_id="wb", messages="wb has a severe pasta allergy and cooks pasta")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?view=sessions&user_id=wa&session_id=w1")
    wait_rendered(page, "sessions")
    page.fill("#s-user", "wb")  # typed, not submitted: the list is still wa's
    page.fill("#w-question", "who cooks pasta?")
    page.click("#w-build")
    page.wait_for_selector("#window-out:not([hidden])")
    blocks = page.eval_on_selector_all(
        "#block-rows tr td:nth-child(5)", "tds => tds.map((td) => td.innerText)"
    )
    assert any("wa is vegetarian" in b for b in blocks), blocks
    assert not any("wb has" in b for b in blocks), blocks
    context.close()


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (200, "<html><body>Sign in to the proxy</body></html>", "was cut off or was not JSON"),
        (200, '{"results": [{"id": "m1", "te', "was cut off or was not JSON"),
        (502, "<html><body>Bad Gateway</body></html>", "a proxy in front of it) answered HTTP 502"),
    ],
    ids=["html-200", "cut-200", "html-502"],
)
def test_an_answer_cut_off_or_not_json_says_so(
    server: LiveServer, browser: Any, status: int, body: str, says: str
) -> None:
    """Review 3: a 2xx whose body did not parse was returned as null and shown as
    "Cannot read properties of null (reading 'total')"; a proxy's 502 page was only
    "HTTP 502"."""
    key = server.issue_key(f"cut{status}{len(body)}")
    server.add(key, user_id="ana", messages="ana likes tea")
    context, page = new_page(browser, key)
    page.route(
        re.compile(r"/ui/api/memories\?"),
        lambda route: route.fulfill(status=status, body=body, content_type="text/html"),
    )
    page.goto(f"{server.base}/ui?user_id=ana")
    page.wait_for_selector("#error:not([hidden])")
    shown = error_text(page) or ""
    assert says in shown and "may be out of date" in shown, shown
    assert "TypeError" not in shown and "Cannot read" not in shown
    context.close()


def test_bidi_controls_in_stored_text_are_marked_and_boxes_holding_them_say_so(
    server: LiveServer, browser: Any
) -> None:
    """Review 4: U+202E in a memory's text drew "Ana is allergic to \\u202estunaep" as
    "...peanuts" in the list, the history and the edit box (ids and metadata were
    already marked or escaped)."""
    key = server.issue_key("bidi48")
    text = "Ana is allergic to \u202estunaep"
    server.add(key, user_id="rtl", messages=text)
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=rtl")
    wait_rendered(page, "memories")
    cell = "#mem-rows tr .text"
    assert page.eval_on_selector(cell, "e => e.querySelector('.mark').dataset.mark") == "U+202E"
    assert page.eval_on_selector(cell, "e => e.textContent") == text  # a copy is exact
    # Drawn in stored order: the "s" of "stunaep" left of its "p".
    first, last = page.eval_on_selector(
        cell,
        """e => {
          const walk = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
          for (let n = walk.nextNode(); n; n = walk.nextNode()) {
            const i = n.textContent.indexOf('stunaep');
            if (i < 0) continue;
            const x = (k) => { const r = document.createRange(); r.setStart(n, k);
              r.setEnd(n, k + 1); return r.getBoundingClientRect().left; };
            return [x(i), x(i + 6)];
          }
          return null;
        }""",
    )
    assert first < last
    page.click("#mem-rows button")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.eval_on_selector_all("#history-rows .mark", "ms => ms.length") >= 1
    assert "U+202E" in page.inner_text("#d-text-bidi")
    assert page.get_attribute("#d-text", "aria-describedby") == "d-text-bidi"
    page.fill("#d-text", "plain now")
    assert page.is_hidden("#d-text-bidi")
    page.fill("#f-user", "\u202eana")
    assert "U+202E" in page.inner_text("#f-user-bidi")
    context.close()


def test_the_search_query_stays_out_of_the_url_the_server_sees(
    server: LiveServer, browser: Any
) -> None:
    """Review 5: the query went into the URL's query string, so every load of it put the
    query (often words of a memory) in the server's access log."""
    key = server.issue_key("hash")
    server.add(key, user_id="ana", messages="Ana's diabetes diagnosis came in May.")
    context, page = new_page(browser, key)
    loads = sent(page, "GET", r"/ui(\?|$)")
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    page.fill("#f-query", "diabetes diagnosis")
    unmark_rendered(page)
    page.click("#search-button")
    wait_rendered(page, "memories")
    url = urlsplit(page.url)
    assert "q=" not in url.query and url.fragment == "q=diabetes+diagnosis"
    unmark_rendered(page)
    page.reload()  # the search is still a link
    wait_rendered(page, "memories")
    assert page.input_value("#f-query") == "diabetes diagnosis"
    assert "hits for the query" in page.inner_text("#mem-status")
    # An older link with ?q= opens its search, and the query moves to the fragment.
    page.goto(f"{server.base}/ui?user_id=ana&q=diagnosis")
    wait_rendered(page, "memories")
    assert "hits for the query" in page.inner_text("#mem-status")
    assert urlsplit(page.url).fragment == "q=diagnosis" and "q=" not in urlsplit(page.url).query
    assert [u for u in loads if "diabetes" in u] == []
    context.close()


def test_focus_and_live_regions_after_a_delete_and_a_forget(
    server: LiveServer, browser: Any
) -> None:
    """Review 6: after Really delete or Forget user, focus dropped to <body>, and the
    outcome sat in a plain <p> no screen reader announced."""
    key = server.issue_key("focus")
    server.add(key, user_id="kb", messages=said("kb one", "kb two", "kb three"))
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=kb")
    wait_rendered(page, "memories")
    for status in ("#mem-status", "#w-summary", "#c-summary"):
        assert page.get_attribute(status, "role") == "status"
    assert page.get_attribute("#nav-memories", "aria-current") == "page"
    page.get_by_role("button", name="history / edit: kb one").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail:not([hidden])")
    page.keyboard.press("Escape")  # closes the panel, focus back on its row's button
    page.wait_for_selector("#detail", state="hidden")
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail:not([hidden])")
    page.focus("#d-delete")
    page.keyboard.press("Enter")
    page.focus("#d-delete-confirm")
    unmark_rendered(page)
    page.keyboard.press("Enter")
    wait_rendered(page, "memories")
    page.wait_for_function("() => document.activeElement.id === 'mem-status'")
    assert page.inner_text("#mem-status") == "2 memories"
    page.fill("#forget-confirm-input", "kb")
    page.focus("#forget-button")
    page.keyboard.press("Enter")
    wait_text(page, "#mem-status", "Forgot user kb: 2 records erased.")
    assert page.evaluate("document.activeElement.id") == "mem-status"
    context.close()


def test_a_429_says_how_long_to_wait(server: LiveServer, browser: Any) -> None:
    """Review 7: a 429 showed only "rate limit exceeded for key ...", not its Retry-After."""
    key = server.issue_key("slow")
    context, page = new_page(browser, key)
    error = {"error": {"type": "RateLimited", "message": "rate limit exceeded for key abc"}}
    page.route(
        re.compile(r"/ui/api/memories\?"),
        lambda route: route.fulfill(
            status=429,
            headers={"Retry-After": "4"},
            body=json.dumps(error),
            content_type="application/json",
        ),
    )
    page.goto(f"{server.base}/ui?user_id=ana")
    page.wait_for_selector("#error:not([hidden])")
    assert error_text(page) == (
        "Too many requests for this key: try again in 4 s "
        "(the server said: rate limit exceeded for key abc)."
    )
    context.close()


def test_a_bad_after_is_refused_as_v1_refuses_it_and_the_page_shows_the_first_page(
    server: LiveServer, browser: Any
) -> None:
    """Review 8: ``/ui/api/memories`` answered a key the store did not make with 400
    ``ValueError``, where ``/v1/memories`` answers 422 ``InvalidRequest``; a link with a
    cut ``after`` showed that bare message over an empty table."""
    key = server.issue_key("after")
    server.add(key, user_id="ana", messages="ana likes tea")
    answers = [
        server.http.get(path, params={"user_id": "ana", "after": "x,1"}, headers=auth(key))
        for path in ("/v1/memories", "/ui/api/memories")
    ]
    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].json() == answers[1].json()
    assert answers[1].json()["error"]["type"] == "InvalidRequest"
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana&after=x,1&offset=50")
    wait_rendered(page, "memories")
    page.wait_for_selector("#error:not([hidden])")
    assert "first page" in (error_text(page) or "")
    assert page.inner_text("#page-info") == "1–1 of 1"
    assert "after=" not in page.url
    context.close()
