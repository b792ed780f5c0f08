"""The labelled set's embeddings file a training task leaves for mining
(executor/labelled_embeddings.py): read back exactly, and any damaged or crafted file refused
with a warning, never an exception, a pickle load or a large allocation."""

from __future__ import annotations

import io
import logging
import pickle
import tracemalloc

import numpy as np
import pytest

from executor.labelled_embeddings import MAX_ROWS, read_labelled_embeddings
from nanodet.mining.diversity import EMBED_DIMS


def npy_bytes(array: np.ndarray, version=None) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=True)
    return buffer.getvalue()


def valid(rows: int = 5) -> np.ndarray:
    return np.random.default_rng(rows).normal(size=(rows, EMBED_DIMS)).astype(np.float16)


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_a_written_file_reads_back_exactly(tmp_path, version):
    path = tmp_path / "labelled_embeddings.npy"
    path.write_bytes(npy_bytes(valid(), version))
    assert np.array_equal(read_labelled_embeddings(path), valid())
    path.write_bytes(npy_bytes(np.zeros((0, EMBED_DIMS), np.float16)))
    assert read_labelled_embeddings(path).shape == (0, EMBED_DIMS)


class Boom:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "not read"),
        (b"not numpy at all", "not read"),
        (npy_bytes(valid().astype(np.float32)), "float16 [M, 64] expected, found float32"),
        (npy_bytes(valid()[:, :10].copy()), "float16 [M, 64] expected"),
        (npy_bytes(valid()[0]), "float16 [M, 64] expected"),
        (npy_bytes(np.asfortranarray(valid())), "float16 [M, 64] expected"),
        (npy_bytes(np.array([Boom()], dtype=object)), "found object"),
        (npy_bytes(valid())[:-2], "bytes of data for 5 rows"),
        (npy_bytes(valid()) + b"\0\0", "bytes of data for 5 rows"),
        (npy_bytes(np.full((2, EMBED_DIMS), np.inf, np.float16)), "not finite"),
        (pickle.dumps(valid()), "not read"),
    ],
)
def test_a_damaged_file_is_refused_with_a_warning(tmp_path, caplog, capsys, content, reason):
    path = tmp_path / "labelled_embeddings.npy"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="executor.labelled_embeddings"):
        assert read_labelled_embeddings(path) is None
    assert f"{path}: not read" in caplog.text and reason in caplog.text
    assert "unpickled!" not in capsys.readouterr().out


def test_a_crafted_shape_allocates_nothing(tmp_path, caplog):
    """A header claiming 10^12 rows (128 TB) or just over the cap is refused before any read."""
    header = npy_bytes(valid(1)).replace(b"(1, 64)", b"(1000000000000, 64)")
    for rows, text in ((1_000_000_000_000, header), (MAX_ROWS + 1, None)):
        path = tmp_path / f"{rows}.npy"
        content = text or npy_bytes(valid(1)).replace(b"(1, 64)", f"({rows}, 64)".encode())
        path.write_bytes(content)
        tracemalloc.start()
        try:
            assert read_labelled_embeddings(path) is None
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, peak
    assert f"more than {MAX_ROWS}" in caplog.text


def test_fuzzed_files_are_read_or_refused(tmp_path):
    """2,000 mutations of a valid file (bytes flipped, cut, repeated, the header's digits
    changed): each reads as a [M, 64] float16 array or is refused, never raises."""
    base = npy_bytes(valid())
    rng = np.random.default_rng(0)
    path = tmp_path / "labelled_embeddings.npy"
    outcomes = {"read": 0, "refused": 0}
    for _ in range(2000):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            kind, at = rng.integers(4), int(rng.integers(len(base)))
            if kind == 3:  # a digit or a character of the header
                at = int(rng.integers(10, base.index(b"\n") + 1))
            if at >= len(data):  # cut before
                continue
            if kind == 0:
                data[at] = int(rng.integers(256))
            elif kind == 1:
                del data[at:]
            elif kind == 2:
                data[at:at] = data[at : at + int(rng.integers(1, 16))]
            else:
                data[at] = ord(str(rng.integers(10)))
        path.write_bytes(bytes(data))
        got = read_labelled_embeddings(path)
        outcomes["read" if got is not None else "refused"] += 1
        if got is not None:
            assert got.dtype == np.float16 and got.ndim == 2 and got.shape[1] == EMBED_DIMS
    assert outcomes["read"] > 50 and outcomes["refused"] > 500, outcomes
