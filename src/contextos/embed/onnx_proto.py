"""A small ONNX model writer: the protobuf wire format of the few messages a
feed-forward graph needs, so that building MiniLM's graph needs no ``onnx`` package.

Why our own writer: the ``onnx`` package (31 MB installed, plus ml_dtypes) was in the
default install only to serialize one small, fixed graph on first use, and
onnxruntime, which runs it, reads the bytes itself. The encoding is protobuf's
(https://protobuf.dev/programming-guides/encoding/) for the messages of
``onnx.proto`` (proto2) listed below, with their field numbers. Fields are written in
field-number order and repeated scalars unpacked, as protobuf itself writes them, so
the bytes equal what ``onnx.helper`` builds and ``SerializeToString`` returns for the
same graph (the test suite checks that with the dev extra's ``onnx``).

Written: ModelProto (ir_version, producer_name, graph, opset_import),
OperatorSetIdProto, GraphProto (node, name, initializer, input, output), NodeProto
(input, output, op_type, attribute, domain), AttributeProto (name, f, i, ints, type),
TensorProto (dims, data_type, name, raw_data), ValueInfoProto, TypeProto.Tensor and
TensorShapeProto. Anything else is a ValueError, never silently dropped.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: TensorProto.DataType values of the element types we write.
FLOAT = 1
UINT8 = 2
INT8 = 3
INT32 = 6
INT64 = 7
_DATA_TYPES: dict[np.dtype[Any], int] = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.int8): INT8,
    np.dtype(np.int64): INT64,
}

#: AttributeProto.AttributeType values.
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7

_VARINT, _FIXED32, _LEN = 0, 5, 2

#: An attribute value: a float (written as float32), an int, or a list of ints.
AttrValue = float | int | Sequence[int]


@dataclass(frozen=True)
class Node:
    """One operator: ``outputs = op_type(*inputs, **attrs)``, from the default ONNX
    domain ("") or another one the model imports (e.g. onnxruntime's "com.microsoft")."""

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)
    domain: str = ""


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, element type (:data:`FLOAT`, :data:`INT64`) and
    shape, each dimension a size or a symbolic name."""

    name: str
    elem_type: int
    shape: tuple[int | str, ...]


@dataclass
class Model:
    """A single-graph ONNX model: the default domain at ``opset``, and each other domain
    its nodes use at the version ``opsets`` gives it."""

    name: str
    nodes: list[Node]
    initializers: dict[str, npt.NDArray[Any]]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    opset: int
    ir_version: int
    producer_name: str
    opsets: Mapping[str, int] = field(default_factory=dict)


def _varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 as its 64-bit two's complement (10 bytes)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _int(number: int, value: int) -> bytes:
    return _tag(number, _VARINT) + _varint(value)


def _len(number: int, payload: bytes) -> bytes:
    return _tag(number, _LEN) + _varint(len(payload)) + payload


def _str(number: int, value: str) -> bytes:
    return _len(number, value.encode("utf-8"))


def _msgs(number: int, messages: Iterable[bytes]) -> bytes:
    return b"".join(_len(number, m) for m in messages)


def _attribute(name: str, value: AttrValue) -> bytes:
    """AttributeProto: name = 1, f = 2, i = 3, ints = 8, type = 20."""
    head = _str(1, name)
    if isinstance(value, bool):
        raise ValueError(f"attribute {name}: bool is not an ONNX attribute type")
    if isinstance(value, int):
        return head + _int(3, value) + _int(20, _ATTR_INT)
    if isinstance(value, float):
        return head + _tag(2, _FIXED32) + struct.pack("<f", value) + _int(20, _ATTR_FLOAT)
    if isinstance(value, Sequence) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return head + b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)
    raise ValueError(f"attribute {name}: unsupported value {value!r} (float, int or ints)")


def _node(node: Node) -> bytes:
    """NodeProto: input = 1, output = 2, op_type = 4, attribute = 5 (sorted by name,
    as onnx.helper.make_node orders keyword attributes), domain = 7 (written only when
    not the default, as onnx.helper leaves it unset)."""
    return (
        b"".join(_str(1, i) for i in node.inputs)
        + b"".join(_str(2, o) for o in node.outputs)
        + _str(4, node.op_type)
        + _msgs(5, (_attribute(k, v) for k, v in sorted(node.attrs.items())))
        + (_str(7, node.domain) if node.domain else b"")
    )


def _tensor(name: str, array: npt.NDArray[Any]) -> bytes:
    """TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9 (little-endian)."""
    data_type = _DATA_TYPES.get(array.dtype.newbyteorder("="))
    if data_type is None:
        raise ValueError(f"initializer {name}: dtype {array.dtype} (float32, int8 or int64 only)")
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return (
        b"".join(_int(1, d) for d in array.shape)
        + _int(2, data_type)
        + _str(8, name)
        + _len(9, raw)
    )


def _value_info(info: TensorInfo) -> bytes:
    """ValueInfoProto{name = 1, type = 2: TypeProto{tensor_type = 1: {elem_type = 1,
    shape = 2: TensorShapeProto{dim = 1: {dim_value = 1 | dim_param = 2}}}}}."""
    dims = (_int(1, d) if isinstance(d, int) else _str(2, d) for d in info.shape)
    tensor_type = _int(1, info.elem_type) + _len(2, _msgs(1, dims))
    return _str(1, info.name) + _len(2, _len(1, tensor_type))


def serialize(model: Model) -> bytes:
    """The ModelProto bytes: ir_version = 1, producer_name = 2, graph = 7 (GraphProto:
    node = 1, name = 2, initializer = 5, input = 11, output = 12), opset_import = 8
    (OperatorSetIdProto: domain = 1, version = 2; the default domain first, then
    ``model.opsets`` in order). A node of a domain the model does not import is a
    ValueError: onnxruntime would refuse the model only when it loads it."""
    for node in model.nodes:
        if node.domain and node.domain not in model.opsets:
            raise ValueError(f"node {node.op_type}: domain {node.domain!r} is not imported")
    graph = (
        _msgs(1, (_node(n) for n in model.nodes))
        + _str(2, model.name)
        + _msgs(5, (_tensor(k, v) for k, v in model.initializers.items()))
        + _msgs(11, (_value_info(i) for i in model.inputs))
        + _msgs(12, (_value_info(o) for o in model.outputs))
    )
    opsets = [("", model.opset), *model.opsets.items()]
    return (
        _int(1, model.ir_version)
        + _str(2, model.producer_name)
        + _len(7, graph)
        + _msgs(8, (_str(1, domain) + _int(2, version) for domain, version in opsets))
    )


__all__ = [
    "FLOAT",
    "INT8",
    "INT32",
    "INT64",
    "AttrValue",
    "Model",
    "Node",
    "TensorInfo",
    "serialize",
]
