"""``contextos.providers.wrap``: the facade, its seams, error mapping and the CLI.

Provider-specific wire behaviour is in test_providers_anthropic.py and
test_providers_openai.py; this module covers what both share.
"""

from __future__ import annotations

import email.utils
import json
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.cli.main import cli  # noqa: E402
from contextos.engine.context import Match, SessionContext, match_request, model_info  # noqa: E402
from contextos.engine.window import Segment, assemble, message_item, text_item  # noqa: E402
from contextos.errors import AuthError, ConfigError, ProviderError, RateLimited  # noqa: E402
from contextos.llm.tokens import CharEstimateTokenizer  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import CallRecord, ChatRequest, Prepared, wrap  # noqa: E402
from contextos.providers.chat import Chat  # noqa: E402
from contextos.providers.errors import mapped_errors, parse_retry_after  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage  # noqa: E402
from contextos.testing.fake_http import without_key  # noqa: E402
from contextos.types import Message, Scope, Usage  # noqa: E402
from sdk_support import fake_and_sdk  # noqa: E402

MODEL = "claude-haiku-4-5"


def _unmarked(value: Any) -> Any:
    """``value`` without ``cache_control`` markers, for prefix comparisons."""
    return without_key(value, "cache_control")


def _ask(c: Any, text: str) -> Any:
    return c.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}]
    )


# -- the facade ------------------------------------------------------------------


def test_everything_but_create_is_the_sdk_client(anthropic_client):
    wrapped = wrap(anthropic_client)
    assert wrapped.unwrapped is anthropic_client
    assert wrapped.models is anthropic_client.models
    assert wrapped.base_url == anthropic_client.base_url
    assert wrapped.messages.batches is anthropic_client.messages.batches
    assert wrapped.provider == "anthropic" and wrapped.context is None


def test_openai_client_gets_chat_completions(openai_client):
    wrapped = wrap(openai_client)
    assert wrapped.provider == "openai"
    assert wrapped.chat.completions.with_raw_response is not None
    assert wrapped.models is openai_client.models


@pytest.mark.parametrize("bad", [object(), "anthropic", None])
def test_wrapping_something_else_is_a_type_error(bad):
    with pytest.raises(TypeError, match="cannot wrap"):
        wrap(bad)


def test_async_clients_are_refused_clearly():
    c = anthropic.AsyncAnthropic(api_key="test", base_url="http://127.0.0.1:9")
    with pytest.raises(TypeError, match="synchronous"):
        wrap(c)


def test_context_and_memory_together_is_a_type_error(anthropic_client, memory):
    with pytest.raises(TypeError, match="either"):
        wrap(anthropic_client, memory=memory, context=SessionContext(memory=memory, user_id="ana"))


def test_session_without_a_store_is_a_value_error(anthropic_client):
    with pytest.raises(ValueError, match="store"):
        wrap(anthropic_client, session="s1")


def test_usage_log_totals_and_on_call(fake_anthropic, anthropic_client):
    seen: list[CallRecord] = []
    fake_anthropic.enqueue_reply("a", AnthropicUsage(10, 2, cache_read=100))
    fake_anthropic.enqueue_reply("b", AnthropicUsage(5, 3, cache_creation_1h=50))
    wrapped = wrap(anthropic_client, on_call=seen.append)
    _ask(wrapped, "x")
    _ask(wrapped, "y")
    assert [c.reply.content for c in seen if c.reply] == ["a", "b"]
    assert len(wrapped.calls) == 2
    assert wrapped.calls.total() == Usage(15, 5, 50, 100, 0, 50)


# -- the assembly seam -------------------------------------------------------------


class PinnedContext:
    """A ContextSource double: always the same window, records what it was told."""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []
        self.commits: list[CallRecord] = []
        self.tok = CharEstimateTokenizer()

    def prepare(self, request: ChatRequest, *, reserve_tokens: int) -> Prepared:
        self.requests.append(request)
        question = request.messages[-1]
        window = assemble(
            [
                Segment(
                    "system",
                    "system",
                    (text_item("s", "pinned system", self.tok, role="system"),),
                    cache_ttl="5m",
                ),
                Segment(
                    "question", "question", (message_item("q", question, self.tok),), required=True
                ),
            ],
            10_000,
        )
        return Prepared(window, model_info(request.model), question, ())

    def commit(self, prepared: Prepared, call: CallRecord) -> None:
        self.commits.append(call)


