"""Images and documents cost what they are sent as, and the window counts it.

A screenshot in a tool result went back to Anthropic whole on every later call while
the window counted it as the placeholder ``[image]``: an agent's requests grew to many
times the budget and no compaction ever ran. The estimates here follow the providers'
published rules (:mod:`contextos.llm.media_tokens`); the wrapped-client tests run the
real SDK clients against the loopback fakes, a long agent loop on a real SQLite file,
and check every request sent against the window that was counted for it.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from contextos.engine.context import SessionContext
from contextos.engine.window import TOOL_RESULTS_KEY as WINDOW_TOOL_RESULTS_KEY
from contextos.llm import media_tokens as mt
from contextos.llm.tokens import default_tokenizer
from contextos.memory import Memory
from contextos.providers import wrap
from contextos.providers.base import WIRE_KEY as BASE_WIRE_KEY
from contextos.types import Message

TOK = default_tokenizer()


# -- images and PDFs as bytes ------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    """A real (all-black) PNG, written by hand: no imaging library needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = b"".join(b"\x00" + bytes(width * 3) for _ in range(height))
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", head)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def pdf(pages: int, *, compressed: bool = False) -> bytes:
    """A minimal PDF of ``pages`` pages; ``compressed``: its page objects inside a
    Flate-compressed object stream (PDF 1.5), as most producers write them now."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    page_objs = ["<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>" for _ in range(pages)]
    head = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    tree = f"2 0 obj << /Type /Pages /Kids [{kids}] /Count {pages} >> endobj\n".encode()
    if not compressed:
        body = "".join(f"{3 + i} 0 obj {o} endobj\n" for i, o in enumerate(page_objs))
        return head + tree + body.encode() + b"%%EOF\n"
    packed = zlib.compress(" ".join(page_objs).encode())
    # the page tree too, so no plain "/Type /Page" text is left in the file
    tree_packed = zlib.compress(tree)
    stream = b"".join(
        f"{n} 0 obj << /Type /ObjStm /N 1 /Filter /FlateDecode /Length {len(d)} >>\n".encode()
        + b"stream\n"
        + d
        + b"\nendstream endobj\n"
        for n, d in ((20, packed), (21, tree_packed))
    )
    return b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n" + stream + b"%%EOF\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_metadata_keys_are_the_ones_the_adapters_write() -> None:
    # media_tokens cannot import the engine or the providers (they import it); the keys
    # it reads are spelled again there, and must stay the same strings.
    from contextos.providers.anthropic import THINKING_KEY

    assert mt.TOOL_RESULTS_KEY == WINDOW_TOOL_RESULTS_KEY
    assert mt.WIRE_KEY == BASE_WIRE_KEY
    assert mt.THINKING_KEY == THINKING_KEY == "anthropic_thinking"


# -- sizes ---------------------------------------------------------------------------------


def _pillow(fmt: str, size: tuple[int, int], **save: Any) -> bytes:
    image_mod = pytest.importorskip("PIL.Image")
    mode = "RGBA" if save.pop("alpha", False) else "RGB"
    out = io.BytesIO()
    image_mod.new(mode, size, (10, 200, 30)).save(out, fmt, **save)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "size", "save"),
    [
        ("PNG", (1092, 1092), {}),
        ("JPEG", (1920, 1080), {}),
        ("JPEG", (640, 480), {"progressive": True}),
        # an ICC profile of 60 KB before the frame header: past the head first decoded
        ("JPEG", (800, 600), {"icc_profile": bytes(60_000)}),
        ("GIF", (300, 200), {}),
        ("WEBP", (640, 480), {}),
        ("WEBP", (641, 481), {"lossless": True}),
        ("WEBP", (333, 222), {"alpha": True, "exif": b"Exif\x00\x00" + bytes(64)}),
    ],
    ids=["png", "jpeg", "jpeg-progressive", "jpeg-big-icc", "gif", "webp", "webp-ll", "webp-x"],
)
def test_an_images_size_is_read_from_its_base64_header(
    fmt: str, size: tuple[int, int], save: dict[str, Any]
) -> None:
    assert mt.base64_image_size(b64(_pillow(fmt, size, **save))) == size


def test_a_hand_written_png_and_what_is_no_image() -> None:
    assert mt.base64_image_size(b64(png(37, 11))) == (37, 11)
    assert mt.base64_image_size(b64(b"\x89PNG" + bytes(range(256)) * 40)) is None
    assert mt.base64_image_size("not base64 at all!") is None
    assert mt.base64_image_size("") is None


def test_anthropic_images_cost_pixels_over_750_scaled_as_the_api_scales_them() -> None:
    assert mt.anthropic_image_tokens(1092, 1092) == 1590  # Anthropic's own table
    assert mt.anthropic_image_tokens(200, 200) == 54
    # past 2576 px on the long edge or 3.75 MP, shrunk (aspect kept) and capped
    assert mt.anthropic_image_tokens(8000, 100) == math.ceil(2576 * 32 / 750)
    big = mt.anthropic_image_tokens(4000, 3000)
    assert 4990 <= big <= mt.ANTHROPIC_IMAGE_MAX_TOKENS == 5000


def test_openai_images_cost_the_tile_rule() -> None:
    # the examples of OpenAI's vision guide (GPT-4o family)
    assert mt.openai_image_tokens(1024, 1024, "high") == 765
    assert mt.openai_image_tokens(2048, 4096, "high") == 1105
    assert mt.openai_image_tokens(4096, 8192, "low") == 85
    assert (
        max(
            mt.openai_image_tokens(w, h)
            for w in (512, 768, 1024, 2048, 4096)
            for h in (512, 768, 2048)
        )
        == mt.OPENAI_UNKNOWN_IMAGE_TOKENS
    )


def test_pdf_pages_are_counted_from_the_bytes() -> None:
    assert mt.pdf_pages(pdf(3)) == 3
    assert mt.pdf_pages(pdf(4, compressed=True)) == 4
    assert mt.pdf_pages(b"%PDF-1.7\n%%EOF") is None
    assert mt.pdf_pages(png(2, 2)) is None
    assert mt.pdf_tokens(pdf(2)) == 2 * mt.PDF_PAGE_TOKENS
    assert mt.pdf_tokens(None) == mt.UNKNOWN_PDF_PAGES * mt.PDF_PAGE_TOKENS
    assert mt.pdf_tokens(bytes(120_000)) == 3 * mt.PDF_PAGE_TOKENS  # by size: 50 KB a page


def test_a_pdf_from_an_imaging_library_is_counted() -> None:
    image_mod = pytest.importorskip("PIL.Image")
    pages = [image_mod.new("RGB", (200, 300), (255, 255, 255)) for _ in range(5)]
    out = io.BytesIO()
    pages[0].save(out, "PDF", save_all=True, append_images=pages[1:])
    assert mt.pdf_pages(out.getvalue()) == 5


# -- messages ---------------------------------------------------------------------------


def _image_block(data: bytes) -> dict[str, Any]:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": b64(data)},
    }


def test_a_tool_results_images_count_while_they_are_sent() -> None:
    blocks = [
        {"type": "tool_result", "tool_use_id": "t1", "content": [_image_block(png(1092, 1092))]}
    ]
    kept = {"of": mt.results_digest("[image]"), "blocks": blocks}
    turn = Message("tool", "[image]", tool_call_id="t1", metadata={mt.TOOL_RESULTS_KEY: kept})
    assert mt.media_tokens(turn) == 1590
    assert TOK.count_messages([turn]) >= 1590
    # cleared by compaction: the stub goes out, not the blocks
    assert mt.media_tokens(Message("tool", "[cleared]", metadata=turn.metadata)) == 0


def test_a_url_image_and_a_url_document_cost_the_documented_constants() -> None:
    content = [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}},
        {"type": "text", "text": "compare"},
    ]
    question = Message(
        "user", "compare", metadata={mt.WIRE_KEY: ("anthropic", {"content": content})}
    )
    expected = mt.ANTHROPIC_UNKNOWN_IMAGE_TOKENS + mt.pdf_tokens(None) + TOK.count("hi")
    assert mt.media_tokens(question, TOK.count) == expected
    # a logged user turn has no wire form: it is sent as its text
    assert mt.media_tokens(Message("user", "compare")) == 0


# -- hostile input: bounded in time and price ---------------------------------------------
#
# A question's PDF or image is the caller's (or an attacker's, through an app that
# forwards uploads): pricing it must not hang the call, nor price it absurdly. Each
# case below took seconds to minutes, or raised, before its bound.

#: Generous for a loaded 2-core machine; the unbounded code took 10 s and more.
FAST = 1.0


def by_size(data: bytes) -> int:
    """The documented price of a PDF whose pages are not counted: a page per 50 KB."""
    return max(1, math.ceil(len(data) / 50_000)) * mt.PDF_PAGE_TOKENS


def timed(price: Any, *args: Any) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = price(*args)
    return tokens, time.perf_counter() - start


def objstm_flood(markers: int = 25_000) -> bytes:
    """Object-stream markers without an ``endstream``, then a long stream: every marker
    once made a search to the end and a copy of the rest of the file."""
    return b"%PDF-1.7\n" + b"/Type/ObjStm " * markers + b"stream\n" + b"x" * 600_000


def test_a_flood_of_object_stream_markers_is_priced_at_once() -> None:
    data = objstm_flood()
    tokens, took = timed(mt.pdf_tokens, data)
    assert took < FAST
    assert tokens == by_size(data)


@pytest.mark.parametrize(
    "inflated",
    [
        b"/Type /Page " * 700_000,  # 8 MB of page objects, from 16 KB
        bytes(8 << 20),  # 8 MB of nothing, from 8 KB
    ],
    ids=["pages", "zeros"],
)
def test_many_small_zlib_bombs_are_priced_by_size_at_once(inflated: bytes) -> None:
    bomb = zlib.compress(inflated, 9)
    stream = b"1 0 obj << /Type /ObjStm /N 1 >>\nstream\n" + bomb + b"\nendstream endobj\n"
    data = b"%PDF-1.7\n" + stream * 120  # 1-2 MB inflating to ~1 GB
    tokens, took = timed(mt.pdf_tokens, data)
    assert took < FAST
    assert tokens == by_size(data) <= mt.PDF_MAX_PAGES * mt.PDF_PAGE_TOKENS
    # the same file as an OpenAI ``file`` part
    part = {"type": "file", "file": {"file_data": "data:application/pdf;base64," + b64(data)}}
    tokens, took = timed(mt.openai_parts_tokens, [part])
    assert took < FAST
    assert tokens == by_size(data)


def test_a_pdf_never_costs_more_than_a_request_takes() -> None:
    # 40 MB of page objects: past the most pages a request takes, priced as that most
    data = b"%PDF-1.7\n" + b"/Type /Page " * 3_500_000
    tokens, took = timed(mt.pdf_tokens, data)
    assert took < FAST
    assert tokens == mt.PDF_MAX_PAGES * mt.PDF_PAGE_TOKENS == 1_800_000
    # and what was counted before still is, object streams and all
    assert mt.pdf_pages(pdf(600)) == 600
    assert mt.pdf_pages(pdf(250, compressed=True)) == 250


@pytest.mark.parametrize(
    "head",
    [
        b"RIFF\x00\x00\x00\x00WEBPVP8X",  # the chunk's name and nothing after it
        b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x10\x00\x00\x00\x7f\x02",
        b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00\x00\x00\x2f\x7f",
    ],
    ids=["vp8x-bare", "vp8x-cut", "vp8l-cut"],
)
def test_a_cut_short_webp_header_costs_the_unknown_size_price(head: bytes) -> None:
    assert mt.base64_image_size(b64(head)) is None
    question = Message(
        "user", "q", metadata={mt.WIRE_KEY: ("anthropic", {"content": [_image_block(head)]})}
    )
    assert mt.media_tokens(question) == mt.ANTHROPIC_UNKNOWN_IMAGE_TOKENS
    part = {"type": "image_url", "image_url": {"url": "data:image/webp;base64," + b64(head)}}
    assert mt.openai_parts_tokens([part]) == mt.OPENAI_UNKNOWN_IMAGE_TOKENS


def test_a_jpeg_of_fill_bytes_or_empty_segments_is_read_at_once() -> None:
    # no frame header in the head: the whole image is decoded and walked (16 MB)
    fill = b"\xff\xd8" + b"\xff" * (16 << 20)  # a marker's fill bytes, one by one: 2 s
    empty = b"\xff\xd8" + b"\xff\xe0\x00\x02" * (4 << 20)  # 4M segments: 2 s
    for data in (fill, empty):
        size, took = timed(mt.base64_image_size, b64(data))
        assert size is None and took < FAST


def test_content_nested_past_any_request_is_not_walked() -> None:
    image = _image_block(png(200, 200))  # 54 tokens
    deep: dict[str, Any] = {"type": "text", "text": "x"}
    for _ in range(5000):
        deep = {"type": "tool_result", "content": [deep, image]}
    question = Message("user", "q", metadata={mt.WIRE_KEY: ("anthropic", {"content": [deep]})})
    tokens, took = timed(mt.media_tokens, question, TOK.count)
    assert took < FAST
    # the images of the levels walked, no more (no RecursionError)
    assert tokens == mt.MAX_NESTING * 54  # at depths 1 to MAX_NESTING
    # a reference cycle ends too
    loop: dict[str, Any] = {"type": "tool_result", "content": [image]}
    loop["content"].append(loop)
    assert mt.anthropic_blocks_tokens([loop], None) == mt.MAX_NESTING * 54
    # what a request does nest is walked: a document's content in a search result
    # in a tool result
    doc = {"type": "document", "source": {"type": "content", "content": [image]}}
    nested = {"type": "tool_result", "content": [{"type": "search_result", "content": [doc]}]}
    assert mt.anthropic_blocks_tokens([nested], None) == 54


# -- through the wrapper ----------------------------------------------------------------


class Recording(SessionContext):
    """The SessionContext the wrapper uses, keeping each window it built."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.windows: list[Any] = []

    def prepare(self, request: Any, *, reserve_tokens: int) -> Any:
        prepared = super().prepare(request, reserve_tokens=reserve_tokens)
        self.windows.append(prepared.window)
        return prepared


