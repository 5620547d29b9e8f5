"""``contextos count FILE --model M``: tokens, share of the window, input cost."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import click

from contextos.engine.window import text_item, tool_item
from contextos.llm.media_tokens import media_tokens
from contextos.llm.models import get_model
from contextos.llm.tokens import Tokenizer, default_tokenizer
from contextos.providers.base import ChatRequest

from .common import (
    CliState,
    console,
    json_option,
    model_param,
    pass_state,
    print_json,
    read_text_arg,
)


def _request_from_json(text: str) -> tuple[ChatRequest, Mapping[str, Any]] | None:
    """The chat request a JSON file holds, as the wrappers read it, and the body it came
    from; None when the file is not one (it is counted as text).

    The file is a list of messages or a request body (``{"messages": [...], "system":
    ..., "tools": [...]}``), in the Anthropic or the OpenAI shape (:func:`_wire_format`),
    read by that provider's own parser, so tool calls, tool results, images and
    documents are what the wrapper's window holds. Why: read as ``Message(role,
    content)`` with only the text parts kept, they counted as 0, and the CLI said 27
    tokens of a request of about 5,800 (a review).

    Raises:
        click.BadParameter: a message whose content is not text or a list of parts
            (null where the message makes no tool calls, a number), or a file the
            provider's parser refuses (the legacy ``functions`` API).
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser: text
        return None
    body = data if isinstance(data, dict) else {"messages": data}
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(map(_is_message, messages)):
        return None
    for n, message in enumerate(messages, 1):
        _check_content(message, n)
    # The adapters load here, once a file is a message list (about 0.25 s a text count
    # does not pay).
    from contextos.providers import anthropic, openai

    wire = _wire_format(body)
    parse = anthropic.parse if wire == "anthropic" else openai.parse
    try:
        return parse(body), body
    except (ValueError, TypeError, AttributeError) as exc:
        raise click.BadParameter(
            f"cannot read it as {_API_NAMES[wire]} messages, as a wrapped client would: {exc}",
            param_hint="FILE",
        ) from None


#: What an OpenAI assistant message carries in place of content (``"content": null``, as
#: the SDK's ``message.model_dump()`` gives it), which the parser reads instead (a legacy
#: ``function_call`` it refuses, by name).
_INSTEAD_OF_CONTENT = ("tool_calls", "refusal", "audio", "function_call")


def _is_message(value: object) -> bool:
    """Whether ``value`` is a chat message: a dict with content, or with what stands
    for it (:data:`_INSTEAD_OF_CONTENT`)."""
    return isinstance(value, dict) and (
        "content" in value or any(value.get(k) for k in _INSTEAD_OF_CONTENT)
    )


def _check_content(message: Mapping[str, Any], n: int) -> None:
    """Refuse message ``n`` when its content is neither text nor a list of parts whose
    text parts hold text: counted, it was "None" or a Python list's repr. Null content is
    read where the message carries what stands for it (:data:`_INSTEAD_OF_CONTENT`)."""
    content = message.get("content")
    if isinstance(content, str):
        return
    if content is None and any(message.get(k) for k in _INSTEAD_OF_CONTENT):
        return
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        if all(isinstance(t, str) for t in texts):
            return
    shown = "null" if content is None else type(content).__name__
    raise click.BadParameter(
        f"message {n} has {shown} content: a message's content must be text or a list "
        'of parts such as {"type": "text", "text": "..."}',
        param_hint="FILE",
    )


#: Content block types only the Anthropic Messages API has (OpenAI's are ``text``,
#: ``image_url``, ``input_audio``, ``file`` and ``refusal``).
_ANTHROPIC_BLOCKS = frozenset(
    {
        "image",
        "document",
        "tool_use",
        "tool_result",
        "search_result",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "compaction",
    }
)

#: How an error names the shape a file was read in.
_API_NAMES = {"anthropic": "Anthropic Messages API", "openai": "OpenAI Chat Completions"}


def _wire_format(body: Mapping[str, Any]) -> Literal["anthropic", "openai"]:
    """Which API's shape ``body`` is in: Anthropic's when it has a top-level ``system``,
    a tool with an ``input_schema`` or a block only Anthropic has; else OpenAI's (a
    list of text messages reads the same in both)."""
    if "system" in body:
        return "anthropic"
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "input_schema" in t for t in tools):
        return "anthropic"
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, list) and any(p.get("type") in _ANTHROPIC_BLOCKS for p in content):
            return "anthropic"
    return "openai"


def _request_tokens(
    request: ChatRequest, body: Mapping[str, Any], tok: Tokenizer
) -> tuple[int, bool]:
    """The tokens ``request`` costs as the wrapper's window counts it, and whether the
    count holds estimates (images, documents, tool schemas).

    The messages by ``count_messages`` (their images and documents included), each
    system part and tool schema as the window's blocks (:func:`text_item`,
    :func:`tool_item`), and tools that travel outside the window (server tools,
    ``strict`` ones) as the wrapper reserves room for them."""
    from contextos.providers.wrapper import json_tokens

    tokens = tok.count_messages(request.messages)
    tokens += sum(text_item("system", s, tok).tokens for s in request.system if s.strip())
    tokens += sum(tool_item(t, tok).tokens for t in request.tools)
    verbatim = body.get("tools") if not request.tools else None
    tokens += json_tokens(verbatim) if verbatim else 0
    media = any(media_tokens(m, tok.count) for m in request.messages)
    return tokens, media or bool(body.get("tools"))


def register(cli: click.Group, bench: click.Group) -> None:
    @cli.command()
    @click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
    @click.option(
        "--model",
        "-m",
        default="claude-sonnet-4-6",
        show_default=True,
        help="Model whose window and price to report against.",
        callback=model_param,
    )
    @json_option
    @pass_state
    def count(state: CliState, file: str, model: str) -> None:
        """Count the tokens of FILE (text, or a JSON list of chat messages or a request
        body, Anthropic's or OpenAI's; - for stdin)."""
        info = get_model(model)
        text = read_text_arg(file)  # UTF-8 text only: a clear error for Latin-1 or binary
        tok = default_tokenizer()
        read = _request_from_json(text)
        tokens, estimated = (
            _request_tokens(*read, tok) if read is not None else (tok.count(text), False)
        )
        result = {
            "file": file,
            "model": info.name,
            "kind": "messages" if read is not None else "text",
            "tokens": tokens,
            "tokenizer": tok.name,
            "estimate": estimated or not info.exact_with(tok.name),
            "context_window": info.context_window,
            "window_share": tokens / info.context_window,
            "input_cost_usd": info.input_cost(tokens),
        }
        if state.as_json:
            print_json(result)
            return
        est = f" (estimate: counted with {tok.name})" if result["estimate"] else ""
        console.print(
            f"{tokens:,} tokens{est} · {result['window_share']:.2%} of {info.name}'s "
            f"{info.context_window:,}-token window · input cost ${result['input_cost_usd']:.4f}"
        )
