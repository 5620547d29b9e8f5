"""What the parts of a message that are not its text cost: images, documents, thinking.

A logged turn is text, but what goes to the provider is more: a tool result's
screenshots (Anthropic ``tool_result`` blocks are sent back verbatim), the
question's own images and PDFs (sent as the caller gave them), and the signed
thinking blocks of an open tool loop. A window that counted only the text sent
requests many times its budget, and compaction, which reads the same counts, never
ran. This module prices those parts offline, by the providers' published rules;
every number is an estimate (only ``messages.count_tokens`` is exact), and a count
that holds one says so where it is stored (:data:`ESTIMATED_KEY` of the turn's
stamp, :mod:`contextos.engine.session`).

Anthropic images (https://platform.claude.com/docs/en/build-with-claude/vision):
about ``width * height / 750`` tokens, after the API shrinks an image larger than
the model's native resolution (aspect ratio kept). Models before Opus 4.7 shrink to
a long edge of 1568 px and about 1.15 megapixels (~1,600 tokens); Opus 4.7 and later
to 2576 px and about 3.75 megapixels. The estimate does not know the model, so it
scales as the larger limit does (:data:`ANTHROPIC_MAX_EDGE`,
:data:`ANTHROPIC_MAX_PIXELS`: at most :data:`ANTHROPIC_IMAGE_MAX_TOKENS`): for an
image above 1.15 megapixels sent to an older model it errs long, never short. The
size is read from the first bytes of a base64 image (PNG, JPEG, GIF, WebP); an image
whose size cannot be read (a URL or Files API source, an unknown format) costs
:data:`ANTHROPIC_UNKNOWN_IMAGE_TOKENS`, the most an image can cost.

PDFs (https://platform.claude.com/docs/en/build-with-claude/pdf-support): every
page is sent as text and as an image, "1,500-3,000 tokens per page" by Anthropic's
own range; the estimate takes the top, :data:`PDF_PAGE_TOKENS` a page. Pages are
counted in the file's bytes (its ``/Type /Page`` objects, inside compressed object
streams too), in one bounded pass (:func:`pdf_pages`); a PDF whose pages cannot be
counted, or whose count passes a bound (a crafted file, a zip bomb), is priced by its
size (:data:`PDF_BYTES_PER_PAGE`), and one not sent as bytes (a URL, a file id) as
:data:`UNKNOWN_PDF_PAGES` pages. No PDF costs more than :data:`PDF_MAX_PAGES` pages,
the most a request takes. A plain-text document costs its text.

OpenAI images (https://platform.openai.com/docs/guides/images-vision, the GPT-4o
family's tile rule): ``detail: low`` costs 85 tokens; otherwise the image is fit in
2048 x 2048, its short side brought down to 768, and it costs 85 + 170 per 512 px
tile (``auto`` is priced as ``high``). An image whose size is unknown costs the
most that rule gives, :data:`OPENAI_UNKNOWN_IMAGE_TOKENS`. Models billed by 32 px
patches (gpt-4.1-mini, gpt-5-mini...) are priced by the same rule. A ``file`` part
(a PDF) is priced like an Anthropic PDF; audio parts are not priced.

Thinking (https://platform.claude.com/docs/en/build-with-claude/context-windows):
the API needs a turn's thinking blocks back only inside the tool loop they belong
to, and drops earlier ones from the context. contextos sends them only there
(:func:`open_loop_start`) and counts what it sends (:func:`thinking_tokens`).

Server-side compaction (https://platform.claude.com/docs/en/build-with-claude/compaction):
the API drops every block before the last ``compaction`` block of a request, and takes
a block whose ``content`` is null as a no-op. contextos sends back only that last block
with a summary (:func:`sent_compaction`), and a turn's count holds the block it would
send (:func:`compaction_tokens`, part of :func:`media_tokens`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from contextos.types import Message

#: Message metadata key of a logged Anthropic tool-result turn (its blocks as sent);
#: the same string as :data:`contextos.engine.window.TOOL_RESULTS_KEY`.
TOOL_RESULTS_KEY = "anthropic_tool_results"
#: Message metadata key of the caller's wire message; the same string as
#: :data:`contextos.providers.base.WIRE_KEY`.
WIRE_KEY = "wire"
#: Message metadata key holding the ``thinking`` / ``redacted_thinking`` blocks of an
#: assistant turn, verbatim (:data:`contextos.providers.anthropic.THINKING_KEY`).
THINKING_KEY = "anthropic_thinking"
#: Message metadata key holding the ``compaction`` blocks of an assistant turn, verbatim
#: (:data:`contextos.providers.anthropic.COMPACTION_KEY`).
COMPACTION_KEY = "anthropic_compaction"
#: The key, in a turn's count stamp, of the tokens of its count that are estimated here.
ESTIMATED_KEY = "estimated"

ANTHROPIC_PIXELS_PER_TOKEN = 750
#: The largest native image resolution Anthropic documents (Opus 4.7 and later).
ANTHROPIC_MAX_EDGE = 2576
ANTHROPIC_MAX_PIXELS = 3_750_000
ANTHROPIC_IMAGE_MAX_TOKENS = math.ceil(ANTHROPIC_MAX_PIXELS / ANTHROPIC_PIXELS_PER_TOKEN)
ANTHROPIC_UNKNOWN_IMAGE_TOKENS = ANTHROPIC_IMAGE_MAX_TOKENS
#: The top of Anthropic's "1,500-3,000 tokens per page".
PDF_PAGE_TOKENS = 3000
#: A PDF whose pages cannot be counted: a page per this many bytes, at least one.
PDF_BYTES_PER_PAGE = 50_000
#: A PDF not sent as bytes (a URL, a Files API id): priced as this many pages.
UNKNOWN_PDF_PAGES = 10

OPENAI_BASE_TOKENS = 85
OPENAI_TILE_TOKENS = 170
#: The most the tile rule gives: 2048 x 768 after scaling, 4 x 2 tiles.
OPENAI_UNKNOWN_IMAGE_TOKENS = OPENAI_BASE_TOKENS + 8 * OPENAI_TILE_TOKENS

#: Base64 characters decoded to find an image's size (4 KiB of bytes and more: a JPEG
#: with a large EXIF block is decoded whole when its frame header lies further on).
_HEAD_CHARS = 8192

Count = Callable[[str], int]


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def results_digest(text: str) -> str:
    """The digest a tool-result turn's kept blocks name the text they were logged with
    (``of`` of :data:`TOOL_RESULTS_KEY`): they are sent only while it matches."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# -- image sizes -----------------------------------------------------------------------


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG, GIF or WebP from its first bytes, else None."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return _positive(*struct.unpack(">II", data[16:24]))
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _positive(*struct.unpack("<HH", data[6:10]))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
    except struct.error:  # cut short
        return None
    return None


