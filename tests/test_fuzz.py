"""Fuzzing the edges: the OpenAPI schema (schemathesis), hand-picked hostile bodies,
and CLI arguments. The only acceptable failures are 4xx answers (exit codes 1/2 for
the CLI) with a clear message: never a 500, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from contextos.cli.main import main
from server_support import ADMIN_KEY, STORES, app_client, assert_error, auth, database, issue_key

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", params=STORES)
def fuzz_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    """The app over each store (PostgreSQL refuses what SQLite stores, e.g. NUL)."""
    with (
        database(request.param, tmp_path_factory.mktemp("fuzz")) as db,
        app_client(db) as client,
    ):
        key = issue_key(client, "fuzz")
        client.post(
            "/v1/memories",
            headers=auth(key),
            json={"messages": "a seed memory about tea", "user_id": "u1"},
        )
        yield client, key


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_fuzz_never_500(fuzz_client: tuple[Any, str], mode: str) -> None:
    """Every operation of the app's own OpenAPI, with schema-valid and schema-invalid data."""
    client, key = fuzz_client
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    fuzzed = sum(
        _fuzz_operation(op, ADMIN_KEY if op.path.startswith("/v1/keys") else key, mode)
        for op in operations
    )
    assert fuzzed >= (len(operations) if mode == "positive" else 10)


def _fuzz_operation(operation: Any, secret: str, mode: str) -> bool:
    """Fuzz one operation; False when it has no input that can be made invalid."""
    from schemathesis.generation import GenerationMode

    @settings(
        max_examples=10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy(GenerationMode(mode)))
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=auth(secret), checks=CHECKS)

    try:
        fuzz()
    except Unsatisfiable:
        if mode == "positive":
            raise
        return False
    return True


HOSTILE_BODIES: list[tuple[str, bytes | str]] = [
    ("malformed json", b'{"messages": "x", "user_id": '),
    ("not json", b"\x00\xff\xfe garbage"),
    ("invalid utf-8", b'{"messages": "\xc3\x28", "user_id": "u"}'),
    ("json array", b"[1, 2, 3]"),
    ("json string", b'"hello"'),
    ("json null", b"null"),
    ("empty", b""),
    ("lone surrogate", '{"messages": "\\ud800 oops", "user_id": "u"}'),
    ("lone surrogate in id", '{"messages": "ok", "user_id": "\\udfff"}'),
    ("nul char", '{"messages": "a\\u0000b", "user_id": "u"}'),
    ("NaN metadata", '{"messages": "x", "user_id": "u", "metadata": {"a": NaN}}'),
    ("Infinity metadata", '{"messages": "x", "user_id": "u", "metadata": {"a": Infinity}}'),
    ("huge int", '{"messages": "x", "user_id": "u", "metadata": {"a": ' + "9" * 400 + "}}"),
    (
        "deep nesting",
        '{"messages": "x", "user_id": "u", "metadata": {"a": ' + "[" * 50 + "]" * 50 + "}}",
    ),
    ("very deep nesting", "[" * 100_000 + "]" * 100_000),
    ("wrong type messages", '{"messages": 42, "user_id": "u"}'),
    ("wrong type user", '{"messages": "x", "user_id": ["u"]}'),
    ("empty message list", '{"messages": [], "user_id": "u"}'),
    ("bad role", '{"messages": [{"role": "root", "content": "x"}], "user_id": "u"}'),
    ("bad memory type", '{"messages": "x", "user_id": "u", "memory_type": "x"}'),
    ("bad date", '{"messages": "x", "user_id": "u", "event_time": "yesterday"}'),
    ("unknown field", '{"messages": "x", "user_id": "u", "tenant": "other"}'),
    ("no scope", '{"messages": "x"}'),
    ("too long id", '{"messages": "x", "user_id": "' + "u" * 300 + '"}'),
    ("too much text", '{"messages": "' + "x" * 100_001 + '", "user_id": "u"}'),
]


@pytest.mark.parametrize(("name", "body"), HOSTILE_BODIES, ids=[n for n, _ in HOSTILE_BODIES])
def test_hostile_bodies_get_clear_4xx(
    fuzz_client: tuple[Any, str], name: str, body: bytes | str
) -> None:
    client, key = fuzz_client
    for path in ("/v1/memories", "/v1/memories/search", "/v1/sessions/s/turns"):
        resp = client.post(
            path, content=body, headers={**auth(key), "content-type": "application/json"}
        )
        assert 400 <= resp.status_code < 500, (name, path, resp.status_code, resp.text[:300])
        assert_error(resp, resp.status_code)


@pytest.mark.parametrize(
    "text",
    [
        "emoji 👩‍👩‍👧‍👦 family",
        "rtl עברית مرحبا",
        "combining e\u0301\u0301\u0301",
        "zero\u200bwidth",
        "bom \ufeff",
        "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "control \x01\x1f",
        "' OR 1=1 --",
        'fts "quote" AND OR NOT * ( ) NEAR:',
        "%_\\",
        "line\r\nbreak",
    ],
)
def test_unicode_edge_cases_round_trip(fuzz_client: tuple[Any, str], text: str) -> None:
    client, key = fuzz_client
    h = auth(key)
    added = client.post("/v1/memories", headers=h, json={"messages": text, "user_id": "uni"})
    assert added.status_code == 201, added.text
    record = added.json()["results"][0]
    # Memory.add trims surrounding whitespace (\x1f counts); everything else is kept.
    assert client.get(f"/v1/memories/{record['id']}", headers=h).json()["text"] == text.strip()
    found = client.post("/v1/memories/search", headers=h, json={"query": text, "user_id": "uni"})
    assert found.status_code == 200, found.text


