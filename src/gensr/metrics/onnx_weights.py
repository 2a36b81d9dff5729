"""Read an ONNX file and cut sub-models out of it, without the `onnx` package.

Only what the DNSMOS speed-up needs: the node list (op type, inputs, outputs, attributes),
the initializer tensors, and `submodel()`, which re-serializes a slice of the graph (nodes and
weights copied byte for byte) with new, possibly dynamic, input/output shapes. ONNX files are protobuf; the wire format is small
enough to walk directly, which avoids adding a dependency (and its protobuf pin) to the venv.
Field numbers follow onnx/onnx.proto (ModelProto.graph=7, GraphProto.node=1,
GraphProto.initializer=5, TensorProto dims=1 data_type=2 float_data=4 int64_data=7 name=8
raw_data=9, NodeProto input=1 output=2 name=3 op_type=4 attribute=5).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 11: np.float64}


@dataclass
class OnnxNode:
    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, object] = field(default_factory=dict)
    raw: bytes = b""


@dataclass
class OnnxGraph:
    nodes: list[OnnxNode]
    initializers: dict[str, np.ndarray]
    raw_initializers: dict[str, bytes] = field(default_factory=dict)
    ir_version: int = 0
    raw_opsets: list[bytes] = field(default_factory=list)


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _packed_ints(value, wire: int) -> list[int]:
    if wire != 2:
        return [_signed(value)]
    out, i = [], 0
    while i < len(value):
        v, i = _varint(value, i)
        out.append(_signed(v))
    return out


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    dtype, name, raw, floats, ints = None, "", None, [], []
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _packed_ints(value, wire)
        elif number == 2:
            dtype = value
        elif number == 4:
            floats += list(np.frombuffer(value, "<f4")) if wire == 2 else [struct.unpack("<f", value)[0]]
        elif number == 7:
            ints += _packed_ints(value, wire)
        elif number == 8:
            name = bytes(value).decode()
        elif number == 9:
            raw = bytes(value)
    np_dtype = _DTYPES[dtype]
    if raw is not None:
        array = np.frombuffer(raw, np.dtype(np_dtype).newbyteorder("<")).astype(np_dtype)
    elif floats:
        array = np.asarray(floats, np_dtype)
    else:
        array = np.asarray(ints, np_dtype)
    return name, array.reshape(dims)


def _attribute(buf: memoryview) -> tuple[str, object]:
    name, value = "", None
    for number, wire, raw in _fields(buf):
        if number == 1:
            name = bytes(raw).decode()
        elif number == 2:
            value = struct.unpack("<f", raw)[0]
        elif number == 3:
            value = _signed(raw)
        elif number == 4:
            value = bytes(raw).decode()
        elif number == 5:
            value = _tensor(raw)[1]
        elif number == 8:
            value = (value or []) + _packed_ints(raw, wire)
    return name, value


def _node(buf: memoryview) -> OnnxNode:
    node = OnnxNode(op_type="", name="", inputs=[], outputs=[], raw=bytes(buf))
    for number, _, value in _fields(buf):
        if number == 1:
            node.inputs.append(bytes(value).decode())
        elif number == 2:
            node.outputs.append(bytes(value).decode())
        elif number == 3:
            node.name = bytes(value).decode()
        elif number == 4:
            node.op_type = bytes(value).decode()
        elif number == 5:
            key, attr = _attribute(value)
            node.attributes[key] = attr
    return node


def read_onnx(path: str | Path) -> OnnxGraph:
    """Nodes and initializers of the ONNX model at `path`."""
    buf = memoryview(Path(path).read_bytes())
    graph = OnnxGraph(nodes=[], initializers={})
    graphs = []
    for number, _, value in _fields(buf):
        if number == 1:
            graph.ir_version = value
        elif number == 7:
            graphs.append(value)
        elif number == 8:
            graph.raw_opsets.append(bytes(value))
    if not graphs:
        raise ValueError(f"{path}: no graph found; is this an ONNX model file?")
    for number, _, value in _fields(graphs[0]):
        if number == 1:
            graph.nodes.append(_node(value))
        elif number == 5:
            name, array = _tensor(value)
            graph.initializers[name] = array
            graph.raw_initializers[name] = bytes(value)
    return graph


# writing ----------------------------------------------------------------------------------
def _key(number: int, wire: int) -> bytes:
    return _encode_varint((number << 3) | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def _value_info(name: str, shape: Sequence[int | str]) -> bytes:
    dims = b"".join(
        _bytes_field(1, _key(1, 0) + _encode_varint(d) if isinstance(d, int) else _bytes_field(2, d.encode()))
        for d in shape
    )
    tensor_type = _key(1, 0) + _encode_varint(1) + _bytes_field(2, dims)  # elem_type FLOAT, shape
    return _bytes_field(1, name.encode()) + _bytes_field(2, _bytes_field(1, tensor_type))


def submodel(
    graph: OnnxGraph,
    nodes: Sequence[OnnxNode],
    inputs: dict[str, Sequence[int | str]],
    outputs: dict[str, Sequence[int | str]],
) -> bytes:
    """Serialized ModelProto running `nodes` (verbatim) from `inputs` to `outputs`; shapes may
    use names (str) for dynamic dimensions. Initializers the nodes use are copied verbatim."""
    used = {name for node in nodes for name in node.inputs if name in graph.raw_initializers}
    body = b"".join(_bytes_field(1, node.raw) for node in nodes)
    body += _bytes_field(2, b"submodel")
    body += b"".join(_bytes_field(5, graph.raw_initializers[name]) for name in sorted(used))
    body += b"".join(_bytes_field(11, _value_info(name, shape)) for name, shape in inputs.items())
    body += b"".join(_bytes_field(12, _value_info(name, shape)) for name, shape in outputs.items())
    model = _key(1, 0) + _encode_varint(graph.ir_version)
    model += b"".join(_bytes_field(8, opset) for opset in graph.raw_opsets)
    return model + _bytes_field(7, body)