def test_an_injected_context_source_builds_the_request(fake_anthropic, anthropic_client):
    ctx = PinnedContext()
    wrapped = wrap(anthropic_client, context=ctx)
    _ask(wrapped, "what now?")
    body = fake_anthropic.messages_requests()[0].json()
    assert body["system"] == [
        {
            "type": "text",
            "text": "pinned system",
            "cache_control": {"type": "ephemeral", "ttl": "5m"},
        }
    ]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "what now?"}]}
    ]
    assert ctx.requests[0].model == MODEL and ctx.requests[0].last_user_text() == "what now?"
    assert ctx.commits[0].reply is not None and ctx.commits[0].prefix_hash


def test_errors_reach_the_caller_and_nothing_is_committed(fake_anthropic, anthropic_client):
    ctx = PinnedContext()
    fake_anthropic.enqueue_error(429, "later", retry_after=3)
    with pytest.raises(RateLimited):
        _ask(wrap(anthropic_client, context=ctx), "hi")
    assert ctx.commits == []


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_401_becomes_auth_error(request, sdk):
    """Either SDK's authentication failure is our AuthError, the SDK's own as its cause."""
    module = {"anthropic": anthropic, "openai": openai}[sdk]
    fake = request.getfixturevalue(f"fake_{sdk}")
    hi = [{"role": "user", "content": "hi"}]
    client_class = module.Anthropic if sdk == "anthropic" else module.OpenAI
    with client_class(base_url=fake.base_url, api_key="invalid", max_retries=0) as c:
        wrapped = wrap(c)
        with pytest.raises(AuthError) as info:
            if sdk == "anthropic":
                wrapped.messages.create(model=MODEL, max_tokens=16, messages=hi)
            else:
                wrapped.chat.completions.create(model="gpt-4.1-mini", messages=hi)
    assert isinstance(info.value.__cause__, module.AuthenticationError)


def test_match_request_recognises_resent_history_retries_and_branches():
    a, b, c = Message("user", "a"), Message("assistant", "b"), Message("user", "c")
    d, x = Message("assistant", "d"), Message("user", "x")
    result = Message("tool", "r", tool_call_id="t1")
    assert match_request([c], [a, b]) == Match(0, 2)
    assert match_request([a, b, c], [a, b]) == Match(2, 2)
    assert match_request([a], [a]) == Match(1, 1)  # the same question again, unanswered
    assert match_request([a, b, c], []) == Match(0, 0)
    assert match_request([b, c], [a, b]) == Match(1, 2)
    assert match_request([result], [a, b, result]) == Match(1, 3)  # a tool result retried
    assert match_request([a, b, result], [a, b, result]) == Match(3, 3)
    assert match_request([a, b, x], [a, b, c, d]) == Match(2, 2)  # an edit: a branch at 2
    assert match_request([a, b, x], [a, b, c]) == Match(2, 2)  # a failed question dropped
    assert match_request([a, b, c], [a, b, c, d]) == Match(2, 2)  # a regenerate
    assert match_request([a], [a, b]) == Match(0, 2)  # one message is a new turn
    assert match_request([a, b], [a, b]) == Match(1, 1)  # the reply said again


def test_a_retried_question_is_logged_once(fake_anthropic, memory):
    c = anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="test", max_retries=0)
    wrapped = wrap(c, memory=memory, session="s1", user_id="ana")
    fake_anthropic.enqueue_error(500, "oops")
    with pytest.raises(ProviderError):
        _ask(wrapped, "are you there?")
    _ask(wrapped, "are you there?")
    wrapped.flush()
    turns = wrapped.context.session.turns()
    assert [t.message.content for t in turns][0] == "are you there?"
    assert [t.message.role for t in turns] == ["user", "assistant"]
    sent = fake_anthropic.messages_requests()[-1].json()["messages"]
    assert sum(b["text"] == "are you there?" for m in sent for b in m["content"]) == 1
    c.close()