#: What each test image or page is worth, by the providers' rules, from what the test
#: knows it sent (not from the code under test).
SCREEN = (1092, 1092)
SCREEN_TOKENS = math.ceil(SCREEN[0] * SCREEN[1] / 750)  # 1590
SKIP = {"cache_control", "type", "id", "tool_use_id", "signature", "model", "max_tokens"}


def sent_tokens(body: dict[str, Any], *, image: int, page: int = mt.PDF_PAGE_TOKENS) -> int:
    """The tokens of a request as sent: cl100k over every text leaf (tool inputs as JSON),
    ``image`` per image, ``page`` per PDF page (pages counted by the test's own PDFs)."""
    total = 0

    def walk(value: Any, key: str | None = None) -> None:
        nonlocal total
        if isinstance(value, dict):
            kind = value.get("type")
            if kind == "image" or kind == "image_url":
                total += image
                return
            if kind == "document":
                data = base64.b64decode(value["source"]["data"])
                total += page * data.count(b"/Type /Page ")
                return
            for k, v in value.items():
                if k in SKIP or (k == "thinking" and not isinstance(v, str)):
                    continue
                if k == "input" and isinstance(v, dict):
                    total += TOK.count(json.dumps(v))
                    continue
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            total += TOK.count(value)

    walk({k: body[k] for k in ("system", "messages", "tools") if k in body})
    return total


