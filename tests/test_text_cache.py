"""Caches of what is computed from memory text keep no text, and stay bounded.

Why: ``lru_cache``s keyed by a memory's text (time mentions for retrieval, claim
parses for reconciliation) kept every text they saw, up to 100,000 characters each,
shared by all tenants of a server process, and kept an erased memory's text after
``Memory.forget``.
"""

from __future__ import annotations

import gc
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

from contextos.memory import Memory
from contextos.memory.retrieval import TIMES_NAMED
from contextos.testing.embedders import HashEmbedder
from contextos.text.claims import claim, claim_memo, stem_tokens
from contextos.text.text_cache import TextCache, text_digest


def strings_holding(word: str, *, besides: object) -> list[str]:
    """Every string a live object refers to that contains ``word`` (but ``besides``),
    inside tuples and frozensets the collector does not track too (an ``lru_cache``
    key of a text and a date is such a tuple)."""
    found, seen = [], set()
    stack: list[object] = gc.get_objects()
    # Looking at every object of a process that imported torch (other tests do) touches
    # its deprecated module attributes, whose FutureWarning is an error under pytest.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _scan(stack, word, besides, found, seen)
    return found


def _scan(
    stack: list[object], word: str, besides: object, found: list[str], seen: set[int]
) -> None:
    while stack:
        obj = stack.pop()
        for ref in gc.get_referents(obj):
            if isinstance(ref, str):
                if ref is not besides and word in ref.lower():
                    found.append(f"{type(obj).__name__}: {ref[:60]!r}")
            elif (
                isinstance(ref, tuple | frozenset)
                and not gc.is_tracked(ref)
                and id(ref) not in seen
            ):
                seen.add(id(ref))
                stack.append(ref)


def test_no_object_keeps_an_erased_memory_s_text_after_search_and_reconcile(
    tmp_path: Path,
) -> None:
    secret = "qz" + uuid.uuid4().hex[:12]  # built at run time: in no code object
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add(
            f"Yesterday I told my doctor {secret} about my diagnosis",
            user_id="ana",
            event_time=datetime(2024, 5, 2, tzinfo=UTC),
        )
        said = f"Ana lives in {secret}ville now. Ana works at {secret} Corp."
        m.add(  # reconciled: its facts are parsed for claims (text.claims)
            [{"role": "user", "content": said}],
            user_id="ana",
            infer=True,
            event_time=datetime(2024, 5, 3, tzinfo=UTC),
        )
        del said
        misses = TIMES_NAMED.cache_info().misses
        hits = m.search("when did ana talk to her doctor about the diagnosis?", user_id="ana")
        assert any(secret in h.record.text for h in hits)
        assert TIMES_NAMED.cache_info().misses > misses  # the time cue went through it
        del hits
        assert m.forget("ana") >= 2
        gc.collect()
        assert strings_holding(secret, besides=secret) == []
        # What the time-mention cache keys by: digests and anchors, no text.
        assert all(
            isinstance(d, bytes) and len(d) == 16 and isinstance(a, datetime)
            for d, a in TIMES_NAMED.cached_keys()
        )


def test_a_text_cache_keys_by_digest_and_evicts_the_least_recently_used() -> None:
    cache: TextCache[int] = TextCache(3)
    computed: list[str] = []

    def length(text: str) -> int:
        computed.append(text)
        return len(text)

    texts = [f"memory number {n} " * 1000 for n in range(5)]
    assert cache.get(texts[0], None, lambda: length(texts[0])) == len(texts[0])
    assert cache.get(texts[0], None, lambda: length(texts[0])) == len(texts[0])
    assert computed == [texts[0]]  # the second was a hit
    for text in texts[1:3]:
        cache.get(text, None, lambda t=text: length(t))  # type: ignore[misc]
    cache.get(texts[0], None, lambda: length(texts[0]))  # used again: now the newest
    for text in texts[3:]:
        cache.get(text, None, lambda t=text: length(t))  # type: ignore[misc]
    assert cache.cache_info() == (2, 5, 3, 3)
    assert cache.cached_keys() == [(text_digest(t), None) for t in (texts[0], texts[3], texts[4])]
    assert cache.get(texts[1], "other", lambda: -1) == -1  # another argument: another entry
    assert len(cache.cached_keys()) == 3


def test_a_text_cache_keeps_a_computed_none_and_peek_and_put_share_its_entries() -> None:
    """A value of None is a value (a text with no time in it): computed once, and told
    apart from a miss by ``get``; ``peek``/``put`` (values computed elsewhere) read and
    fill the same entries, counted as ``get`` counts."""
    cache: TextCache[int | None] = TextCache(2)
    calls: list[str] = []
    for _ in range(2):
        assert cache.get("no number here", None, lambda: calls.append("x")) is None
    assert calls == ["x"] and cache.cache_info()[:2] == (1, 1)
    assert cache.peek("kept elsewhere", "t") is None  # a miss
    cache.put("kept elsewhere", "t", 7)
    assert cache.peek("kept elsewhere", "t") == 7
    assert cache.get("kept elsewhere", "t", lambda: -1) == 7
    assert cache.cache_info() == (3, 2, 2, 2)


def test_claim_parses_are_reused_inside_a_memo_block_and_kept_nowhere_after() -> None:
    text = "Ann no longer lives in Paris, she lives in Lyon"
    with claim_memo():
        assert stem_tokens(text) is stem_tokens(text)
        parsed = claim(text, "Ann")
        assert parsed is not None and claim(text, "Ann") is parsed
        with claim_memo():  # nested: the outer block's parses serve
            inner = stem_tokens(text)
        assert stem_tokens(text) is inner
    first, again = stem_tokens(text), stem_tokens(text)
    assert first == again and first is not again  # outside a block: computed afresh


def test_a_weighed_text_cache_keeps_its_total_weight_bounded() -> None:
    cache: TextCache[tuple[int, ...]] = TextCache(100, weigh=len, max_weight=10)
    for n in range(20):
        cache.get(f"text {n}", None, lambda n=n: tuple(range(n % 5)))  # type: ignore[misc]
        assert cache.weight <= 10
    assert cache.cache_info().currsize < 20
    kept = cache.cached_keys()
    assert cache.get("a huge text", None, lambda: tuple(range(50))) == tuple(range(50))
    assert cache.cached_keys() == kept  # too heavy to keep: it pushes nothing out
