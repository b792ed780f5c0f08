"""Hand-assembled pickles inside PyTorch's zip layout: the hostile checkpoints that no
``torch.save`` writes (a numpy dtype whose object flag is cleared, an ndarray over file bytes),
for the tests and for ``bench/fuzz.py --target checkpoints``.

Only opcodes the weights-only unpickler reads are used (protocol 2: ``GLOBAL``, ``REDUCE``,
``BUILD``, ``BINUNICODE`` ...); bytes are ``_codecs.encode(latin-1 text)``, as numpy pickles them.
"""

from __future__ import annotations

import io
import pickletools
import struct
import zipfile
from pathlib import Path

PROTO2 = b"\x80\x02"
MARK, STOP, NONE, TRUE, FALSE = b"(", b".", b"N", b"\x88", b"\x89"
TUPLE, TUPLE1, TUPLE2, TUPLE3, EMPTY_TUPLE = b"t", b"\x85", b"\x86", b"\x87", b")"
EMPTY_DICT, EMPTY_LIST, SETITEM, SETITEMS, APPEND = b"}", b"]", b"s", b"u", b"a"
REDUCE, BUILD, NEWOBJ = b"R", b"b", b"\x81"


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def floating(value: float) -> bytes:
    return b"G" + struct.pack(">d", value)


def raw(data: bytes) -> bytes:
    """``bytes`` as numpy pickles them under protocol 2."""
    return glob("_codecs", "encode") + text(data.decode("latin-1")) + text("latin1") + TUPLE2 + REDUCE


def mapping(items: list[tuple[bytes, bytes]]) -> bytes:
    """A dict of already-assembled keys and values."""
    return EMPTY_DICT + MARK + b"".join(k + v for k, v in items) + SETITEMS


def dtype(code: str, state: tuple | None = None, align: bytes = FALSE, copy: bytes = TRUE) -> bytes:
    """``numpy.dtype(code, align, copy)`` then BUILD ``state`` (numpy's own state of a plain
    dtype when None): ``(3, order, subarray, names, fields, elsize, alignment, flags)``."""
    order, subarray, names, fields, elsize, alignment, flags = state or ("<", None, None, None, -1, -1, 0)
    built = MARK + integer(3) + text(order)
    built += _plain(subarray) + _plain(names) + _plain(fields)
    built += integer(elsize) + integer(alignment) + integer(flags) + TUPLE
    return glob("numpy", "dtype") + text(code) + align + copy + TUPLE3 + REDUCE + built + BUILD


def _plain(value) -> bytes:
    """None, a tuple of names, or a fields dict {name: (dtype code, offset)}, assembled."""
    if value is None:
        return NONE
    if isinstance(value, tuple):
        return MARK + b"".join(text(v) for v in value) + TUPLE
    return mapping([(text(k), dtype(c) + integer(off) + TUPLE2) for k, (c, off) in value.items()])


# The object dtype with its "holds objects" flags (63) cleared: numpy then treats its items,
# pointers, as plain bytes a file may supply.
OBJECT_FLAGS_CLEARED = ("|", None, None, None, -1, -1, 0)
POINTER = b"A" * 8  # a non-canonical address: dereferencing it is a SIGSEGV


def object_array_over_file_bytes() -> bytes:
    """``numpy.ndarray((), object dtype with flags cleared, buffer=file bytes)``: the issue's case."""
    return glob("numpy", "ndarray") + EMPTY_TUPLE + dtype("O8", OBJECT_FLAGS_CLEARED) + raw(POINTER) + TUPLE3 + REDUCE


def object_scalar_over_file_bytes(package: str = "numpy._core") -> bytes:
    """``scalar(object dtype with flags cleared, pointer bytes)``."""
    return glob(f"{package}.multiarray", "scalar") + dtype("O8", OBJECT_FLAGS_CLEARED) + raw(POINTER) + TUPLE2 + REDUCE


def reconstructed_array(
    code: str,
    shape: tuple[int, ...],
    data: bytes,
    state: tuple | None = None,
    fortran: bool = False,
    package: str = "numpy._core",
) -> bytes:
    """``_reconstruct(ndarray, (0,), b'b')`` then BUILD ``(1, shape, dtype, fortran, data)``."""
    shell = glob(f"{package}.multiarray", "_reconstruct") + glob("numpy", "ndarray")
    shell += integer(0) + TUPLE1 + raw(b"b") + TUPLE3 + REDUCE
    dims = MARK + b"".join(integer(n) for n in shape) + TUPLE
    order = TRUE if fortran else FALSE
    return shell + MARK + integer(1) + dims + dtype(code, state) + order + raw(data) + TUPLE + BUILD