# -- errors ------------------------------------------------------------------------


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = "Wed, 25 Nov 2026 12:00:10 GMT"
    at = float(email.utils.mktime_tz(email.utils.parsedate_tz(date)))  # type: ignore[arg-type]
    assert parse_retry_after({"retry-after": date}, now=at - 10) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_mapped_errors_leaves_our_own_exceptions_alone():
    with pytest.raises(KeyError), mapped_errors("anthropic"):
        raise KeyError("not an SDK error")


# -- chat --------------------------------------------------------------------------


def test_offline_chat_shows_the_window_and_answers_from_memory(memory):
    memory.add("My cat is called Miso", user_id="me", session_id="earlier")
    chat = Chat(memory, provider="offline", session_id="c1")
    turn = chat.send("what is my cat called?")
    assert "Miso" in turn.reply and any("Miso" in m for m in turn.memories)
    assert turn.window is not None and "what is my cat called?" in turn.window.render_text()
    again = chat.send("thanks")
    chat.close()
    assert again.window is not None
    assert "what is my cat called?" in again.window.render_text()  # now in the history


def test_chat_with_a_provider_goes_through_the_sdk(fake_anthropic, anthropic_client, memory):
    chat = Chat(memory, provider="anthropic", client=anthropic_client, model=MODEL, session_id="c2")
    turn = chat.send("hello")
    assert turn.reply.startswith("You said:")
    assert turn.usage.input_tokens > 0 and turn.window is not None
    assert (
        fake_anthropic.messages_requests()[0].json()["messages"][-1]["content"][-1]["text"]
        == "hello"
    )


def test_chat_keeps_no_fact_of_a_message_forgotten_while_the_model_answered(
    fake_openai, openai_client, tmp_path
):
    """A ``forget`` of the user that lands while chat's message is at the provider
    (seconds): the reply was kept out of the log, but chat then stored the message's
    facts, and the erased passport number was back in memory and in the file."""
    db = tmp_path / "chat.db"
    secret = "PX55120QQ"
    other = Memory(db, embedder=HashEmbedder(), background_embedding=False)  # another process
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory, other:
        chat = Chat(memory, provider="openai", client=openai_client, user_id="ana")
        chat.send("I live in Lisbon")
        chat.close()
        assert [r.text for r in memory.get_all(user_id="ana")] == ["User lives in Lisbon"]

        def forget_then_answer(body: dict[str, Any]) -> str:
            assert other.forget("ana") > 0  # lands while the model answers
            return "noted"

        fake_openai.reply = forget_then_answer
        chat.send(f"My passport number is {secret}")
        chat.close()
        assert memory.get_all(user_id="ana") == []
        assert secret not in json.dumps([t.message.content for t in chat.context.session.turns()])
        fake_openai.reply = lambda body: "hello again"
        chat.send("I like tea")  # the user's next message is remembered as ever
        chat.close()
        assert [r.text for r in memory.get_all(user_id="ana")] == ["User likes tea"]
    data = b"".join(p.read_bytes() for p in tmp_path.glob("chat.db*"))
    assert secret.encode() not in data


def test_chat_without_a_key_says_how_to_set_it(memory):
    from contextos.config import load_settings

    settings = load_settings(env={}, db=str(memory.settings.db))
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        Chat(memory, provider="anthropic", settings=settings)


def test_cli_chat_offline(tmp_path):
    db = tmp_path / "chat.db"
    runner = CliRunner()
    env = {"CONTEXTOS_EMBEDDER": "hash"}
    first = runner.invoke(
        cli,
        ["--db", str(db), "chat", "--no-show-window"],
        input="my favourite colour is teal\n/quit\n",
        env=env,
    )
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        cli,
        ["--db", str(db), "--json", "chat", "--session", "other"],
        input="what is my favourite colour?\n",
        env=env,
    )
    assert second.exit_code == 0, second.output
    out = json.loads(second.output)
    assert "teal" in out["reply"] and out["window"]


