"""The inspector after the session-42 review, in a real browser (docs/inspector.md):
"more sessions" clicked twice past 1,000 sessions lists each session once; a redraw
after a write, and the pager, are of the list shown, not of a user typed and not
submitted; the nav links and the sessions URL follow the user shown; a memory's
history pages with "more events"; and a server that does not answer is said so.
Debian's chromium (playwright) against a real server on loopback over a SQLite file
(ui_support)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from contextos.engine.session import Session
from contextos.types import Message
from ui_support import (  # noqa: F401 - module_browser, module_server: fixtures
    Held,
    LiveServer,
    chromium,
    live_server,
    module_browser,
    module_server,
    new_page,
    reads,
    row_texts,
    said,
    unmark_rendered,
    wait_read,
    wait_rendered,
    wait_text,
)


def chips(page: Any, selector: str) -> list[str]:
    return list(page.eval_on_selector_all(f"{selector} button", "bs => bs.map(b => b.textContent)"))


def count(page: Any, selector: str) -> int:
    return int(page.eval_on_selector_all(selector, "els => els.length"))


def shown_in_url(page: Any) -> dict[str, str]:
    """The page's URL parameters."""
    return dict(parse_qsl(urlsplit(page.url).query))


def sessions(server: LiveServer, tenant: str, user: str, n: int) -> None:
    """``n`` sessions of ``user`` (``<user>-0000`` on, one turn each, the newest last),
    written straight into the server's store (1,250 through HTTP take a minute)."""
    for i in range(n):
        log = Session(
            server.app.state.tenants.store, f"{user}-{i:04d}", tenant=tenant, user_id=user
        )
        log.add(Message("user", f"turn of {user} {i}"))


def test_more_sessions_clicked_twice_past_a_thousand_skips_none(
    server: LiveServer, browser: Any
) -> None:
    """Review bug 1: past 1,000 sessions each answer of "more sessions" added its length
    to the list's offset, so two clicks on one page (a double click, or a second click
    while the answer was slow) counted it twice: 100 sessions were never listed and the
    list looked complete. The Cache view's list runs the same code."""
    key = server.issue_key("twice")
    sessions(server, "twice", "ana", 1250)
    context, page = new_page(browser, key)
    for view, listed in (("sessions", "#session-list"), ("cache", "#cache-sessions")):
        page.goto(f"{server.base}/ui?view={view}&user_id=ana")
        wait_rendered(page, view)
        more = listed + "-more"
        while count(page, f"{listed} button") < 1000:
            n = count(page, f"{listed} button")
            page.click(more)
            page.wait_for_function(
                "([s, n]) => document.querySelectorAll(s).length > n", arg=[f"{listed} button", n]
            )
        held = Held(page, re.compile(r"/v1/sessions\?.*offset=1000"))
        page.click(more)
        page.click(more)  # before the first answer came
        held.wait(2)
        held.release()
        assert count(page, f"{listed} button") == 1100
        while page.is_visible(more):
            n = count(page, f"{listed} button")
            page.click(more)
            page.wait_for_function(
                "([s, n]) => document.querySelectorAll(s).length > n", arg=[f"{listed} button", n]
            )
        shown = chips(page, listed)
        assert shown == [f"ana-{i:04d}" for i in range(1249, -1, -1)], view
    context.close()


def test_a_write_redraws_the_list_shown_not_the_user_typed(
    server: LiveServer, browser: Any
) -> None:
    """Review bug 2: after Save (and Delete, "deleted elsewhere", Forget) the list was
    drawn for the user typed in the box and not submitted, after the key of the page
    shown: bob's memories numbered "51–60 of 60", the URL and the forget box on bob.
    "older" and "newer" read the box the same way."""
    key = server.issue_key("shown")
    server.add(key, user_id="ana", messages=said(*[f"ana fact {i:02d}" for i in range(80)]))
    server.add(key, user_id="bob", messages=said(*[f"bob fact {i:02d}" for i in range(60)]))
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    page.click("#next")
    wait_text(page, "#page-info", "51–80 of 80")
    page2 = row_texts(page)
    url2 = page.url

    page.fill("#f-user", "bob")  # typed, not submitted
    page.select_option("#f-type", "procedural")
    page.click(f"#mem-rows tr:has-text('{page2[3]}') >> text=history / edit")
    page.wait_for_function("t => document.querySelector('#d-text').value === t", arg=page2[3])
    unmark_rendered(page)
    page.fill("#d-text", page2[3] + " (edited)")
    page.click("#d-save")
    wait_rendered(page, "memories")
    wait_text(page, "#mem-rows", "(edited)")
    assert page.inner_text("#page-info") == "51–80 of 80"
    assert row_texts(page) == [*page2[:3], page2[3] + " (edited)", *page2[4:]]
    assert page.url == url2 and page.text_content("#forget-user") == "ana"
    assert page.input_value("#f-user") == "ana" and page.input_value("#f-type") == ""

    page.fill("#f-user", "bob")  # and Delete
    unmark_rendered(page)
    page.click("#d-delete")
    page.click("#d-delete-confirm")
    wait_rendered(page, "memories")
    page.wait_for_selector("#detail", state="hidden")
    assert page.inner_text("#page-info") == "51–79 of 79" and page.url == url2
    assert "bob fact" not in page.inner_text("#mem-rows")

    page.fill("#f-user", "bob")  # and the pager
    unmark_rendered(page)
    page.click("#prev")
    wait_rendered(page, "memories")
    assert page.inner_text("#page-info") == "1–50 of 79"
    assert row_texts(page)[0].startswith("ana fact") and "user_id=ana" in page.url

    page.fill("#f-user", "bob")  # and Forget, of the user shown
    page.fill("#forget-confirm-input", "ana")
    page.click("#forget-button")
    wait_text(page, "#mem-status", "Forgot user")
    assert page.inner_text("#page-info") == "none" and "user_id=ana" in page.url
    assert page.input_value("#f-user") == "ana"
    assert len(server.call("GET", "/v1/memories?user_id=bob&limit=100", key)["results"]) == 60
    context.close()