def test_wrong_content_type_and_methods(fuzz_client: tuple[Any, str]) -> None:
    client, key = fuzz_client
    form = client.post("/v1/memories", headers=auth(key), data={"messages": "x"})
    assert_error(form, 422)
    assert_error(client.put("/v1/memories", headers=auth(key)), 405, "HTTPError")
    assert_error(client.get("/v1/nothing-here", headers=auth(key)), 404, "HTTPError")
    bad_len = client.post(
        "/v1/memories", headers={**auth(key), "content-length": "abc"}, content=b"{}"
    )
    assert bad_len.status_code in (400, 422)


# -- CLI arguments ---------------------------------------------------------------------


def _run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue() + out.getvalue()


SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
CLI_TEXT = st.text(st.characters(blacklist_categories=SURROGATES), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    tenant=CLI_TEXT,
    name=CLI_TEXT,
    key_id=CLI_TEXT,
    port=st.one_of(st.integers(-10, 70_000).map(str), CLI_TEXT),
)
def test_cli_arguments_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory, tenant: str, name: str, key_id: str, port: str
) -> None:
    db = str(tmp_path_factory.mktemp("cli") / "cli.db")
    for argv in (
        ["keys", "create", "--db", db, "--tenant", tenant, "--name", name],
        ["keys", "revoke", "--db", db, "--", key_id],
        ["keys", "list", "--db", db, "--tenant", tenant, "--json"],
        ["serve", "--db", db, "--port", port, "--rate", "-1"],
        ["bench", "serve", "--clients", port, "--seconds", "0"],
        ["mcp", "--db", db, "--transport", "x" + name, "--key", key_id],
    ):
        code, output = _run_cli(argv)
        assert code in (0, 1, 2), (argv, code, output)
        assert "Traceback" not in output, (argv, output)
        if code:
            assert output.strip(), argv
        if argv[:2] == ["keys", "list"]:
            assert code == 0 and json.loads(output) is not None


def test_cli_keys_create_rejects_bad_tenant_with_a_message(tmp_path: Path) -> None:
    code, output = _run_cli(
        ["keys", "create", "--db", str(tmp_path / "k.db"), "--tenant", "no/slashes"]
    )
    assert code == 2
    assert "tenant must be" in output


# -- MCP tool arguments ----------------------------------------------------------------

ANY_TEXT = st.text(max_size=30)
EDGE_INTS = [0, 1, -1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]
ANY_INT = st.one_of(st.sampled_from(EDGE_INTS), st.integers(), st.integers(-(2**70), 2**70))
ANY_JSON = st.recursive(
    st.none() | st.booleans() | ANY_INT | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    text=ANY_TEXT,
    ident=st.one_of(st.just("u"), st.none(), ANY_TEXT),
    number=ANY_INT,
    meta=st.one_of(st.none(), st.dictionaries(ANY_TEXT, ANY_JSON, max_size=3)),
    when=st.one_of(st.none(), ANY_TEXT, st.datetimes(timezones=st.timezones()).map(str)),
)
def test_mcp_tools_refuse_bad_arguments_as_tool_errors(
    fuzz_client: tuple[Any, str],
    text: str,
    ident: str | None,
    number: int,
    meta: dict[str, Any] | None,
    when: str | None,
) -> None:
    """Every MCP tool, with arbitrary arguments: a result, or an error the tool layer
    reports with its message (ValueError, TypeError, ContextosError) that is not a
    store failure; never an exception the SDK would log as a crash."""
    from contextos.errors import ContextosError, StoreError
    from contextos.llm.tokens import default_tokenizer
    from contextos.server.mcp_server import MemoryTools

    client, _ = fuzz_client
    tools = MemoryTools(client.app.state.tenants, lambda: "fuzz-mcp", default_tokenizer())
    calls: list[tuple[Any, dict[str, Any]]] = [
        (
            tools.add_memory,
            {"messages": text, "user_id": ident, "metadata": meta, "event_time": when},
        ),
        (tools.search_memory, {"query": text, "user_id": ident, "limit": number, "metadata": meta}),
        (tools.list_memories, {"session_id": ident, "limit": 10, "offset": number}),
        (tools.list_memories, {"user_id": ident, "limit": number}),
        (tools.get_memory, {"memory_id": text}),
        (tools.update_memory, {"memory_id": text, "text": ident, "metadata": meta}),
        (tools.memory_history, {"memory_id": text}),
        (tools.delete_memory, {"memory_id": text}),
        (tools.assemble_window, {"question": text, "user_id": ident, "token_budget": number}),
    ]
    for tool, kwargs in calls:
        try:
            tool(**kwargs)
        except StoreError as exc:  # a healthy store failing means bad input got through
            raise AssertionError((tool.__name__, kwargs, exc)) from exc
        except (ContextosError, ValueError, TypeError):
            pass
