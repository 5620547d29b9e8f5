"""The inspector after a review in a real browser (docs/inspector.md): paging by the key
of the last memory shown, a memory deleted elsewhere, a conditional Delete, tool calls'
names and ids isolated and marked, and a save on a search hit that runs the search
again. The API tests run on SQLite and PostgreSQL; the browser tests drive Debian's
chromium against a real server on loopback over a SQLite file (ui_support)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contextos.engine.session import Session
from contextos.store.base import Store
from contextos.types import Filter, MemoryRecord, Message, Scope, ToolCall, content_hash
from server_support import app_client, assert_error, auth, database, issue_key
from ui_support import (  # noqa: F401 - module_browser, module_server: fixtures
    LiveServer,
    chromium,
    live_server,
    module_browser,
    module_server,
    new_page,
    row_texts,
    said,
    wait_rendered,
    wait_text,
)


def _late(tenant: str, user: str, text: str, created_at: datetime) -> MemoryRecord:
    """A memory stamped at ``created_at`` but written now: as an add that built its
    record, then waited for the store's lock (a long write of another process)."""
    return MemoryRecord(
        id=f"late-{text}",
        text=text,
        scope=Scope(tenant=tenant, user_id=user),
        hash=content_hash(text),
        created_at=created_at,
    )


# -- the API, both stores ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An app over a fresh SQLite file, or over a fresh schema of the test PostgreSQL."""
    with database(request.param, tmp_path) as db, app_client(db) as c:
        yield c


def test_the_next_page_after_a_late_write_repeats_no_memory(client: Any) -> None:
    """Review bug 1: page 2 was listed by offset under page 1's clock time, and a memory
    stamped before that time but written after page 1 was read moved page 2 down by one:
    it began with page 1's last memory. Paged after page 1's last key, it cannot."""
    key = issue_key(client, "late")
    for i in range(8):  # one add each: each its own time
        resp = client.post(
            "/v1/memories", json={"messages": f"m{i}", "user_id": "ana"}, headers=auth(key)
        )
        assert resp.status_code == 201, resp.text
    stamped = datetime.now(UTC)  # built now, written only after page 1 was read

    def page(**params: Any) -> dict[str, Any]:
        resp = client.get(
            "/ui/api/memories", params={"user_id": "ana", "limit": 5, **params}, headers=auth(key)
        )
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    first = page()
    shown = [r["text"] for r in first["results"]]
    assert shown == ["m7", "m6", "m5", "m4", "m3"] and first["next_after"]
    client.app.state.tenants.store.put([_late("late", "ana", "LATE", stamped)])
    second = page(after=first["next_after"], offset=5)
    assert [r["text"] for r in second["results"]] == ["m2", "m1", "m0"]
    assert second["next_after"] is None and second["next_offset"] is None
    assert second["total"] == 9  # the late one counts, above the first page
    assert page()["results"][0]["text"] == "LATE"
    assert_error(
        client.get(
            "/ui/api/memories", params={"user_id": "ana", "after": "x,1"}, headers=auth(key)
        ),
        422,  # as /v1/memories answers it: one check
    )


def test_a_walk_by_keys_through_records_of_one_time_shows_each_once(store: Store) -> None:
    """Records written together share one ``created_at`` (a batch add): the key tells
    them apart by the store's row number. Records written meanwhile at that same time,
    or deleted, neither repeat nor hide one not yet reached."""
    at = datetime.now(UTC)
    scope = Scope(tenant="t", user_id="ana")
    store.put([_late("t", "ana", f"r{i:02d}", at) for i in range(23)])
    flt = Filter(scope=scope)
    whole = [r.id for r in store.list(flt, limit=100)]
    seen: list[str] = []
    after: str | None = None
    while True:
        page = store.list_after(flt, after=after, limit=5)
        if not page:
            break
        seen.extend(r.id for r, _ in page)
        after = page[-1][1]
        if len(seen) == 5:  # meanwhile: one more at the same time, and one not reached deleted
            store.put([_late("t", "ana", "extra", at)])
            store.delete_many("t", [whole[-1]])
    assert seen == whole[:-1]  # in list()'s order, each once; the deleted one is gone
    one = store.list_after(flt, limit=1, max_bytes=1)
    assert len(one) == 1 and one[0][0].id == "late-extra"
    with pytest.raises(ValueError):
        store.list_after(flt, after="not a key")


