"""The files an ONNX model loads beside itself (external data), read from the file's protobuf bytes
with no ONNX package: the runtime extra has only onnxruntime. A model saved with external data
(torch.onnx.export's default, onnx.save_model(save_as_external_data=True)) names each file in the
"location" entry of a tensor's external_data, in initializers and in constant attributes of nodes,
subgraphs included."""
from __future__ import annotations

from ..errors import ModelError

# Field numbers of onnx.proto3.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_MAX_DEPTH = 32


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes, start: int, end: int):
    """(field number, wire type, value) of every field in buf[start:end]: the number for a varint,
    (start, end) for a length-delimited field, None for fixed-size ones."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield field, wire, value
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            yield field, wire, None
        elif wire == 2:
            size, i = _varint(buf, i)
            if i + size > end:
                raise ValueError("truncated field")
            yield field, wire, (i, i + size)
            i += size
        else:
            raise ValueError(f"wire type {wire}")
    if i != end:
        raise ValueError("truncated message")


def _messages(buf: bytes, start: int, end: int):
    """(field number, start, end) of every length-delimited field in buf[start:end]."""
    for field, wire, value in _fields(buf, start, end):
        if wire == 2:
            yield field, value[0], value[1]


def _tensor(buf, s, e, found):
    for field, a, b in _messages(buf, s, e):
        if field == _TENSOR_EXTERNAL_DATA:
            entry = {f: buf[x:y] for f, x, y in _messages(buf, a, b)}
            if entry.get(_ENTRY_KEY) == b"location" and _ENTRY_VALUE in entry:
                found.add(entry[_ENTRY_VALUE].decode("utf-8", "replace"))


def _sparse(buf, s, e, found):
    for field, a, b in _messages(buf, s, e):
        if field in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(buf, a, b, found)


def _node(buf, s, e, found, depth):
    for field, a, b in _messages(buf, s, e):
        if field != _NODE_ATTRIBUTE:
            continue
        for attr, x, y in _messages(buf, a, b):
            if attr in (_ATTR_T, _ATTR_TENSORS):
                _tensor(buf, x, y, found)
            elif attr in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
                _sparse(buf, x, y, found)
            elif attr in (_ATTR_G, _ATTR_GRAPHS):
                _graph(buf, x, y, found, depth + 1)


def _graph(buf, s, e, found, depth):
    if depth > _MAX_DEPTH:
        raise ValueError("subgraphs nested too deep")
    for field, a, b in _messages(buf, s, e):
        if field == _GRAPH_INITIALIZER:
            _tensor(buf, a, b, found)
        elif field == _GRAPH_SPARSE_INITIALIZER:
            _sparse(buf, a, b, found)
        elif field == _GRAPH_NODE:
            _node(buf, a, b, found, depth)


def external_files(data: bytes, where: str = "the ONNX file") -> list[str]:
    """The files (as written in the model, relative to it) whose bytes the model loads, sorted."""
    found: set[str] = set()
    try:
        for field, a, b in _messages(data, 0, len(data)):
            if field == _MODEL_GRAPH:
                _graph(data, a, b, found, 0)
            elif field == _MODEL_FUNCTIONS:
                for sub, x, y in _messages(data, a, b):
                    if sub == _FUNCTION_NODE:
                        _node(data, x, y, found, 1)
    except (ValueError, IndexError) as exc:
        raise ModelError(f"{where} is not a readable ONNX model ({exc})") from None
    return sorted(found)


_NODE_OP_TYPE, _TENSOR_DATA_TYPE = 4, 2


def _varints(buf: bytes, start: int, end: int) -> dict[int, int]:
    """The varint fields of the message buf[start:end] (last value of each field)."""
    return {field: value for field, wire, value in _fields(buf, start, end) if wire == 0}


def graph_summary(data: bytes, where: str = "the ONNX file") -> tuple[set[str], set[int]]:
    """(op types of the main graph's nodes, data types of its initializers: onnx.TensorProto codes)."""
    ops: set[str] = set()
    dtypes: set[int] = set()
    try:
        for field, a, b in _messages(data, 0, len(data)):
            if field != _MODEL_GRAPH:
                continue
            for sub, x, y in _messages(data, a, b):
                if sub == _GRAPH_NODE:
                    for f, p, q in _messages(data, x, y):
                        if f == _NODE_OP_TYPE:
                            ops.add(data[p:q].decode("utf-8", "replace"))
                elif sub == _GRAPH_INITIALIZER:
                    code = _varints(data, x, y).get(_TENSOR_DATA_TYPE)
                    if code is not None:
                        dtypes.add(code)
    except (ValueError, IndexError) as exc:
        raise ModelError(f"{where} is not a readable ONNX model ({exc})") from None
    return ops, dtypes