def test_cli_bench_wrap_prints_both_medians():
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "wrap",
            "--provider",
            "anthropic",
            "--mode",
            "passthrough",
            "--calls",
            "5",
            "--warmup",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["calls"] == 5 and row["bare_median_ms"] > 0 and row["wrapped_median_ms"] > 0
    assert row["overhead_ms"] == pytest.approx(row["wrapped_median_ms"] - row["bare_median_ms"])


def test_a_long_session_compacts_into_a_summary_and_keeps_the_log(
    fake_anthropic, anthropic_client, memory
):
    wrapped = wrap(
        anthropic_client, memory=memory, session="long", user_id="ana", budget=2500, remember=False
    )
    for i in range(12):
        _ask(wrapped, f"Turn {i}: " + "the weather in Lisbon was sunny and warm today. " * 12)
    body = fake_anthropic.messages_requests()[-1].json()
    system = " ".join(b["text"] for b in body.get("system", []))
    assert "Summary of the earlier conversation" in system
    sent = [b["text"] for m in body["messages"] for b in m["content"]]
    assert not any(t.startswith("Turn 0:") for t in sent)  # rotated out of the window
    wrapped.flush()
    turns = wrapped.context.session.turns()
    assert len(turns) == 24  # ... but never out of the log
    assert wrapped.context.session.state().compactions >= 1


def test_wrap_takes_the_history_share_and_the_compaction_thresholds(
    fake_anthropic, anthropic_client, memory
):
    # They were SessionContext's only: wrap() refused them (TypeError), so an agent whose
    # steps add several tool results at once compacted every other step (a review).
    from contextos.engine.compaction import Thresholds

    def compactions(**options: Any) -> int:
        wrapped = wrap(
            anthropic_client,
            memory=memory,
            session=f"share-{len(options)}",
            user_id="ana",
            budget=2500,
            remember=False,
            **options,
        )
        for i in range(24):
            _ask(wrapped, f"Turn {i}: " + "the weather in Lisbon was sunny and warm today. " * 8)
        wrapped.flush()
        return wrapped.context.session.state().compactions

    default = compactions()
    roomier = compactions(history_share=0.9, thresholds=Thresholds(trigger=0.95, target=0.3))
    assert default >= 3 and roomier < default, (default, roomier)
    for share in (0, -0.5, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="history_share"):
            wrap(anthropic_client, memory=memory, session="bad", user_id="ana", history_share=share)
    with pytest.raises(TypeError, match="Thresholds"):
        wrap(anthropic_client, memory=memory, session="bad", user_id="ana", thresholds=(0.9, 0.5))


def test_a_question_over_the_budget_fails_before_sending_and_is_not_logged(
    fake_anthropic, anthropic_client, memory
):
    from contextos.errors import BudgetError

    wrapped = wrap(anthropic_client, memory=memory, session="tight", user_id="ana", budget=400)
    with pytest.raises(BudgetError):
        _ask(wrapped, "words " * 2000)
    assert fake_anthropic.messages_requests() == [] and wrapped.context.session.turns() == []
    _ask(wrapped, "short one")
    wrapped.flush()
    assert [t.message.content for t in wrapped.context.session.turns()][0] == "short one"


@pytest.mark.parametrize("max_tokens", [200_000, 300_000])
@pytest.mark.parametrize("compaction", ["default", None])
def test_max_tokens_that_fill_the_window_are_named_before_sending(
    fake_anthropic, anthropic_client, memory, max_tokens, compaction
):
    """No ``budget``: the window less ``max_tokens`` is the budget. At or past the model's
    window it was negative, and the error blamed a budget the caller never gave ("give a
    budget of at least 5"; a review)."""
    from contextos.errors import BudgetError

    extra = {} if compaction == "default" else {"compaction": None}
    wrapped = wrap(anthropic_client, memory=memory, session="full", user_id="ana", **extra)
    with pytest.raises(BudgetError) as caught:
        wrapped.messages.create(
            model=MODEL, max_tokens=max_tokens, messages=[{"role": "user", "content": "hi"}]
        )
    said = str(caught.value)
    assert MODEL in said and "200,000" in said and f"{max_tokens:,}" in said, said
    assert "max_tokens" in said and "budget of at least" not in said
    assert fake_anthropic.messages_requests() == [] and wrapped.context.session.turns() == []