def test_delete_takes_patchs_precondition(client: Any) -> None:
    """Review bug 3: DELETE took no precondition, so the inspector's Delete removed a
    version its user never saw. It takes PATCH's, in the query, with PATCH's 409."""
    key = issue_key(client, "del")
    resp = client.post(
        "/v1/memories", json={"messages": "door code 1234", "user_id": "ana"}, headers=auth(key)
    )
    read = resp.json()["results"][0]
    path = f"/v1/memories/{read['id']}"
    resp = client.patch(path, json={"text": "door code 9876, do not delete"}, headers=auth(key))
    assert resp.status_code == 200, resp.text
    changed = resp.json()
    stale = client.delete(
        path, params={"expected_updated_at": read["updated_at"]}, headers=auth(key)
    )
    error = assert_error(stale, 409, "Conflict")
    assert "was changed since it was read" in error["message"]
    wrong = client.delete(path, params={"expected_text": "door code 1234"}, headers=auth(key))
    assert "no longer has the text expected" in assert_error(wrong, 409, "Conflict")["message"]
    assert client.get(path, headers=auth(key)).status_code == 200  # nothing deleted
    ok = client.delete(
        path,
        params={"expected_updated_at": changed["updated_at"], "expected_text": changed["text"]},
        headers=auth(key),
    )
    assert ok.status_code == 200, ok.text
    gone = client.delete(
        path, params={"expected_updated_at": changed["updated_at"]}, headers=auth(key)
    )
    assert_error(gone, 404, "NotFound")


# -- the page, in a real browser -----------------------------------------------------------


def open_panel(page: Any, text: str) -> None:
    """Opens the memory of the row with ``text``: waits for its own text in the panel (a
    panel already open on another memory meets the other waits at once)."""
    page.click(f"#mem-rows tr:has-text('{text}') >> text=history / edit")
    page.wait_for_selector("#detail:not([hidden])")
    wait_text(page, "#d-fields", "updated")
    page.wait_for_function("t => document.querySelector('#d-text').value.includes(t)", arg=text)


def test_older_after_a_late_write_shows_no_row_twice(server: LiveServer, browser: Any) -> None:
    """Review bug 1 in the page: "older" began with the last row of the page before."""
    key = server.issue_key("late-ui")
    for i in range(60):
        server.add(key, user_id="ana", messages=f"memory number {i:03d}")
    stamped = datetime.now(UTC)
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    first = row_texts(page)
    assert first[0] == "memory number 059" and len(first) == 50
    server.app.state.tenants.store.put([_late("late-ui", "ana", "LATE", stamped)])
    page.click("#next")
    wait_text(page, "#page-info", "51–60 of 61")
    assert row_texts(page) == [f"memory number {i:03d}" for i in range(9, -1, -1)]
    assert "after=" in page.url
    page.reload()  # the URL holds the page: the same one again
    wait_rendered(page, "memories")
    assert row_texts(page)[0] == "memory number 009"
    page.click("#prev")
    wait_text(page, "#page-info", "1–50 of 61")
    assert row_texts(page)[0] == "LATE"
    context.close()


def test_a_memory_deleted_elsewhere_is_said_so_and_the_edit_kept(
    server: LiveServer, browser: Any
) -> None:
    """Review bug 2: Save, Delete and "history / edit" on a memory another client deleted
    answered only "no memory '<uuid>'", and the panel and the row stayed as current."""
    key = server.issue_key("gone")
    server.add(key, user_id="ana", messages=said("keep me", "gone on save", "gone on delete"))
    server.add(key, user_id="ana", messages="gone on open")
    ids = {
        r["text"]: r["id"] for r in server.call("GET", "/v1/memories?user_id=ana", key)["results"]
    }
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")

    open_panel(page, "gone on save")
    page.fill("#d-text", "my careful edit")
    server.call("DELETE", f"/v1/memories/{ids['gone on save']}", key)
    page.click("#d-save")
    wait_text(page, "#error", "deleted elsewhere")
    wait_text(page, "#mem-rows", "gone on save", present=False)  # the list drawn again
    assert page.is_visible("#detail") and page.is_visible("#d-gone")
    assert page.inner_text("#d-unsaved-text") == "text: my careful edit"
    assert page.is_disabled("#d-save") and page.is_disabled("#d-delete")
    assert "deleted elsewhere" in page.inner_text("#error")  # still, after the reload

    open_panel(page, "gone on delete")  # a memory opened again: the mark goes
    # The panel was open on the other memory, whose fields met open_panel's waits at
    # once: wait for this memory's text (under load the assertion ran before it).
    page.wait_for_function("() => document.querySelector('#d-text').value === 'gone on delete'")
    assert page.is_hidden("#d-gone") and page.is_enabled("#d-save")
    server.call("DELETE", f"/v1/memories/{ids['gone on delete']}", key)
    page.click("#d-delete")
    page.click("#d-delete-confirm")
    wait_text(page, "#error", "deleted elsewhere")
    wait_text(page, "#mem-rows", "gone on delete", present=False)

    server.call("DELETE", f"/v1/memories/{ids['gone on open']}", key)
    page.click("#mem-rows tr:has-text('gone on open') >> text=history / edit")
    # The Delete's message above also says "deleted elsewhere": wait for the open's own.
    wait_text(page, "#error", "The list now shows the memories as they are")
    wait_text(page, "#mem-rows", "gone on open", present=False)
    assert "deleted elsewhere" in page.inner_text("#error")
    assert page.is_hidden("#detail")
    assert row_texts(page) == ["keep me"]
    context.close()


