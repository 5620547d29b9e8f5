"""The int8 graph is a pure function of the weights: the packaged weights' calibration
maxima ship with the package (contextos.embed.calibration), so a measurement that
differs at the last bit (another CPU, another onnxruntime) builds the same graph;
other weights get their measurement rounded. And the graph cache drops the graphs of
older builder versions."""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from conftest import REPO
from contextos.embed import MiniLMEmbedder
from contextos.embed.calibration import COARSE_BITS, Maxima, coarse, measure, shipped
from contextos.embed.minilm import MODEL_FILES, _runtime, load_tokenizer, model_dir
from contextos.embed.onnx_graph import (
    BUILDER_VERSION,
    build_model,
    cached_graph_path,
    ensure_graph,
    read_safetensors,
    weights_digest,
)
from contextos.embed.onnx_proto import serialize

slow = pytest.mark.slow

TEXTS = [
    "I went hiking with my sister last weekend near the lake.",
    "What time is the dentist appointment?",
    "Maria moved to Lisbon in 2021.",
    "We adopted a cat called Pepper.",
    "Shopping list: eggs, milk, bread.",
]


def _weights() -> Path:
    return model_dir() / "model.safetensors"


@pytest.fixture(scope="module")
def measured() -> Maxima:
    """The maxima measured on this machine now, as a build without shipped data would."""
    ort, _ = _runtime()
    return measure(ort, load_tokenizer(model_dir()), read_safetensors(_weights()))


