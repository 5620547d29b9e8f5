"""``contextos count FILE --model M``: tokens, share of the window, input cost."""

from __future__ import annotations

import json
from typing import cast

import click

from contextos.llm.models import get_model
from contextos.llm.tokens import default_tokenizer

from ..types import Message
from .common import (
    CliState,
    console,
    json_option,
    model_param,
    pass_state,
    print_json,
    read_text_arg,
)


def _messages_from_json(text: str) -> list[Message] | None:
    """A JSON list of {role, content} messages, or None when the file is not one.

    ``content`` is text, or a list of content parts (``[{"type": "text", "text":
    ...}]``, as the OpenAI and Anthropic APIs take) whose text parts are counted, one
    per line as the providers read them; parts of other kinds (images) hold no text.

    Raises:
        click.BadParameter: a message whose content is neither (null, a number):
            counted as ``str(value)`` it was "None" or a Python list's repr.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser: text
        return None
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        data = data["messages"]
    if not isinstance(data, list) or not all(isinstance(m, dict) and "content" in m for m in data):
        return None
    return [
        Message(role=m.get("role", "user"), content=_content_text(m["content"], n))
        for n, m in enumerate(data, 1)
    ]


def _content_text(content: object, n: int) -> str:
    """The text of message ``n``'s content: a string, or its text parts one per line."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "\n".join(cast(list[str], texts))
    shown = "null" if content is None else type(content).__name__
    raise click.BadParameter(
        f"message {n} has {shown} content: a message's content must be text or a list "
        'of parts such as {"type": "text", "text": "..."}',
        param_hint="FILE",
    )


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
        """Count the tokens of FILE (text, or a JSON list of chat messages; - for stdin)."""
        info = get_model(model)
        text = read_text_arg(file)  # UTF-8 text only: a clear error for Latin-1 or binary
        tok = default_tokenizer()
        messages = _messages_from_json(text)
        tokens = tok.count_messages(messages) if messages is not None else tok.count(text)
        result = {
            "file": file,
            "model": info.name,
            "kind": "messages" if messages is not None else "text",
            "tokens": tokens,
            "tokenizer": tok.name,
            "estimate": not info.exact_with(tok.name),
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