anthropic = pytest.importorskip("anthropic")

from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

TOOLS = [
    {
        "name": "screenshot",
        "description": "Take a screenshot of the screen.",
        "input_schema": {"type": "object", "properties": {}},
    }
]


def _agent(body: dict[str, Any]) -> Any:
    """The fake model: looks at the screen, then again, forever."""
    n = len(body["messages"])
    call = {"type": "tool_use", "id": f"toolu_{n}", "name": "screenshot", "input": {}}
    return [{"type": "text", "text": f"Step {n}: I see the screen."}, call]


@pytest.fixture
def agent_client() -> Iterator[tuple[FakeAnthropic, Any]]:
    with FakeAnthropic(reply=_agent) as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0)
        yield fake, client
        client.close()


@pytest.mark.parametrize("compaction", ["summarize", "clear_tool_results"])
def test_a_long_screenshot_loop_stays_in_its_budget(
    agent_client: tuple[FakeAnthropic, Any], memory: Memory, compaction: Any
) -> None:
    fake, client = agent_client
    budget = 12_000
    ctx = Recording(
        memory=memory,
        session="agent",
        user_id="ana",
        budget=budget,
        compaction=compaction,
        background_commit=False,
    )
    wrapped = wrap(client, context=ctx)
    screen = b64(png(*SCREEN))
    history: list[dict[str, Any]] = [{"role": "user", "content": "Watch the screen for me."}]
    for _ in range(30):
        reply = wrapped.messages.create(
            model="claude-sonnet-4-6", max_tokens=512, tools=TOOLS, messages=history
        )
        content = [b.model_dump(exclude_none=True) for b in reply.content]
        history.append({"role": "assistant", "content": content})
        image = {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": screen},
        }
        result = {"type": "tool_result", "tool_use_id": content[-1]["id"], "content": [image]}
        history.append({"role": "user", "content": [result]})
    requests = [r.json() for r in fake.messages_requests()]
    images = [json.dumps(r).count('"type": "image"') for r in requests]
    assert max(images) >= 3  # screenshots do go out
    for n, (body, window) in enumerate(zip(requests, ctx.windows, strict=True)):
        sent = sent_tokens(body, image=SCREEN_TOKENS)
        assert sent <= window.total_tokens <= window.budget, (n, sent, window.total_tokens)
    assert ctx.session is not None and ctx.session.state().compactions > 0
    # the stored count says which part of it is an estimate (a raw read of the store)
    raw = memory.store.turns(ctx.session.scope)
    tool_turn = next(t for t in raw if t.message.role == "tool")
    assert tool_turn.message.metadata["contextos_tokens"]["estimated"] == SCREEN_TOKENS
    assert tool_turn.tokens >= SCREEN_TOKENS
    assert all("contextos_tokens" not in t.message.metadata for t in ctx.session.turns())