def test_nav_links_and_the_sessions_url_follow_the_user_shown(
    server: LiveServer, browser: Any
) -> None:
    """Review bug 3: the nav links kept the user the page was opened with, and listing
    another user's sessions left the session open before in the URL and on screen, so
    a reload opened ana's session beside bob's list."""
    key = server.issue_key("nav")
    for user in ("ana", "bob"):
        server.add(key, user_id=user, messages=f"{user} likes tea")
        for i in range(2):
            server.turns(key, f"{user}-chat-{i}", said(f"{user} chat {i}"), user_id=user)
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    page.fill("#f-user", "bob")
    page.click("#apply")
    wait_text(page, "#mem-rows", "bob likes tea")
    assert page.get_attribute("#nav-sessions", "href") == "/ui?view=sessions&user_id=bob"
    assert page.get_attribute("#nav-cache", "href") == "/ui?view=cache&user_id=bob"
    page.click("#nav-sessions")
    wait_rendered(page, "sessions")
    assert page.input_value("#s-user") == "bob"
    assert chips(page, "#session-list") == ["bob-chat-1", "bob-chat-0"]

    page.goto(f"{server.base}/ui?view=sessions&user_id=ana&session_id=ana-chat-1")
    wait_rendered(page, "sessions")
    assert page.is_visible("#session-detail")
    held = Held(page, re.compile(r"/ui/api/turns\?session_id=ana-chat-0&"))
    page.click("#session-list >> text=ana-chat-0")  # slow: answered after bob is listed
    held.wait()
    page.fill("#s-user", "bob")
    page.click("#sess-scope button")
    page.wait_for_function(
        "() => document.querySelector('#session-list').innerText.includes('bob')"
    )
    held.release()
    assert page.is_hidden("#session-detail")
    assert page.url.endswith("/ui?view=sessions&user_id=bob")
    assert page.get_attribute("#nav-memories", "href") == "/ui?view=memories&user_id=bob"
    page.reload()
    wait_rendered(page, "sessions")
    assert chips(page, "#session-list") == ["bob-chat-1", "bob-chat-0"]
    assert page.is_hidden("#session-detail")

    page.goto(f"{server.base}/ui?view=cache&user_id=ana")
    wait_rendered(page, "cache")
    assert page.inner_text("#c-id") == "ana-chat-1"
    page.fill("#c-user", "bob")
    page.click("#cache-scope button")
    wait_text(page, "#c-id", "bob-chat-1")  # the new list's newest, as a reload shows
    assert shown_in_url(page) == {
        "view": "cache",
        "user_id": "bob",
        "session_id": "bob-chat-1",
        "model": "claude-sonnet-4-6",
    }
    page.click("#cache-sessions >> text=bob-chat-0")
    wait_text(page, "#c-id", "bob-chat-0")
    since = reads(page)
    page.click("#cache-scope button")  # the same user again: the session open stays
    wait_read(page, since, ["/v1/sessions?"])
    assert page.is_visible("#cache-detail")
    assert page.inner_text("#c-id") == "bob-chat-0"
    assert shown_in_url(page)["session_id"] == "bob-chat-0"
    context.close()


def test_a_memorys_history_shows_every_event_with_more_events(
    server: LiveServer, browser: Any
) -> None:
    """Review bug 4: the panel showed the first page of a memory's history (100 events)
    and said later ones were not shown, with no way to see them: the newest changes
    were out of reach."""
    key = server.issue_key("history")
    (rec,) = server.add(key, user_id="ana", messages="version 0")
    for i in range(1, 131):
        server.call("PATCH", f"/v1/memories/{rec['id']}", key, {"text": f"version {i}"})
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    page.click("#mem-rows >> text=history / edit")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length === 100")
    assert page.is_visible("#history-more")
    held = Held(page, re.compile(r"/history\?after_seq=99$"))
    page.click("#history-more")
    page.click("#history-more")  # before the first answer came: one page shown, once
    held.wait(2)
    held.release()
    assert count(page, "#history-rows tr") == 131
    page.wait_for_selector("#history-more", state="hidden")
    last = page.eval_on_selector_all(
        "#history-rows tr", "trs => [...trs.at(-1).cells].map(c => c.innerText)"
    )
    assert last[1:4] == ["UPDATE", "version 129", "version 130"]
    context.close()


def test_a_server_that_does_not_answer_is_said_so(browser: Any, tmp_path: Path) -> None:
    """Review bug 5: with the server stopped, the page's only message was the browser's
    "Failed to fetch"."""
    with live_server(tmp_path / "down.db") as down:
        key = down.issue_key("down")
        down.add(key, user_id="ana", messages="ana likes tea")
        context, page = new_page(browser, key)
        page.goto(f"{down.base}/ui?user_id=ana")
        wait_rendered(page, "memories")
    page.click("#apply")  # the server has stopped
    wait_text(page, "#error", "The server did not answer")
    message = page.inner_text("#error")
    assert "may be out of date" in message and "Failed to fetch" not in message
    assert row_texts(page) == ["ana likes tea"]  # what was shown stays
    context.close()
