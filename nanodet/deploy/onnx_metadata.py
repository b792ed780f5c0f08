"""The ``metadata_props`` of an ONNX file, read straight from its protobuf bytes.

``import onnx`` costs about 1.4 s on these CPUs (its ml_dtypes extension), a third of a
``nanodet detect`` start-up, only to read a few strings (the model spec, the export key).
An ONNX file is one ``ModelProto`` message: a sequence of (field number, wire type, value)
records. The reader walks its top-level records, seeks over the large ones (the graph holds
the weights) and decodes field 14, ``metadata_props``: repeated ``StringStringEntryProto``
messages of ``key`` (field 1) and ``value`` (field 2).
"""

from __future__ import annotations

from typing import BinaryIO

GRAPH_FIELD = 7
METADATA_FIELD = 14
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class NotOnnx(ValueError):
    """The bytes are not a protobuf ``ModelProto`` with a graph."""


def _varint(read_byte) -> int | None:
    """A base-128 varint; None at the end of the input before its first byte."""
    value = shift = 0
    while True:
        byte = read_byte()
        if byte is None:
            if shift == 0:
                return None
            raise NotOnnx("truncated varint")
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise NotOnnx("varint longer than 10 bytes")


def _records(data: bytes):
    """(field, wire type, value) records of a small message held in memory."""
    pos = 0

    def read_byte() -> int | None:
        nonlocal pos
        if pos >= len(data):
            return None
        pos += 1
        return data[pos - 1]

    while (tag := _varint(read_byte)) is not None:
        field, wire = tag >> 3, tag & 7
        if wire == VARINT:
            yield field, wire, _varint(read_byte)
        elif wire == LENGTH_DELIMITED:
            size = _varint(read_byte)
            if size is None or pos + size > len(data):
                raise NotOnnx("a field runs past the end of its message")
            yield field, wire, data[pos : pos + size]
            pos += size
        elif wire in (FIXED64, FIXED32):
            pos += 8 if wire == FIXED64 else 4
        else:
            raise NotOnnx(f"wire type {wire} is not used by ONNX")


def _entry(data: bytes) -> tuple[str, str]:
    strings = {field: value for field, wire, value in _records(data) if wire == LENGTH_DELIMITED}
    return strings.get(1, b"").decode("utf-8"), strings.get(2, b"").decode("utf-8")


def read_onnx_metadata(f: BinaryIO) -> dict[str, str]:
    """The metadata of the ONNX model in the open binary file ``f``; raises :class:`NotOnnx`
    when the file is no ONNX model (no graph, an invalid record, or truncated)."""
    f.seek(0, 2)
    end = f.tell()
    f.seek(0)

    def read_byte() -> int | None:
        byte = f.read(1)
        return byte[0] if byte else None

    metadata: dict[str, str] = {}
    has_graph = False
    while (tag := _varint(read_byte)) is not None:
        field, wire = tag >> 3, tag & 7
        if wire == VARINT:
            _varint(read_byte)
        elif wire == LENGTH_DELIMITED:
            size = _varint(read_byte)
            if size is None or f.tell() + size > end:
                raise NotOnnx(f"field {field} runs past the end of the file")
            if field == METADATA_FIELD:
                key, value = _entry(f.read(size))
                metadata[key] = value
            else:
                has_graph |= field == GRAPH_FIELD
                f.seek(size, 1)
        elif wire in (FIXED64, FIXED32):
            if f.seek(8 if wire == FIXED64 else 4, 1) > end:
                raise NotOnnx(f"field {field} runs past the end of the file")
        else:
            raise NotOnnx(f"wire type {wire} is not used by ONNX")
    if not has_graph:
        raise NotOnnx("no graph")
    return metadata