def test_the_questions_own_pdf_is_counted(
    anthropic_client: Any, fake_anthropic: Any, memory: Memory
) -> None:
    ctx = Recording(
        memory=memory, session="docs", user_id="ana", budget=20_000, background_commit=False
    )
    wrapped = wrap(anthropic_client, context=ctx)
    report = b64(pdf(2))
    history: list[dict[str, Any]] = []
    for i in range(6):
        document = {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": report},
        }
        history.append(
            {
                "role": "user",
                "content": [document, {"type": "text", "text": f"Question {i}: summarise it."}],
            }
        )
        reply = wrapped.messages.create(model="claude-sonnet-4-6", max_tokens=256, messages=history)
        history.append(
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in reply.content],
            }
        )
    for body, window in zip(
        (r.json() for r in fake_anthropic.messages_requests()), ctx.windows, strict=True
    ):
        assert json.dumps(body).count('"type": "document"') == 1  # the question's own
        sent = sent_tokens(body, image=0)
        assert sent >= 2 * mt.PDF_PAGE_TOKENS
        assert sent <= window.total_tokens <= window.budget
        question = next(b for b in window.blocks if b.kind == "question")
        assert question.tokens >= 2 * mt.PDF_PAGE_TOKENS


@pytest.mark.parametrize("crafted", ["flood", "bombs"])
def test_a_crafted_pdf_in_a_question_does_not_hang_the_call(
    anthropic_client: Any, fake_anthropic: Any, memory: Memory, crafted: str
) -> None:
    if crafted == "flood":
        data = objstm_flood()
    else:
        bomb = zlib.compress(b"/Type /Page " * 700_000, 9)
        data = b"%PDF-1.7\n" + (b"/Type /ObjStm stream\n" + bomb + b"endstream\n") * 60
    ctx = Recording(
        memory=memory, session="up", user_id="ana", budget=900_000, background_commit=False
    )
    wrapped = wrap(anthropic_client, context=ctx)
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(data)},
    }
    ask = [document, {"type": "text", "text": "Summarise this."}]
    start = time.perf_counter()
    wrapped.messages.create(
        model="claude-sonnet-4-6", max_tokens=256, messages=[{"role": "user", "content": ask}]
    )
    assert time.perf_counter() - start < 3 * FAST  # 15 s for the flood before its bound
    (body,) = (r.json() for r in fake_anthropic.messages_requests())
    assert body["messages"][-1]["content"][0]["source"]["data"] == b64(data)  # sent as given
    question = next(b for b in ctx.windows[-1].blocks if b.kind == "question")
    assert by_size(data) <= question.tokens <= by_size(data) + 50