def structured_with_object_field() -> bytes:
    """A void dtype whose state gives it an object field and object flags."""
    return dtype("V8", ("|", None, ("a",), {"a": ("O8", 0)}, 8, 1, 63))


def object_dtype_by_class_name() -> bytes:
    """The object dtype through its numpy >= 1.25 class name, as the old allow-list admitted."""
    return glob("numpy.dtypes", "ObjectDType") + EMPTY_TUPLE + NEWOBJ


HOSTILE_VALUES = {
    "ndarray-over-file-bytes": object_array_over_file_bytes,
    "scalar-over-file-bytes": object_scalar_over_file_bytes,
    "reconstructed-object-array": lambda: reconstructed_array("O8", (), POINTER, OBJECT_FLAGS_CLEARED),
    "structured-object-field": structured_with_object_field,
    "object-dtype-class": object_dtype_by_class_name,
}


def checkpoint_pickle(value: bytes) -> bytes:
    """A resumable-looking top level whose ``best_metric`` is ``value``."""
    items = [(text("epoch"), integer(1)), (text("global_step"), integer(1)), (text("best_metric"), value)]
    return PROTO2 + mapping(items) + STOP


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def pickle_member(names: list[str] | dict[str, bytes]) -> str:
    return next(name for name in names if name.endswith("/data.pkl"))


def write_zip(entries: dict[str, bytes], compress: dict[str, int] | None = None) -> bytes:
    """A zip of ``entries`` in order (stored, or compressed as ``compress`` says)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data, compress_type=(compress or {}).get(name, zipfile.ZIP_STORED))
    return out.getvalue()


def with_pickle(checkpoint: bytes, pkl: bytes) -> bytes:
    """``checkpoint`` (a ``torch.save`` zip) with its ``data.pkl`` replaced by ``pkl``."""
    entries = members(checkpoint)
    entries[pickle_member(entries)] = pkl
    return write_zip(entries)


def torch_zip(pkl: bytes, records: dict[str, bytes] | None = None, archive: str = "archive") -> bytes:
    """PyTorch's zip layout around ``pkl`` (storages as ``data/<key>`` records)."""
    entries = {f"{archive}/data.pkl": pkl, f"{archive}/byteorder": b"little", f"{archive}/version": b"3\n"}
    entries |= {f"{archive}/data/{key}": data for key, data in (records or {}).items()}
    return write_zip(entries)


def replace_float(pkl: bytes, value: float, replacement: bytes) -> bytes:
    """``pkl`` with the one ``BINFLOAT value`` opcode swapped for ``replacement`` (a pickled value)."""
    spans = [pos for op, arg, pos in pickletools.genops(pkl) if op.name == "BINFLOAT" and arg == value]
    if len(spans) != 1:
        raise ValueError(f"{len(spans)} BINFLOAT {value} opcodes in the pickle, expected one")
    return pkl[: spans[0]] + replacement + pkl[spans[0] + 9 :]


def hostile_training_checkpoint(good: Path, out: Path, value: bytes, marker: float) -> Path:
    """A real training checkpoint ``good``, written with ``best_metric=marker``, whose best
    metric is replaced by the pickled ``value``: everything else is as our trainer wrote it, so
    a resume reaches ``float(best_metric)`` unless the file is refused first."""
    entries = members(good.read_bytes())
    name = pickle_member(entries)
    entries[name] = replace_float(entries[name], marker, value)
    out.write_bytes(write_zip(entries))
    return out


def with_top_level_item(checkpoint: bytes, key: str, value: bytes) -> bytes:
    """``checkpoint`` (a ``torch.save`` zip of a dict) with ``key: value`` added to its top-level
    dict (``SETITEM`` just before the final ``STOP``, where the dict is alone on the stack)."""
    entries = members(checkpoint)
    name = pickle_member(entries)
    if not entries[name].endswith(STOP):
        raise ValueError("the pickle does not end with STOP")
    entries[name] = entries[name][:-1] + text(key) + value + SETITEM + STOP
    return write_zip(entries)