class _ForgetfulMemory:
    """A Memory stand-in whose writes fail (the store underneath is real)."""

    def __init__(self, real: Memory) -> None:
        self.store, self.tenant, self.tokenizer = real.store, real.tenant, real.tokenizer

    def search(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def add(self, *args: Any, **kwargs: Any) -> list[Any]:
        from contextos.errors import StoreError

        raise StoreError("disk full")


@pytest.mark.parametrize("background", [True, False])
def test_a_failed_commit_is_raised_not_lost(fake_anthropic, anthropic_client, memory, background):
    from contextos.errors import StoreError

    wrapped = wrap(
        anthropic_client,
        memory=_ForgetfulMemory(memory),
        session="s",
        user_id="ana",
        background_commit=background,
    )
    if background:
        _ask(wrapped, "first")  # the caller has its answer; the write fails behind it
        with pytest.raises(StoreError, match="disk full"):
            _ask(wrapped, "second")  # ... and the next call reports it before sending
        assert len(fake_anthropic.messages_requests()) == 1
    else:
        with pytest.raises(StoreError, match="disk full"):
            _ask(wrapped, "first")
        # the call was made and billed: its record is kept though the commit failed
        assert [c.reply.content for c in wrapped.calls] == ["You said: first"]


_SLOW_ON_REPLIES = '''
import time
from contextos.llm.tokens import CharEstimateTokenizer

class SlowOnReplies(CharEstimateTokenizer):
    """Counts a reply of the fake's echo model ("You said: ...") slowly, as a busy disk
    makes the background commit of a reply slow: that commit is still running when
    the app's `with Memory(...)` block, or its script, ends."""

    def count(self, text):
        if "You said" in text:
            time.sleep(1.0)
        return super().count(text)
'''


def _slow_on_replies() -> Any:
    namespace: dict[str, Any] = {}
    exec(_SLOW_ON_REPLIES, namespace)
    return namespace["SlowOnReplies"]()


def test_closing_the_memory_right_after_a_call_waits_for_its_reply(fake_anthropic, tmp_path):
    path = tmp_path / "m.db"
    with Memory(
        path, embedder=HashEmbedder(), tokenizer=_slow_on_replies(), background_embedding=False
    ) as memory:
        client = anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="t")
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        _ask(wrapped, "remember my last words")  # no flush(): the block ends
    wrapped.flush()  # nothing failed behind the close
    client.close()
    with Memory(path, embedder=HashEmbedder(), background_embedding=False) as memory:
        log = memory.store.turns(Scope(tenant="default", session_id="s"))
        assert [t.message.content for t in log] == [
            "remember my last words",
            "You said: remember my last words",
        ]