openai = pytest.importorskip("openai")


@pytest.mark.parametrize(("detail", "cost"), [("high", 765), ("low", 85), (None, 765)])
def test_an_openai_questions_own_image_is_counted(
    openai_client: Any, fake_openai: Any, memory: Memory, detail: str | None, cost: int
) -> None:
    ctx = Recording(
        memory=memory, session="look", user_id="ana", budget=8_000, background_commit=False
    )
    wrapped = wrap(openai_client, context=ctx)
    image: dict[str, Any] = {"url": "data:image/png;base64," + b64(png(1024, 1024))}
    if detail is not None:
        image["detail"] = detail
    parts = [{"type": "image_url", "image_url": image}, {"type": "text", "text": "What is on it?"}]
    wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": parts}])
    body = fake_openai.completions_requests()[-1].json()
    assert json.dumps(body).count('"image_url"') == 2  # the part and its field
    window = ctx.windows[-1]
    question = next(b for b in window.blocks if b.kind == "question")
    assert question.tokens >= cost + TOK.count("What is on it?")
    assert sent_tokens(body, image=cost) <= window.total_tokens


def test_the_exact_counter_counts_what_is_sent(anthropic_client: Any, fake_anthropic: Any) -> None:
    # messages.count_tokens sees the question's own image (not the "[image]" the log
    # holds) and no thinking blocks (a window counts those apart, for an open loop)
    from contextos.providers import AnthropicTokenCounter

    counter = AnthropicTokenCounter(anthropic_client, model="claude-sonnet-4-6")
    thought = {"type": "thinking", "thinking": "hmm", "signature": "s"}
    said = Message("assistant", "It is a screen.", metadata={mt.THINKING_KEY: [thought]})
    own = [_image_block(png(64, 64)), {"type": "text", "text": "And this one?"}]
    wire = ("anthropic", {"role": "user", "content": own})
    question = Message("user", "And this one?", metadata={mt.WIRE_KEY: wire})
    assert counter.media_exact
    counter.count_messages([Message("user", "Look."), said, question])
    body = fake_anthropic.requests_to("/v1/messages/count_tokens")[-1].json()
    assert [b["type"] for b in body["messages"][-1]["content"]] == ["image", "text"]
    assert "thinking" not in json.dumps(body)
