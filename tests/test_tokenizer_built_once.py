"""The offline tokenizer's encoding is built once, however many threads count first
(review s50).

Building tiktoken's encoding takes 60-400 ms with the GIL held. The cache in front of it
(``functools.lru_cache``) did not stop concurrent first callers from each building it:
the first burst of an asyncio app's calls (each in ``asyncio.to_thread``) built it once
per caller and stalled the event loop for up to half a second. Now the first callers
wait for the one build.

A fresh interpreter (its cache cold), eight threads counting at once through the public
API. The probe counts ``tiktoken.Encoding`` constructions (tiktoken's class, wrapped in
the child process only), and holds each one 0.2 s longer, so that every thread reaches
the build while the first is still inside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("tiktoken")

CHILD = textwrap.dedent(
    """
    import collections, json, threading, time
    import tiktoken

    built = collections.Counter()
    original = tiktoken.Encoding.__init__

    def probe(self, *args, **kwargs):
        built[kwargs.get("name", args[0] if args else None)] += 1
        time.sleep(0.2)  # every other thread reaches the build meanwhile
        original(self, *args, **kwargs)

    tiktoken.Encoding.__init__ = probe

    from contextos.llm.tokens import TiktokenTokenizer, count_tokens, default_tokenizer

    THREADS = 8
    start = threading.Barrier(THREADS)
    counts = []

    def count(n):
        start.wait()
        if n % 2:
            counts.append(count_tokens("hello world"))
        else:  # a tokenizer of its own: still the one encoding
            counts.append(TiktokenTokenizer("cl100k_base").count("hello world"))

    threads = [threading.Thread(target=count, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts.append(default_tokenizer().count("hello world"))  # once built: no build
    print(json.dumps({"built": built, "counts": counts}))
    """
)


def test_concurrent_first_counts_build_the_encoding_once(tmp_path: Path) -> None:
    env = {**os.environ, "CONTEXTOS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["built"]) == 1, result["built"]  # cl100k_base only
    assert list(result["built"].values()) == [1], f"built per encoding: {result['built']}"
    assert result["counts"] == [2] * 9