def test_a_script_ending_right_after_a_call_keeps_its_reply(fake_anthropic, tmp_path):
    path = tmp_path / "m.db"
    script = (
        _SLOW_ON_REPLIES
        + f"""
import anthropic
from contextos.memory import Memory
from contextos.providers import wrap
from contextos.testing.embedders import HashEmbedder

memory = Memory({str(path)!r}, embedder=HashEmbedder(), tokenizer=SlowOnReplies())
client = wrap(anthropic.Anthropic(base_url={fake_anthropic.base_url!r}, api_key="t"),
              memory=memory, session="chat-1", user_id="ana")
reply = client.messages.create(model={MODEL!r}, max_tokens=64,
                               messages=[{{"role": "user", "content": "What should I cook?"}}])
print(reply.content[0].text)
"""
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "You said: What should I cook?"
    with Memory(path, embedder=HashEmbedder(), background_embedding=False) as memory:
        log = memory.store.turns(Scope(tenant="default", session_id="chat-1"))
        assert [t.message.role for t in log] == ["user", "assistant"]


def _odd_replies(body: dict[str, Any]) -> str:
    """The fake's model: a lone surrogate (an emoji split across two stream deltas
    leaves one), a reply longer than a memory may hold, or an echo."""
    last = body["messages"][-1]["content"]
    text = last if isinstance(last, str) else " ".join(b.get("text", "") for b in last)
    if "emoji" in text:
        return "smile \ud83d"
    return "ok " * 40_000 if "essay" in text else f"You said: {text}"


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_no_log_or_memory_takes_is_logged_and_fails_no_call(memory, background, stream):
    # A reply with a lone surrogate was refused by the log on the background commit:
    # lost, and its error failed the session's next, unrelated call (inline, the call
    # itself, after the model answered). A reply longer than a memory may hold failed
    # its commit the same way, at memory.add.
    from contextos.testing.fake_anthropic import FakeAnthropic

    with FakeAnthropic(reply=_odd_replies) as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0)
        wrapped = wrap(
            client, memory=memory, session="s", user_id="ana", background_commit=background
        )

        def ask(history: list[dict[str, Any]]) -> str:
            reply = wrapped.messages.create(
                model=MODEL, max_tokens=64, messages=history, stream=stream
            )
            if not stream:
                return str(reply.content[0].text)
            return "".join(e.delta.text for e in reply if e.type == "content_block_delta")

        history: list[dict[str, Any]] = [{"role": "user", "content": "send an emoji"}]
        assert ask(history) == "smile \ud83d"  # the app gets what the model said
        history += [
            {"role": "assistant", "content": "smile \ud83d"},  # and sends it back so
            {"role": "user", "content": "write an essay"},
        ]
        essay = ask(history)
        history += [
            {"role": "assistant", "content": essay},
            {"role": "user", "content": "thanks"},
        ]
        assert ask(history) == "You said: thanks"
        wrapped.flush()
        log = [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]
        assert log == [
            ("user", "send an emoji"),
            ("assistant", "smile \ufffd"),
            ("user", "write an essay"),
            ("assistant", essay),
            ("user", "thanks"),
            ("assistant", "You said: thanks"),
        ]
        remembered = [r.text for r in memory.get_all(user_id="ana", limit=20)]
        assert "smile \ufffd" in remembered
        assert len([t for t in remembered if set(t) <= set("ok ")]) == 2  # in two pieces
        client.close()


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_reply_holding_nul_is_logged_mended_and_fails_no_call(
    memory, provider, stream, background
):
    # No store keeps NUL (PostgreSQL cannot), so a reply holding one was refused by the
    # log: lost, and the error failed the session's next call (inline, the call that got
    # the billed reply, whose record never reached client.calls).
    def reply(body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        return "a \x00 b" if "first" in str(last) else "fine"

    fake_server, sdk = fake_and_sdk(provider)
    with fake_server(reply=reply) as fake:
        client = sdk(base_url=fake.base_url, api_key="t", max_retries=0)
        wrapped = wrap(
            client, memory=memory, session="s", user_id="ana", background_commit=background
        )

        def ask(history: list[dict[str, Any]]) -> str:
            if provider == "anthropic":
                out = wrapped.messages.create(
                    model=MODEL, max_tokens=64, messages=history, stream=stream
                )
            else:
                out = wrapped.chat.completions.create(
                    model="gpt-4.1-mini", messages=history, stream=stream
                )
            if not stream:
                return str(
                    out.content[0].text
                    if provider == "anthropic"
                    else out.choices[0].message.content
                )
            if provider == "anthropic":
                return "".join(e.delta.text for e in out if e.type == "content_block_delta")
            return "".join(c.choices[0].delta.content or "" for c in out if c.choices)

        history: list[dict[str, Any]] = [{"role": "user", "content": "first"}]
        assert ask(history) == "a \x00 b"  # the app gets what the model said
        history += [
            {"role": "assistant", "content": "a \x00 b"},  # and sends it back so
            {"role": "user", "content": "second"},
        ]
        assert ask(history) == "fine"
        wrapped.flush()
        assert len(wrapped.calls) == 2
        log = [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]
        assert log == [
            ("user", "first"),
            ("assistant", "a \ufffd b"),
            ("user", "second"),
            ("assistant", "fine"),
        ]
        assert "a \ufffd b" in [r.text for r in memory.get_all(user_id="ana", limit=20)]
        with pytest.raises(ValueError, match="NUL"):  # the app's own NUL: refused unsent
            ask(
                [
                    *history,
                    {"role": "assistant", "content": "fine"},
                    {"role": "user", "content": "\x00"},
                ]
            )
        assert len(fake.requests) == 2
        client.close()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_tool_result_holding_nul_or_a_lone_surrogate_is_logged_mended(memory, provider):
    # An agent returns what a tool read (a binary file; a command's output decoded with
    # surrogateescape) as the tool's result: its NUL made the wrapped call raise
    # ValueError, where the bare SDK's call went through (a review). Tool output is no
    # more the app's to clean than a model's reply: logged with U+FFFD, sent so, and the
    # app's echo of it on the next call is recognised (logged once).
    output = "ELF\x00\x00 header \udcff tail"
    mended = "ELF\ufffd\ufffd header \ufffd tail"

    def reply(body: dict[str, Any]) -> Any:
        last = str(body["messages"][-1]["content"])
        if "logo" not in last or "header" in last:
            return "done"
        if provider == "anthropic":
            return [{"type": "tool_use", "id": "toolu_1", "name": "cat", "input": {"p": "logo"}}]
        return {"tool_calls": [{"id": "call_1", "name": "cat", "arguments": {"p": "logo"}}]}

    fake_server, sdk = fake_and_sdk(provider)
    with fake_server(reply=reply) as fake:
        client = sdk(base_url=fake.base_url, api_key="t", max_retries=0)
        wrapped = wrap(client, memory=memory, session="bin", user_id="ana")
        history: list[dict[str, Any]] = [{"role": "user", "content": "what is in logo?"}]
        if provider == "anthropic":
            tool = {"name": "cat", "description": "read", "input_schema": {"type": "object"}}
            first = wrapped.messages.create(
                model=MODEL, max_tokens=64, messages=history, tools=[tool]
            )
            history += [
                {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": output}
                    ],
                },
            ]
            wrapped.messages.create(model=MODEL, max_tokens=64, messages=history, tools=[tool])
            history += [
                {"role": "assistant", "content": "done"},
                {"role": "user", "content": "thanks"},
            ]
            wrapped.messages.create(model=MODEL, max_tokens=64, messages=history, tools=[tool])
        else:
            tool = {"type": "function", "function": {"name": "cat", "parameters": {}}}
            first = wrapped.chat.completions.create(
                model="gpt-4.1-mini", messages=history, tools=[tool]
            )
            history += [
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": "call_1", "content": output},
            ]
            wrapped.chat.completions.create(model="gpt-4.1-mini", messages=history, tools=[tool])
            history += [
                {"role": "assistant", "content": "done"},
                {"role": "user", "content": "thanks"},
            ]
            wrapped.chat.completions.create(model="gpt-4.1-mini", messages=history, tools=[tool])
        wrapped.flush()
        sent = fake.requests[1].json()["messages"][-1]
        log = [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]
        client.close()
    assert mended in json.dumps(sent, ensure_ascii=False), sent
    assert [content for role, content in log if role == "tool"] == [mended]
    assert [role for role, _ in log] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]