def _positive(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if width > 0 and height > 0 else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return _positive(width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and data[20:21] == b"\x2f" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return _positive((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:  # cut short: unknown, not 1 x 1
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _positive(width, height)
    return None


#: The JPEG start-of-frame markers (not DHT C4, JPG C8, DAC CC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


#: A marker's fill bytes (any number of 0xFF before it), skipped in one step.
_FILL = re.compile(rb"\xff+")
#: Segments read before a JPEG's frame header, at most (a camera's has a dozen).
_JPEG_MAX_SEGMENTS = 1024


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        fill = _FILL.match(data, i)
        if fill is None:
            return None
        i = fill.end() - 1  # the last 0xFF: the marker follows
        if i + 4 > len(data):
            return None
        marker = data[i + 1]
        if marker in (0x01, *range(0xD0, 0xDA)):  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return _positive(width, height)
        i += 2 + length
    return None


def _b64_bytes(data: str, chars: int | None = None) -> bytes | None:
    """The bytes of base64 ``data`` (its first ``chars`` characters, cut to a whole
    quantum), or None when it is not base64."""
    text = data if chars is None else data[: chars - chars % 4]
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return None


def base64_image_size(data: str) -> tuple[int, int] | None:
    """(width, height) of a base64 image, decoding only its head when that tells."""
    head = _b64_bytes(data, _HEAD_CHARS)
    if head is None:
        return None
    size = image_size(head)
    if size is None and head[:2] == b"\xff\xd8" and len(data) > _HEAD_CHARS:
        whole = _b64_bytes(data)  # a frame header behind a large EXIF/ICC block
        size = image_size(whole) if whole is not None else None
    return size


def anthropic_image_tokens(width: int, height: int) -> int:
    """Tokens of a ``width`` x ``height`` image on Anthropic, scaled as the API scales it."""
    scale = min(
        1.0,
        ANTHROPIC_MAX_EDGE / max(width, height),
        math.sqrt(ANTHROPIC_MAX_PIXELS / (width * height)),
    )
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    return min(ANTHROPIC_IMAGE_MAX_TOKENS, math.ceil(w * h / ANTHROPIC_PIXELS_PER_TOKEN))


def openai_image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """Tokens of a ``width`` x ``height`` image on OpenAI (GPT-4o tile rule)."""
    if detail == "low":
        return OPENAI_BASE_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        fit = 2048 / max(w, h)
        w, h = w * fit, h * fit
    if min(w, h) > 768:
        fit = 768 / min(w, h)
        w, h = w * fit, h * fit
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return OPENAI_BASE_TOKENS + OPENAI_TILE_TOKENS * tiles


# -- PDF pages -------------------------------------------------------------------------

#: Whitespace between ``/Type`` and its name, at most (a crafted file's long runs
#: would make every ``/Type`` a long match to try).
_PAGE = re.compile(rb"/Type\s{0,16}/Page(?![A-Za-z])")
#: A page object (group 1 unset) or an object stream's dictionary (group 1 set).
_MARK = re.compile(rb"/Type\s{0,16}/(?:Page(?![A-Za-z])|(ObjStm))")
_STREAM = re.compile(rb"stream\r?\n")
_ENDSTREAM = b"endstream"
#: The most pages one request takes ("600, 100 for models with a 200k-token context
#: window"): no PDF costs more than this many pages.
PDF_MAX_PAGES = 600
#: ``/Type`` keys looked at while pages are counted (in the file and in what is
#: inflated), at most: every one is a match to try.
PDF_MAX_TYPES = 100_000
#: Compressed object streams inflated while pages are counted, at most.
PDF_MAX_STREAMS = 1000
#: Bytes inflated while one PDF's pages are counted, all its object streams together.
PDF_MAX_INFLATE = 16 << 20


def _count_pages(text: bytes, limit: int) -> int:
    """The ``/Type /Page`` objects in ``text``, counted up to ``limit`` + 1."""
    found = 0
    for _ in _PAGE.finditer(text):
        found += 1
        if found > limit:
            break
    return found


def pdf_pages(data: bytes) -> int | None:
    """The pages of a PDF: its ``/Type /Page`` objects, those inside compressed object
    streams (PDF 1.5) included; None when it has none to count, or when counting them
    would pass a bound: more than :data:`PDF_MAX_PAGES` pages, :data:`PDF_MAX_TYPES`
    ``/Type`` keys, :data:`PDF_MAX_STREAMS` object streams, or :data:`PDF_MAX_INFLATE`
    bytes inflated from them all. The file is read once, front to back (an object
    stream is one only up to its ``endstream``, and what lies in it is not read again),
    so any file is counted in a time linear in its size, the inflate bound included."""
    if not data.startswith(b"%PDF"):
        return None
    types = PDF_MAX_TYPES - data.count(b"/Type")
    if types < 0:
        return None
    view = memoryview(data)
    budget = PDF_MAX_INFLATE
    pages = streams = at = 0
    inflating = True  # False once no object stream can follow (no stream, no end)
    while pages <= PDF_MAX_PAGES:
        found = _MARK.search(data, at)
        if found is None:
            break
        at = found.end()
        if found.group(1) is None:
            pages += 1
            continue
        start = _STREAM.search(data, at) if inflating else None
        end = data.find(_ENDSTREAM, start.end()) if start is not None else -1
        if start is None or end < 0:
            inflating = False
            continue
        at = end + len(_ENDSTREAM)
        streams += 1
        if streams > PDF_MAX_STREAMS or budget <= 0:
            return None
        inflate = zlib.decompressobj()
        try:
            body = inflate.decompress(view[start.end() : end], budget)
        except zlib.error:
            continue
        budget -= len(body)
        types -= body.count(b"/Type")
        if (budget <= 0 and not inflate.eof) or types < 0:
            return None  # a bound spent with more to read
        pages += _count_pages(body, PDF_MAX_PAGES - pages)
    return pages if 0 < pages <= PDF_MAX_PAGES else None


def pdf_tokens(data: bytes | None) -> int:
    """Tokens of a PDF's bytes (None: not sent as bytes), :data:`PDF_PAGE_TOKENS` a page.

    A PDF whose pages :func:`pdf_pages` does not count (none found, or a bound passed:
    a crafted file, a zip bomb) is priced by its size, a page per
    :data:`PDF_BYTES_PER_PAGE`. The price is bounded: never more than
    :data:`PDF_MAX_PAGES` pages (the most a request takes), and never more than the
    file's size allows: a counted page is a page object in its bytes or in the at most
    :data:`PDF_MAX_INFLATE` bytes inflated from them, an uncounted one a page per
    :data:`PDF_BYTES_PER_PAGE` of its bytes. The time is bounded too: linear in the
    size, tens of milliseconds for a file at the APIs' request limit (32 MB).
    """
    if data is None:
        return UNKNOWN_PDF_PAGES * PDF_PAGE_TOKENS
    pages = pdf_pages(data) or max(1, math.ceil(len(data) / PDF_BYTES_PER_PAGE))
    return min(pages, PDF_MAX_PAGES) * PDF_PAGE_TOKENS


# -- content blocks --------------------------------------------------------------------


def _anthropic_image(block: Any) -> int:
    source = _get(block, "source")
    data = _get(source, "data")
    if _get(source, "type") == "base64" and isinstance(data, str):
        size = base64_image_size(data)
        if size is not None:
            return anthropic_image_tokens(*size)
    return ANTHROPIC_UNKNOWN_IMAGE_TOKENS


def _anthropic_document(block: Any, count: Count | None) -> tuple[int, list[Any]]:
    """Tokens of a document block, and the blocks of a ``content`` source (to walk)."""
    source = _get(block, "source")
    kind = _get(source, "type")
    data = _get(source, "data")
    extra = sum(count(t) for t in (_get(block, "title"), _get(block, "context")) if t and count)
    if kind == "text" and isinstance(data, str):
        return extra + (count(data) if count else math.ceil(len(data) / 4)), []
    if kind == "content":
        return extra, _listed(_get(source, "content"))
    if kind == "base64" and isinstance(data, str):
        return extra + pdf_tokens(_b64_bytes(data)), []
    return extra + pdf_tokens(None), []


def _listed(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    return list(value) if isinstance(value, (list, tuple)) else []


#: How deep blocks nest in what is walked: a request the API takes nests a few levels
#: (a search result or a document in a tool result); what lies deeper is not priced.
MAX_NESTING = 8


def anthropic_blocks_tokens(
    blocks: Iterable[Any], count: Count | None, *, text: bool = False
) -> int:
    """Estimated tokens of the images and documents among Anthropic content ``blocks``,
    those nested in ``tool_result`` and ``search_result`` blocks and in documents'
    ``content`` sources included. ``text``: also the text blocks (a document's own are
    counted always: their text is not the turn's). Blocks nested
    more than :data:`MAX_NESTING` levels deep (content no API request holds, a
    reference cycle) are not walked: the walk is iterative and ends."""
    total = 0
    todo: list[tuple[Any, bool, int]] = [(block, text, 0) for block in blocks]
    while todo:
        block, as_text, depth = todo.pop()
        kind = _get(block, "type")
        inner: list[Any] = []
        if kind == "image":
            total += _anthropic_image(block)
        elif kind == "document":
            tokens, inner = _anthropic_document(block, count)
            total += tokens
            as_text = True
        elif kind in ("tool_result", "search_result"):
            inner = _listed(_get(block, "content"))
        elif kind == "text" and as_text and count is not None:
            total += count(str(_get(block, "text", "")))
        if inner and depth < MAX_NESTING:
            todo.extend((child, as_text, depth + 1) for child in inner)
    return total


#: Anthropic assistant blocks that are the turn's text, tool calls, thinking or compaction:
#: counted as such (compaction by :func:`compaction_tokens`, from the turn's
#: :data:`COMPACTION_KEY`), not by :func:`anthropic_server_blocks_tokens`.
_COUNTED_ELSEWHERE = frozenset({"text", "tool_use", "thinking", "redacted_thinking", "compaction"})


def anthropic_server_blocks_tokens(blocks: Iterable[Any]) -> int:
    """Estimated tokens of the server tools' blocks of an Anthropic assistant turn
    (``server_tool_use``, ``web_search_tool_result`` with its ``encrypted_content``...):
    their JSON at 4 characters a token. What they hold is the API's to count (search
    results are billed as input); the estimate keeps a budget from ignoring them."""
    total = 0
    for block in blocks:
        if _get(block, "type") in _COUNTED_ELSEWHERE:
            continue
        as_json = block if isinstance(block, Mapping) else _dumped(block)
        total += math.ceil(len(json.dumps(as_json, default=str)) / 4)
    return total


def _dumped(block: Any) -> Any:
    dump = getattr(block, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else str(block)


def _data_url(url: Any) -> bytes | None:
    """The bytes of a base64 ``data:`` URL, else None."""
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    head, _, data = url.partition(",")
    return _b64_bytes(data) if head.endswith(";base64") else None


def openai_parts_tokens(parts: Iterable[Any]) -> int:
    """Estimated tokens of the ``image_url`` and ``file`` parts of an OpenAI content list."""
    total = 0
    for part in parts:
        kind = _get(part, "type")
        if kind == "image_url":
            image = _get(part, "image_url")
            url = _get(image, "url", image if isinstance(image, str) else None)
            detail = str(_get(image, "detail", "auto") or "auto")
            size = None
            if isinstance(url, str) and url.startswith("data:"):
                size = base64_image_size(url.partition(",")[2])
            if detail == "low":
                total += OPENAI_BASE_TOKENS
            elif size is not None:
                total += openai_image_tokens(*size, detail=detail)
            else:
                total += OPENAI_UNKNOWN_IMAGE_TOKENS
        elif kind == "file":
            total += pdf_tokens(_data_url(_get(_get(part, "file"), "file_data")))
    return total


def media_tokens(message: Message, count: Count | None = None) -> int:
    """Estimated tokens of what is sent for ``message`` besides its text and tool calls.

    - a tool-result turn: the images and documents of its kept Anthropic blocks
      (:data:`TOOL_RESULTS_KEY`), while they are what is sent (a cleared result is
      sent as its stub, without them);
    - a user message carrying its wire form (:data:`WIRE_KEY`: the question, whose own
      content is sent as given): its images, documents and files. A logged turn holds
      no wire form: history user turns are sent as text.
    - an Anthropic assistant message carrying its wire form (a prefill, sent as given
      when it holds server tools' blocks: a ``pause_turn`` sent back): those blocks.

    - an Anthropic assistant turn's ``compaction`` block that goes back with it
      (:func:`compaction_tokens`), whether the turn was logged or is the caller's.

    ``count`` counts the text of a plain-text document and a compaction summary (else 4
    characters a token). Thinking blocks are not media: :func:`thinking_tokens`.
    """
    meta = message.metadata
    if message.role == "tool":
        kept = meta.get(TOOL_RESULTS_KEY)
        if not isinstance(kept, Mapping) or kept.get("of") != results_digest(message.content):
            return 0
        return anthropic_blocks_tokens(_listed(kept.get("blocks")), count)
    summary = compaction_tokens(message, count) if message.role == "assistant" else 0
    wire = meta.get(WIRE_KEY)
    if not isinstance(wire, (tuple, list)) or len(wire) != 2:
        return summary
    content = _get(wire[1], "content")
    if not isinstance(content, (list, tuple)):
        return summary
    if message.role == "assistant":
        server = anthropic_server_blocks_tokens(content) if wire[0] == "anthropic" else 0
        return summary + server
    if message.role != "user":
        return 0
    if wire[0] == "anthropic":
        return anthropic_blocks_tokens(content, count)
    if wire[0] == "openai":
        return openai_parts_tokens(content)
    return 0


# -- thinking ------------------------------------------------------------------------


def thinking_tokens(message: Message, count: Count) -> int:
    """Tokens of an assistant turn's thinking blocks (:data:`THINKING_KEY`) as sent: a
    ``thinking`` block's text counted by ``count``; a ``redacted_thinking`` block's
    encrypted ``data`` at 4 characters a token (an estimate). 0 without any."""
    total = 0
    for block in _listed(message.metadata.get(THINKING_KEY)):
        if _get(block, "type") == "redacted_thinking":
            total += math.ceil(len(str(_get(block, "data", "") or "")) / 4)
        else:
            total += count(str(_get(block, "thinking", "") or ""))
    return total


# -- server-side compaction ---------------------------------------------------------


def sent_compaction(messages: Sequence[Message | None]) -> tuple[int, Any] | None:
    """The one ``compaction`` block a request's ``messages`` send back, and the index of
    the assistant turn it goes in: the last block with a summary (``content`` not null)
    of the last turn holding one (:data:`COMPACTION_KEY`); None when none has one.

    Why only that one: the API drops every block before the last compaction block of a
    request, the earlier compaction blocks with them, and takes one with a null
    ``content`` (a compaction that failed) as a no-op. Every block the session had been
    given went back on every call, uncounted: a request carried 9,171 tokens against a
    window that counted 1,293, growing with each compaction (a review)."""
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if message is None or message.role != "assistant":
            continue
        blocks = _listed(message.metadata.get(COMPACTION_KEY))
        summaries = [b for b in blocks if _get(b, "content") is not None]
        if summaries:
            return i, summaries[-1]
    return None


def compaction_tokens(message: Message, count: Count | None = None) -> int:
    """Tokens of the ``compaction`` block ``message`` sends back when it is the request's
    last (:func:`sent_compaction`), 0 without one: its summary counted by ``count`` (else
    4 characters a token), its ``encrypted_content`` and ``tool_changes`` at 4
    characters a token (an estimate). A superseded block is not sent, yet its turn's
    count keeps it: such a turn lies before the request's last block, whose summary
    stands for it, so the count errs long only where the API reads nothing."""
    sent = sent_compaction([message])
    if sent is None:
        return 0
    block = sent[1]
    summary = str(_get(block, "content", "") or "")
    total = count(summary) if count is not None else math.ceil(len(summary) / 4)
    total += math.ceil(len(str(_get(block, "encrypted_content", "") or "")) / 4)
    changes = _get(block, "tool_changes")
    if changes:
        total += math.ceil(len(json.dumps(changes, default=str)) / 4)
    return total


def open_loop_start(roles: Sequence[str], *, question: bool) -> int:
    """Where the open tool loop starts among a request's turns (by their ``roles``): the
    turns after the last user turn that is not tool results (role ``user``); the
    length of ``roles`` (no loop) when the request ends with a question, which closes
    it. Only the assistant turns from here on are sent with their thinking blocks."""
    if question:
        return len(roles)
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "user":
            return i + 1
    return 0