def _one_ulp_off(maxima: Maxima, seed: int = 0) -> Maxima:
    """Every value moved one float32 step up or down (what the review saw between
    onnxruntime settings; another CPU can differ the same way)."""
    rng = np.random.default_rng(seed)
    out: Maxima = {}
    for key, value in maxima.items():
        direction = np.where(rng.random(value.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
        out[key] = np.nextafter(value, direction)
    return out


def _vectors(graph: bytes, cache: Path) -> npt.NDArray[np.float32]:
    """The int8 embedder's vectors of :data:`TEXTS` with ``graph`` as its cached graph."""
    cache.mkdir()
    cached_graph_path(_weights(), cache, int8=True).write_bytes(graph)
    return MiniLMEmbedder(cache_path=cache, int8=True).embed(TEXTS)


@slow
def test_the_shipped_maxima_equal_a_fresh_measurement(measured: Maxima) -> None:
    """Bit for bit, so the int8 vectors on this machine did not change when the data
    file replaced the build-time measurement; this fails when the graph, the probes,
    the calibration texts or the weights change until the data is regenerated
    (``python -m contextos.embed.calibration``)."""
    table = shipped(weights_digest(_weights()))
    assert table is not None, "no shipped maxima for the installed weights"
    assert sorted(table) == sorted(measured)
    for key, value in measured.items():
        assert table[key].dtype == np.float32 and table[key].shape == value.shape
        np.testing.assert_array_equal(table[key], value, err_msg=key)


@slow
def test_a_measurement_one_ulp_off_builds_the_same_int8_graph(
    measured: Maxima, tmp_path: Path
) -> None:
    """The point of shipping the maxima: a machine whose measurement differs at the
    last bit builds the graph (and vectors) this machine builds, which is the graph the
    build-time measurement gave before (same bytes); without the shipped data the same
    perturbation moves vectors by ~0.008."""
    calls: list[int] = []

    def calibrate_elsewhere(t: dict[str, npt.NDArray[Any]]) -> Maxima:
        calls.append(1)
        return _one_ulp_off(measured)

    graph = ensure_graph(_weights(), tmp_path, int8=True, calibrate=calibrate_elsewhere)
    assert calls == []  # the packaged weights are never measured at build time
    t = read_safetensors(_weights())
    as_before = serialize(build_model(t, int8=True, calibration=measured))
    assert graph.read_bytes() == as_before
    # the embedder uses that graph: same vectors as the build-time measurement gives
    embedded = MiniLMEmbedder(cache_path=tmp_path, int8=True).embed(TEXTS)
    np.testing.assert_array_equal(embedded, _vectors(as_before, tmp_path / "before"))
    # control: the perturbation alone would change the vectors
    drifted_graph = serialize(build_model(t, int8=True, calibration=_one_ulp_off(measured)))
    drifted = _vectors(drifted_graph, tmp_path / "drifted")
    assert float(np.abs(drifted - embedded).max()) > 1e-3


def _same_model_other_digest(folder: Path) -> Path:
    """A model folder with the packaged files, its weights with eight spaces more in
    their JSON header (the safetensors format allows that padding): the same tensors,
    another digest, so no shipped maxima apply."""
    folder.mkdir()
    for name in MODEL_FILES:
        shutil.copyfile(model_dir() / name, folder / name)
    data = _weights().read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    padded = struct.pack("<Q", n + 8) + data[8 : 8 + n] + b" " * 8 + data[8 + n :]
    (folder / "model.safetensors").write_bytes(padded)
    return folder


@slow
def test_other_weights_are_measured_and_rounded(measured: Maxima, tmp_path: Path) -> None:
    """Weights without shipped maxima (a custom ``model_path``) are measured when the
    graph is built, and the measurement is rounded (:func:`coarse`): a machine whose
    measurement is one ULP off builds the same graph, and int8 stays as close to
    float32 as with the exact maxima (test_embed_graph.py's bounds)."""
    folder = _same_model_other_digest(tmp_path / "model")
    weights = folder / "model.safetensors"
    assert shipped(weights_digest(weights)) is None
    int8 = MiniLMEmbedder(model_path=folder, cache_path=tmp_path / "here", int8=True)
    vectors = int8.embed(TEXTS)  # measures here, as the embedder does for such weights
    (here,) = (tmp_path / "here").glob("*.onnx")
    elsewhere = ensure_graph(
        weights, tmp_path / "elsewhere", int8=True, calibrate=lambda t: _one_ulp_off(measured)
    )
    assert here.read_bytes() == elsewhere.read_bytes()
    t = read_safetensors(weights)
    assert here.read_bytes() == serialize(build_model(t, int8=True, calibration=coarse(measured)))
    float32 = MiniLMEmbedder(model_path=folder, cache_path=tmp_path / "f32").embed(TEXTS)
    cosines = np.sum(vectors * float32, axis=1)
    assert cosines.mean() >= 0.9975 and cosines.min() >= 0.993, cosines


def test_coarse_keeps_four_significant_bits() -> None:
    rng = np.random.default_rng(1)
    values = {"a": rng.uniform(1e-3, 40.0, 4096).astype(np.float32)}
    rounded = coarse(values)["a"]
    assert rounded.dtype == np.float32
    mantissa, _ = np.frexp(rounded.astype(np.float64))
    scaled = np.ldexp(mantissa, COARSE_BITS)
    np.testing.assert_array_equal(scaled, np.rint(scaled))
    assert float(np.max(np.abs(rounded / values["a"] - 1))) <= 2.0**-COARSE_BITS
    np.testing.assert_array_equal(coarse({"a": rounded})["a"], rounded)  # a fixed point
    # one ULP either way rounds the same, but for values on a boundary (rare)
    moved = coarse(_one_ulp_off(values))["a"]
    assert np.mean(moved != rounded) < 0.01


def test_the_data_loads_without_the_ml_runtime() -> None:
    """The shipped table is plain JSON read on first use; an unknown digest has none."""
    code = (
        "import sys; sys.modules.update(dict.fromkeys(['onnxruntime', 'tokenizers'])); "
        "from contextos.embed import calibration as c; "
        "print(len(c.shipped(sys.argv[1]) or {}), c.shipped('0' * 16))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, weights_digest(_weights())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["12", "None"]


def test_an_install_without_the_data_file_is_a_clear_error(tmp_path: Path) -> None:
    """Not a silent measurement: that graph would differ from other machines'."""
    shutil.copytree(
        REPO / "src" / "contextos",
        tmp_path / "contextos",
        ignore=shutil.ignore_patterns("__pycache__", "calibration.json"),
    )
    code = (
        "import sys; from contextos.embed import calibration as c; from contextos.errors "
        "import ConfigError\ntry: c.shipped('0' * 16)\nexcept ConfigError as e: print(e)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "calibration.json is missing" in r.stdout and "reinstall contextos" in r.stdout


def test_an_int8_build_without_shipped_maxima_needs_a_calibrate_function(
    tmp_path: Path,
) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights this package has no maxima for")
    with pytest.raises(ValueError, match="needs a calibrate function"):
        ensure_graph(weights, tmp_path, int8=True)


def test_a_new_graph_replaces_those_of_older_builder_versions(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    current = cached_graph_path(_weights(), cache)
    digest = current.name.split("-")[2]
    older = [
        cache / f"minilm-l6-{digest}-v{v}{kind}.onnx"
        for v in range(1, BUILDER_VERSION)
        for kind in ("", "-int8")
    ]
    kept = [
        cache / f"minilm-l6-{digest}-v{BUILDER_VERSION + 1}.onnx",  # a newer contextos's
        cache / f"minilm-l6-{digest}-v{BUILDER_VERSION + 1}-int8.onnx",
        cache / f"minilm-l6-{'f' * 16}-v1.onnx",  # other weights'
        cache / f"minilm-l6-{digest}-v1.onnx.x1y2.tmp",  # a write in progress
    ]
    for path in [*older, *kept]:
        path.write_bytes(b"old graph")
    stuck = cache / f"minilm-l6-{digest}-v{BUILDER_VERSION - 1}-int8.onnx"
    stuck.unlink()
    stuck.mkdir()  # cannot be unlinked: skipped, not an error
    assert ensure_graph(_weights(), cache) == current
    left = sorted(p.name for p in cache.glob("minilm-*"))
    assert left == sorted(p.name for p in [current, stuck, *kept])


def test_the_wheel_carries_the_calibration_data(tmp_path: Path) -> None:
    """A non-editable install (a wheel) must include the data file. Built from a copy
    of the sources, so the build leaves nothing in the checkout; with the venv's
    setuptools (the dev extra's; `make demo` removes it), as the build needs no network."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed (it comes with the dev extra)")
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    r = subprocess.run(
        [
            sys.executable,
            *("-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("-w", str(tmp_path / "dist"), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("contextos-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "contextos/embed/calibration.json" in names


def test_a_reinstalled_weights_file_leaves_one_digest_memo(tmp_path: Path) -> None:
    """Each reinstall of the weights (a new mtime) is hashed again and remembered; the
    memo of the earlier install goes, as do memos of the older form, which named no
    file. Another weights file's memo stays."""
    cache = tmp_path / "cache"
    cache.mkdir()
    legacy = cache / f"sha256-{'0' * 16}.txt"
    legacy.write_text("1234567890abcdef")
    weights, other = tmp_path / "model.safetensors", tmp_path / "other.safetensors"
    other.write_bytes(b"other weights")
    cached_graph_path(other, cache)
    for install, content in enumerate([b"first install", b"second install"]):
        weights.write_bytes(content)
        os.utime(weights, ns=(10**18 + install, 10**18 + install))
        graph = cached_graph_path(weights, cache)
        assert graph.name.split("-")[2] == weights_digest(weights)
    memos = sorted(cache.glob("sha256-*"))
    assert len(memos) == 2  # one per weights file; the legacy one is gone
    assert sorted(m.read_text() for m in memos) == sorted(
        [weights_digest(weights), weights_digest(other)]
    )
    assert cached_graph_path(weights, cache) == graph
