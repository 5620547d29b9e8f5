"""Our ONNX writer (contextos.embed.onnx_proto) against the ``onnx`` package (dev extra):
the bytes we write for MiniLM's graph parse, pass onnx's checker, and equal what
onnx.helper builds for the same nodes, initializers and signature. (That the graph is
built and run with onnx unimportable: tests/test_install.py.)"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from contextos.embed.minilm import model_dir
from contextos.embed.onnx_graph import build_model, read_safetensors
from contextos.embed.onnx_proto import FLOAT, Model, Node, TensorInfo, serialize

onnx = pytest.importorskip("onnx", reason="the dev extra (onnx) is not installed")


def _with_onnx_helper(m: Model) -> bytes:
    """The same model through onnx.helper: the reference encoder."""
    from onnx import helper, numpy_helper

    def info(i: TensorInfo) -> Any:
        return helper.make_tensor_value_info(i.name, i.elem_type, list(i.shape))

    def node(n: Node) -> Any:
        attrs: dict[str, Any] = dict(n.attrs)
        if n.domain:  # onnx.helper leaves the domain unset unless given
            attrs["domain"] = n.domain
        return helper.make_node(n.op_type, list(n.inputs), list(n.outputs), **attrs)

    graph = helper.make_graph(
        [node(n) for n in m.nodes],
        m.name,
        [info(i) for i in m.inputs],
        [info(o) for o in m.outputs],
        [numpy_helper.from_array(v, k) for k, v in m.initializers.items()],
    )
    opsets = [helper.make_opsetid("", m.opset)]
    opsets += [helper.make_opsetid(domain, version) for domain, version in m.opsets.items()]
    model = helper.make_model(graph, opset_imports=opsets, producer_name=m.producer_name)
    model.ir_version = m.ir_version
    data: bytes = model.SerializeToString()
    return data


@pytest.fixture(scope="module", params=[False, True], ids=["float32", "int8"])
def minilm_model(request: pytest.FixtureRequest) -> Model:
    weights = read_safetensors(model_dir() / "model.safetensors")
    if not request.param:
        return build_model(weights)
    # any positive maxima serve here (the real ones come from a float32 run)
    maxima = {f"{i}.{k}": np.ones(384, np.float32) for i in range(6) for k in ("qkv", "up")}
    return build_model(weights, int8=True, calibration=maxima)


def test_minilm_graph_bytes_equal_onnx_helpers_and_pass_the_checker(minilm_model: Model) -> None:
    ours = serialize(minilm_model)
    assert ours == _with_onnx_helper(minilm_model)
    parsed = onnx.load_from_string(ours)
    # full_check infers shapes through every op (onnx's schemas include com.microsoft's
    # contrib ops only in part, so unknown ones are skipped, not failed)
    onnx.checker.check_model(parsed, full_check=True)
    assert [o.name for o in parsed.graph.output] == ["sentence_embedding"]
    assert len(parsed.graph.node) == len(minilm_model.nodes)
    assert {(o.domain, o.version) for o in parsed.opset_import} == {("", 17), ("com.microsoft", 1)}
    fused = {n.op_type for n in parsed.graph.node if n.domain == "com.microsoft"}
    assert {"BiasGelu"} < fused and ("QAttention" in fused or "Attention" in fused)
    word = next(t for t in parsed.graph.initializer if t.name == "word_emb")
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(word), minilm_model.initializers["word_emb"]
    )
    int8 = [t for t in parsed.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    for t in int8:
        np.testing.assert_array_equal(
            onnx.numpy_helper.to_array(t), minilm_model.initializers[t.name]
        )
    assert len(int8) == (24 if "QAttention" in fused else 0)  # 4 weight matrices a layer


def test_every_field_kind_round_trips() -> None:
    """Negative and multi-byte varints, float attributes, int lists, scalar and int64
    tensors, symbolic and fixed dimensions: each one the MiniLM graph may not exercise."""
    m = Model(
        name="edges",
        nodes=[
            Node("Transpose", ("x",), ("t",), {"perm": [1, 0]}),
            Node("BiasGelu", ("t", "bias"), ("tg",), domain="com.microsoft"),
            Node("Gather", ("t", "idx"), ("g",), {"axis": -1}),
            Node("LeakyRelu", ("g",), ("y",), {"alpha": 0.3}),
            Node("Unsqueeze", ("y", "axes"), ("out",)),
        ],
        initializers={
            "idx": np.array([0, 300, 70000], dtype=np.int64),
            "axes": np.array([0], dtype=np.int64),
            "big": np.arange(40000, dtype=np.float32).reshape(200, 200),  # a long length
            "scalar": np.array(2.5, dtype=np.float32),
            "bias": np.array([1.0], dtype=np.float32),
            "int8": np.array([[-128, -1, 0], [1, 7, 127]], dtype=np.int8),
        },
        inputs=[TensorInfo("x", FLOAT, (70001, "n"))],
        outputs=[TensorInfo("out", FLOAT, (1, "n", 3))],
        opset=17,
        ir_version=8,
        producer_name="test ✓",
        opsets={"com.microsoft": 1},
    )
    ours = serialize(m)
    assert ours == _with_onnx_helper(m)
    parsed = onnx.load_from_string(ours)
    onnx.checker.check_model(parsed)
    assert parsed.graph.node[1].domain == "com.microsoft"
    assert parsed.graph.node[2].attribute[0].i == -1
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(parsed.graph.initializer[5]), m.initializers["int8"]
    )
    assert parsed.graph.input[0].type.tensor_type.shape.dim[1].dim_param == "n"
    assert parsed.graph.initializer[3].dims == []
    assert parsed.producer_name == "test ✓"


@pytest.mark.parametrize(
    ("attrs", "message"),
    [({"flag": True}, "bool"), ({"names": ["a"]}, "unsupported"), ({"s": "x"}, "unsupported")],
)
def test_unsupported_attributes_are_refused(attrs: dict[str, Any], message: str) -> None:
    m = Model("bad", [Node("Identity", ("x",), ("y",), attrs)], {}, [], [], 17, 8, "t")
    with pytest.raises(ValueError, match=message):
        serialize(m)


def test_a_node_of_a_domain_not_imported_is_refused() -> None:
    m = Model(
        "bad",
        [Node("BiasGelu", ("x", "b"), ("y",), domain="com.microsoft")],
        {},
        [],
        [],
        17,
        8,
        "t",
    )
    with pytest.raises(ValueError, match="not imported"):
        serialize(m)


def test_unsupported_initializer_dtype_is_refused() -> None:
    m = Model("bad", [], {"h": np.zeros(2, np.float16)}, [], [], 17, 8, "t")
    with pytest.raises(ValueError, match="float16"):
        serialize(m)
