"""MiniLM's hand-written graph (contextos.embed.onnx_graph) against the plain BERT
math written out in numpy: the fused onnxruntime kernels (Attention, BiasGelu) must
compute what the layers they replace compute, padding included; and the int8 graph
must stay close to the float32 one, under its own model id and cache file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from conftest import LOCOMO
from contextos import Memory
from contextos.bench.locomo_data import load_locomo
from contextos.embed import DEFAULT_EMBEDDER, MiniLMEmbedder, make_embedder
from contextos.embed.minilm import model_dir
from contextos.embed.onnx_graph import (
    HEADS,
    LAYER_NORM_EPS,
    LAYERS,
    build_model,
    read_safetensors,
)
from contextos.errors import ConfigError
from contextos.memory.render import vector_model
from contextos.server.app import ServerConfig

slow = pytest.mark.slow


def _layer_norm(x: npt.NDArray[Any], t: dict[str, npt.NDArray[Any]], name: str) -> npt.NDArray[Any]:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: npt.NDArray[Any] = (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * t[f"{name}.weight"]
    out += t[f"{name}.bias"]
    return out


def _linear(x: npt.NDArray[Any], t: dict[str, npt.NDArray[Any]], name: str) -> npt.NDArray[Any]:
    out: npt.NDArray[Any] = x @ t[f"{name}.weight_t"]
    out += t[f"{name}.bias"]
    return out


def bert_sentence_vector(t: dict[str, npt.NDArray[Any]], ids: list[int]) -> npt.NDArray[np.float64]:
    """One text, unpadded, in float64 (``t`` converted by the caller, with each matrix
    also transposed as ``NAME_t``): BERT's embeddings, six post-norm layers with
    exact erf GELU, mean pooling, L2 normalisation (sentence-transformers' recipe)."""
    special = pytest.importorskip("scipy.special", reason="the dev extra (scipy) is not installed")
    n, head = len(ids), 384 // HEADS
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][:n]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, t, "embeddings.LayerNorm")
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"

        def heads(name: str, x: npt.NDArray[Any] = x, p: str = p) -> npt.NDArray[Any]:
            return _linear(x, t, f"{p}.attention.self.{name}").reshape(n, HEADS, head)

        q, k, v = heads("query"), heads("key"), heads("value")
        q, k, v = q.transpose(1, 0, 2), k.transpose(1, 2, 0), v.transpose(1, 0, 2)  # per head
        scores = q @ k / np.sqrt(head)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, 384)
        attn = _linear(ctx, t, f"{p}.attention.output.dense")
        x = _layer_norm(attn + x, t, f"{p}.attention.output.LayerNorm")
        h = _linear(x, t, f"{p}.intermediate.dense")
        h = 0.5 * h * (1.0 + special.erf(h / np.sqrt(2.0)))
        x = _layer_norm(_linear(h, t, f"{p}.output.dense") + x, t, f"{p}.output.LayerNorm")
    mean = x.mean(0)
    vector: npt.NDArray[np.float64] = mean / np.linalg.norm(mean)
    return vector


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """120 LoCoMo turns of every length (short and long ones share padded batches),
    and one past the 256-token limit."""
    if not LOCOMO.exists():
        pytest.skip(f"LoCoMo data not found at {LOCOMO}")
    turns = [t.text for conv in load_locomo(LOCOMO) for t in conv.turns if t.text.strip()]
    picked = turns[:: max(1, len(turns) // 120)][:120]
    return [*picked, " ".join(turns[:60])]


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graphs")


@pytest.fixture(scope="module")
def float32_vectors(texts: list[str], graph_cache: Path) -> npt.NDArray[np.float32]:
    return MiniLMEmbedder(cache_path=graph_cache).embed(texts)


@slow
def test_fused_graph_equals_plain_bert_math(
    texts: list[str], float32_vectors: npt.NDArray[np.float32], graph_cache: Path
) -> None:
    weights = {
        k: v.astype(np.float64)
        for k, v in read_safetensors(model_dir() / "model.safetensors").items()
    }
    weights |= {f"{k}_t": np.ascontiguousarray(v.T) for k, v in weights.items() if v.ndim == 2}
    embedder = MiniLMEmbedder(cache_path=graph_cache)
    tokenizer, _ = embedder._load()
    # every third text (numpy takes ~0.3 s a text here), the long one included
    picked = [*range(0, len(texts) - 1, 3), len(texts) - 1]
    encodings = tokenizer.encode_batch([texts[i] for i in picked])
    reference = np.stack([bert_sentence_vector(weights, e.ids) for e in encodings])
    cosines = np.sum(float32_vectors[picked] * reference, axis=1)
    assert cosines.min() >= 0.99999, (cosines.min(), texts[picked[int(np.argmin(cosines))]][:80])


@slow
def test_int8_vectors_stay_close_to_float32(
    texts: list[str], float32_vectors: npt.NDArray[np.float32], graph_cache: Path
) -> None:
    """Measured on these texts: mean cosine 0.9983, min 0.9951 (with the FFN-down input
    quantized per call instead of per token: 0.9951, 0.989; without the calibrated
    smoothing too: 0.9926, 0.982). On the 7,660 texts ``bench locomo`` embeds 0.9989 /
    0.9965, docs/benchmarks.md. Retrieval recall is what decides (bench locomo): it is
    the default embedder, so tests/test_retrieval_quality.py guards it."""
    int8 = MiniLMEmbedder(cache_path=graph_cache, int8=True)
    vectors = int8.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(float32_vectors * vectors, axis=1)
    assert cosines.mean() >= 0.9975 and cosines.min() >= 0.993, (cosines.mean(), cosines.min())
    # still ranks by meaning: each text's nearest float32 vector is its own
    assert (np.argmax(vectors @ float32_vectors.T, axis=1) == np.arange(len(texts))).mean() >= 0.99


@slow
def test_int8_is_a_model_of_its_own(graph_cache: Path) -> None:
    """Its vectors must never share an index with float32's: another model id (stored
    with each vector, so a switch re-embeds) and another cached graph file."""
    int8 = make_embedder("minilm-int8")
    assert int8.model_id == "all-MiniLM-L6-v2-int8-v2" != MiniLMEmbedder.model_id
    before = set(graph_cache.glob("*.onnx"))
    MiniLMEmbedder(cache_path=graph_cache, int8=True).embed(["tea"])
    MiniLMEmbedder(cache_path=graph_cache).embed(["tea"])
    names = sorted(p.name for p in graph_cache.glob("*.onnx"))
    assert len(names) == 2 and sum(n.endswith("-int8.onnx") for n in names) == 1, (before, names)


def test_int8_is_the_default_and_float32_stays_selectable(tmp_path: Path) -> None:
    """A plain ``Memory()``, the settings (CLI) and the server get the int8 graph; the
    float32 one keeps its old name and an explicit one."""
    int8_id = MiniLMEmbedder(int8=True).model_id
    assert make_embedder(DEFAULT_EMBEDDER).model_id == int8_id
    with Memory(tmp_path / "m.db") as m:  # the model loads on first use only
        assert m.embedder.model_id == int8_id
    assert ServerConfig(db=str(tmp_path / "s.db")).embedder == DEFAULT_EMBEDDER
    for name in ("minilm", "minilm-fp32"):
        embedder = make_embedder(name)
        assert isinstance(embedder, MiniLMEmbedder) and not embedder.int8
        assert embedder.model_id == "all-MiniLM-L6-v2"


@slow
def test_a_float32_store_is_searchable_then_re_embedded_by_the_int8_default(
    tmp_path: Path, graph_cache: Path
) -> None:
    """A store written before int8 became the default keeps answering by meaning with
    its float32 vectors (a process that embeds inline never re-embeds a whole store
    before answering), and a process with a worker re-embeds them all by the model id."""
    path = tmp_path / "m.db"
    texts = ["Ana drinks green tea every morning", "Bo repairs old motorcycles in his garage"]
    with Memory(path, embedder=MiniLMEmbedder(cache_path=graph_cache)) as m:
        m.add(texts, user_id="ana")
        assert m.flush(60)
    int8 = MiniLMEmbedder(cache_path=graph_cache, int8=True)
    with Memory(path, embedder=int8, background_embedding=False) as m:
        # no word in common with the tea memory: only its (float32) vector finds it
        assert m.search("which beverage", user_id="ana")[0].record.text == texts[0]
        assert m.search("fixing motorbikes", user_id="ana")[0].record.text == texts[1]
    with Memory(path, embedder=int8) as m:
        assert m.flush(60)
        assert m.store.embedding_status().pending == 0
        assert m.store.requeue_stale_vectors(vector_model(int8.model_id)) == 0
        assert m.search("which beverage", user_id="ana")[0].record.text == texts[0]
    with Memory(path, embedder=int8, background_embedding=False) as m:
        # every vector is int8's now: by float32's model id all of them are stale
        assert m.store.requeue_stale_vectors(vector_model(MiniLMEmbedder.model_id)) == 2


def test_bench_scale_measures_the_embedder_named(tmp_path: Path) -> None:
    """``bench scale --embedder`` is how the int8 graph's speed is measured: the report
    names the model it timed, and an unknown name is refused before any work."""
    from click.testing import CliRunner

    from contextos.cli.main import cli

    out = tmp_path / "scale.json"
    args = ["bench", "scale", "--n", "100", "--queries", "2", "--json", str(out)]
    r = CliRunner().invoke(cli, [*args, "--embedder", "hash"])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["embedder"] == "hash-bow" and report["embed_per_cpu_s"] > 0
    r = CliRunner().invoke(cli, [*args, "--embedder", "no-such-model"])
    assert isinstance(r.exception, ConfigError) and "unknown embedder" in str(r.exception)


def test_an_int8_graph_needs_its_calibration() -> None:
    """(ensure_graph takes the shipped maxima or measures: tests/test_embed_calibration.py)"""
    weights = read_safetensors(model_dir() / "model.safetensors")
    with pytest.raises(ValueError, match="calibration"):
        build_model(weights, int8=True)