@pytest.mark.parametrize("background", [True, False])
def test_one_wrapped_client_shared_by_threads_never_fails_a_call(
    fake_anthropic, anthropic_client, memory, background
):
    # A web app shares one wrapped client across its request threads. Commits run one
    # at a time; starting one while another thread waited on the previous one raised
    # "cannot join thread before it is started" into calls the provider had answered.
    import threading

    wrapped = wrap(
        anthropic_client, memory=memory, session="s", user_id="ana", background_commit=background
    )
    errors: list[BaseException] = []

    def user(i: int) -> None:
        for j in range(5):
            try:
                _ask(wrapped, f"question {i} {j}")
            except BaseException as exc:  # collected: the assertion below shows them
                errors.append(exc)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wrapped.flush()
    assert errors == []
    assert len(wrapped.calls) == len(fake_anthropic.messages_requests()) == 30
    logged = [t.message.content for t in memory.store.turns(wrapped.context.session.scope)]
    assert sorted(c for c in logged if c.startswith("question")) == sorted(
        f"question {i} {j}" for i in range(6) for j in range(5)
    )


def test_memory_without_any_scope_is_refused(anthropic_client, memory):
    from contextos.errors import ScopeError

    with pytest.raises(ScopeError):
        wrap(anthropic_client, memory=memory)


