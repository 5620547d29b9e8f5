"""The int8 graph's calibration: per-channel activation maxima that set its smoothing.

``onnx_graph.build_model(int8=True)`` divides the inputs of Q/K/V and of the FFN's
first matrix by per-channel factors derived from these maxima (``onnx_graph._smoothed``).
They are measured by running the float32 graph on :data:`CALIBRATION_TEXTS`
(:func:`measure`), and the int8 vectors are sensitive to them at the last bit: a
one-ULP change of the maxima moved int8 vectors by up to 0.0076 (min cosine 0.9987),
as far as int8 is from float32. A measurement on another CPU or onnxruntime version
can differ at that level, so workers on several machines writing one store under one
model id could write vectors of slightly different graphs.

Hence the maxima for the packaged weights are shipped as data
(``calibration.json``, keyed by :func:`onnx_graph.weights_digest`), measured once
here, and the int8 graph of those weights is a pure function of the weights. Other
weights (a custom ``model_path``) are measured at build time and rounded to
:data:`COARSE_BITS` significant bits (:func:`coarse`), so that ULP-level differences
change the graph only for a value that happens to sit on a rounding boundary.

Regenerate the data after changing :data:`CALIBRATION_TEXTS` or the probe points
(tests/test_embed_calibration.py fails until then)::

    python -m contextos.embed.calibration
"""

from __future__ import annotations

import base64
import functools
import json
import platform
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError

#: What the int8 graph is calibrated on: everyday sentences written for this (none from
#: a benchmark), of the kinds a memory holds: first-person turns, dated facts, names,
#: numbers, questions, a list. Only their per-channel activation maxima are used.
CALIBRATION_TEXTS = (
    "I finally went to the pottery class on Saturday and made a lopsided bowl!",
    "Maria moved to Lisbon in March 2021 and works as a nurse at the city hospital.",
    "What did you think of the concert last night?",
    "We adopted two cats, Pepper and Miso, from the shelter near the park.",
    "The meeting was moved to 3:30 pm on Thursday, 14 November, in room 204.",
    "Honestly, I'm exhausted; the kids had the flu all week and I barely slept.",
    "John prefers green tea without sugar and drinks it every morning before work.",
    "Can you remind me when my passport expires? I think it's sometime in 2027.",
    "She ran her first marathon in 4 hours 12 minutes and wants to try a trail race next.",
    "Shopping list: eggs, oat milk, spinach, two lemons, coffee beans and dish soap.",
    "My grandmother taught me to bake bread when I was seven, and I still use her recipe.",
    "Tom said the car repair would cost about $850, which is more than we expected.",
    "We're planning a camping trip to the mountains with friends at the end of July.",
    "Is the new library open on Sundays, or only during the week?",
    "After ten years in marketing, Priya started studying to become a software engineer.",
    "Thanks so much for the book recommendation, I loved it and finished it in two days.",
)

#: The package data file: {"weights": {digest: {probe key: base64 of little-endian
#: float32}}} (base64 of the raw floats, so every value loads back bit for bit).
DATA_FILE = "calibration.json"

#: Significant bits kept by :func:`coarse` (steps of 1/16 to 1/8 of a value: the
#: smoothing factor is its square root, so within ~3% of the measured one, which the
#: per-column int8 weights absorb).
COARSE_BITS = 4

Maxima = dict[str, npt.NDArray[np.float32]]


def measure(ort: Any, tokenizer: Any, t: dict[str, npt.NDArray[Any]]) -> Maxima:
    """The maxima measured now: the float32 graph of ``t`` with its probes, run on
    :data:`CALIBRATION_TEXTS` (``ort``: the onnxruntime module, ``tokenizer``: the
    model's, truncating as the embedder does); each probe's largest magnitude per
    channel over the real tokens."""
    from .onnx_graph import PROBES, build_model
    from .onnx_proto import serialize

    session = ort.InferenceSession(
        serialize(build_model(t, probes=True)), providers=["CPUExecutionProvider"]
    )
    encodings = tokenizer.encode_batch(list(CALIBRATION_TEXTS))
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for r, e in enumerate(encodings):
        ids[r, : len(e.ids)] = e.ids
        mask[r, : len(e.ids)] = 1
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {"input_ids": ids, "attention_mask": mask})
    real = mask[..., None].astype(bool)
    return {
        name.removeprefix(PROBES): np.abs(np.where(real, value, 0.0))
        .max(axis=(0, 1))
        .astype(np.float32)
        for name, value in zip(names, values, strict=True)
        if name.startswith(PROBES)
    }


def coarse(maxima: Mapping[str, npt.NDArray[Any]]) -> Maxima:
    """``maxima`` rounded to :data:`COARSE_BITS` significant bits (non-negative input),
    for weights without shipped maxima: two machines' measurements that differ by a few
    ULPs then round to the same value (unless one sits on a boundary), so their int8
    graphs are equal."""
    out: Maxima = {}
    for key, value in maxima.items():
        mantissa, exponent = np.frexp(np.asarray(value, dtype=np.float64))
        rounded = np.ldexp(np.rint(np.ldexp(mantissa, COARSE_BITS)), exponent - COARSE_BITS)
        out[key] = rounded.astype(np.float32)
    return out


@functools.lru_cache(maxsize=1)
def _shipped_table() -> dict[str, dict[str, str]]:
    """The data file's table (read once; a few tens of kB of JSON, no ML runtime). Its
    absence is an install error, not a reason to measure: that graph would differ from
    other machines' under the same model id."""
    try:
        data = resources.files("contextos.embed").joinpath(DATA_FILE)
        text = data.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"contextos.embed/{DATA_FILE} is missing from the installed package ({exc}); "
            "reinstall contextos"
        ) from None
    table: dict[str, dict[str, str]] = json.loads(text)["weights"]
    return table


def shipped(digest: str) -> Maxima | None:
    """The shipped maxima of the weights whose :func:`onnx_graph.weights_digest` is
    ``digest``, or None for weights the package has none for."""
    entry = _shipped_table().get(digest)
    if entry is None:
        return None
    return {
        key: np.frombuffer(base64.b64decode(b64), dtype="<f4").astype(np.float32)
        for key, b64 in entry.items()
    }


def encode(maxima: Mapping[str, npt.NDArray[Any]]) -> dict[str, str]:
    """The data file's form of ``maxima`` (inverse of what :func:`shipped` decodes)."""
    return {
        key: base64.b64encode(np.ascontiguousarray(value, dtype="<f4").tobytes()).decode("ascii")
        for key, value in sorted(maxima.items())
    }


def main() -> None:
    """Measure the installed weights' maxima here and write them into the package's
    data file (the entry of other weights is kept)."""
    from .minilm import _runtime, load_tokenizer, model_dir
    from .onnx_graph import read_safetensors, weights_digest

    ort, _ = _runtime()
    folder = model_dir()
    weights = folder / "model.safetensors"
    maxima = measure(ort, load_tokenizer(folder), read_safetensors(weights))
    path = Path(__file__).with_name(DATA_FILE)
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"weights": {}}
    data["weights"][weights_digest(weights)] = encode(maxima)
    data["measured_with"] = f"onnxruntime {ort.__version__}, {platform.machine()}"
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(maxima)} probes for {weights_digest(weights)} to {path}")


if __name__ == "__main__":
    main()