def test_delete_of_a_memory_changed_meanwhile_deletes_nothing(
    server: LiveServer, browser: Any
) -> None:
    """Review bug 3: another client changed the text while the panel was open; Delete
    removed that version, never shown. Now 409: nothing deleted, the panel reloaded."""
    key = server.issue_key("del-ui")
    (rec,) = server.add(key, user_id="ana", messages="Ana's door code is 1234.")
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana")
    wait_rendered(page, "memories")
    open_panel(page, "door code")
    changed = "Ana's door code is 9876 (do not delete)."
    server.call("PATCH", f"/v1/memories/{rec['id']}", key, {"text": changed})
    page.click("#d-delete")
    page.click("#d-delete-confirm")
    wait_text(page, "#error", "changed since you opened it")
    assert server.call("GET", f"/v1/memories/{rec['id']}", key)["text"] == changed
    page.wait_for_function("t => document.querySelector('#d-text').value === t", arg=changed)
    page.click("#d-delete")  # the version now shown: deleted
    page.click("#d-delete-confirm")
    page.wait_for_selector("#detail", state="hidden")
    resp = server.http.get(f"/v1/memories/{rec['id']}", headers=auth(key))
    assert resp.status_code == 404
    context.close()


def test_tool_call_names_arguments_and_ids_are_isolated_and_marked(
    server: LiveServer, browser: Any
) -> None:
    """Review bug 4: a U+202E in a tool name reversed the line, the page's brackets and
    the id included, and a result of ``call_\\u200bA`` read as the result of ``call_A``."""
    key = server.issue_key("tools")
    log = Session(server.app.state.tenants.store, "t8", tenant="tools", user_id="ana")
    log.add(
        Message("user", "pay"),
        Message(
            "assistant",
            "",
            tool_calls=(
                ToolCall("call_A", "transfer", '{"to": "eve"}'),
                ToolCall("call_\u200bA", "re\u202efund", '{"\u202eamount": 10}'),
            ),
        ),
        Message("tool", "done", tool_call_id="call_A"),
        Message("tool", "done", tool_call_id="call_\u200bA"),
    )
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?view=sessions&session_id=t8")
    wait_rendered(page, "sessions")
    calls = page.eval_on_selector_all(
        "#turn-rows .call",
        """ds => ds.map(d => ({
          text: d.textContent,
          isolates: [...d.children].filter(c => c.tagName === 'BDI').map(c => c.textContent),
          marks: [...d.querySelectorAll('.mark')].map(m => m.dataset.mark),
        }))""",
    )
    assert [c["text"] for c in calls] == [
        '\u2192 transfer({"to": "eve"})  [call_A]',
        '\u2192 re\u202efund({"\u202eamount": 10})  [call_\u200bA]',
        "\u21a9 result of call_A",
        "\u21a9 result of call_\u200bA",
    ]
    assert calls[1]["isolates"] == ["re\u202efund", '{"\u202eamount": 10}', "call_\u200bA"]
    assert calls[1]["marks"] == ["U+202E", "U+200B"]  # the name's override, the id's space
    assert calls[2]["marks"] == [] and calls[3]["marks"] == ["U+200B"]
    assert calls[3]["isolates"] == ["call_\u200bA"]
    context.close()


def _embedded(server: LiveServer, key: str, query: str) -> None:
    """Wait until the server's worker has embedded what was added: the search's hits,
    by their dense ranks, stay the same twice in a row."""
    body = {"query": query, "user_id": "ana", "limit": 20}
    seen: list[Any] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        hits = server.call("POST", "/v1/memories/search", key, body)["results"]
        ranks = [(h["memory"]["id"], h["dense_rank"]) for h in hits]
        if ranks == seen and any(rank is not None for _, rank in ranks):
            return
        seen = ranks
        time.sleep(0.3)
    raise AssertionError("the added memories were not embedded within 30 s")


def test_saving_a_search_hit_runs_the_search_again(server: LiveServer, browser: Any) -> None:
    """Review bug 5: after Save on a search hit, the hits were replaced by the whole list
    while the box still showed the query."""
    key = server.issue_key("search-save")
    server.add(key, user_id="ana", messages=said(*[f"note {i} about tea" for i in range(30)]))
    server.add(key, user_id="ana", messages=said("Ana moved to Lisbon.", "Lisbon has trams."))
    _embedded(server, key, "Lisbon")  # else the search found 2 before the save, 20 after
    context, page = new_page(browser, key)
    page.goto(f"{server.base}/ui?user_id=ana&q=Lisbon")
    wait_rendered(page, "memories")
    wait_text(page, "#mem-status", "hits for the query")
    hits = len(row_texts(page))
    open_panel(page, "Ana moved to Lisbon.")
    page.fill("#d-text", "Ana moved to Lisbon in 2024.")
    page.click("#d-save")
    page.wait_for_function("() => [...document.querySelectorAll('#history-rows tr')].length === 2")
    wait_text(page, "#mem-rows", "Lisbon in 2024")
    assert "hits for the query" in page.inner_text("#mem-status")
    assert "q=Lisbon" in page.url and page.is_hidden("#pager")
    assert len(row_texts(page)) == hits
    context.close()