# -- property: a growing conversation never rewrites the cached prefix -------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# No lone surrogates and no NUL: the log refuses both (Session.add, the stores).
_texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=60,
).filter(lambda t: t.strip() != "")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    questions=st.lists(_texts, min_size=2, max_size=6),
    provider=st.sampled_from(["anthropic", "openai"]),
)
def test_adding_turns_never_changes_the_sent_prefix(tmp_path_factory, questions, provider):
    from contextos.providers.anthropic import ADAPTER
    from contextos.providers.openai import chat_adapter

    adapter = ADAPTER if provider == "anthropic" else chat_adapter()
    db = tmp_path_factory.mktemp("prop") / "m.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as mem:
        ctx = SessionContext(memory=mem, session="p", user_id="u", background_commit=False)
        bodies = []
        for i, q in enumerate(questions):
            kwargs: dict[str, Any] = {
                "model": MODEL,
                "max_tokens": 32,
                "messages": [{"role": "user", "content": q}],
            }
            if provider == "anthropic":
                kwargs["system"] = "stable system prompt"
            else:
                kwargs["messages"].insert(0, {"role": "system", "content": "stable system"})
            prepared = ctx.prepare(adapter.parse(kwargs), reserve_tokens=32)
            body, _ = adapter.render(prepared, kwargs)
            bodies.append(body)
            ctx.commit(
                prepared,
                CallRecord(
                    provider, MODEL, Usage(1, 1), Message("assistant", f"reply {i}"), False, 0.0
                ),
            )
    for before, after in zip(bodies, bodies[1:], strict=False):
        assert _unmarked(after.get("system")) == without_key(before.get("system"), "cache_control")
        stable = before["messages"][:-1]  # everything but the per-call final message
        assert _unmarked(after["messages"][: len(stable)]) == without_key(stable, "cache_control")


def test_wrap_passes_session_context_options_with_its_defaults(anthropic_client, memory):
    """wrap()'s session options are SessionContext's (ContextOptions): the names are
    SessionContext parameters, the defaults are SessionContext's, and an unknown name
    is refused at once."""
    import inspect

    from contextos.engine.compaction import Thresholds
    from contextos.engine.context import ContextOptions

    params = inspect.signature(SessionContext).parameters
    assert ContextOptions.__annotations__.keys() <= params.keys()
    given: ContextOptions = {"memory_limit": 3, "memory_tokens": 200, "remember": False}
    given |= {"budget": 5000, "compaction": "truncate", "background_commit": False}
    given |= {"history_share": 0.7, "thresholds": Thresholds(trigger=0.9, target=0.4)}
    assert given.keys() == ContextOptions.__annotations__.keys()
    ctx = wrap(anthropic_client, memory=memory, user_id="ana", **given).context
    assert {name: getattr(ctx, name) for name in given if name != "background_commit"} == {
        name: value for name, value in given.items() if name != "background_commit"
    }
    assert ctx._committer.background is False
    default = wrap(anthropic_client, memory=memory, user_id="ana").context
    assert default.memory_limit == params["memory_limit"].default
    assert default.compaction == params["compaction"].default
    assert default._committer.background is params["background_commit"].default
    assert default.placement == params["placement"].default
    with pytest.raises(TypeError, match="memory_limt"):  # a pass-through client too
        wrap(anthropic_client, memory_limt=3)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "first",
    ["contextos.llm.clients", "contextos.providers.chat", "contextos.providers.wrapper"],
)
def test_wrap_is_the_function_whatever_was_imported_first(first: str) -> None:
    """The module that defines ``wrap`` was named ``wrap`` too: once anything imported it
    (``contextos.llm.clients`` does), Python bound the package's ``wrap`` to the module,
    and ``from contextos import wrap`` / ``from contextos.providers import wrap`` gave a
    module ("'module' object is not callable"). Each import order, in a fresh process."""
    code = (
        f"import {first}\n"
        "import contextos, contextos.providers\n"
        "from contextos import wrap as a\n"
        "from contextos.providers import wrap as b\n"
        "assert callable(a) and callable(b) and a is b, (a, b)\n"
        "assert callable(contextos.providers.wrap), contextos.providers.wrap\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
