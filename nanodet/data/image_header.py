"""Image sizes from file headers, without decoding the pixels.

A 1080p JPEG takes ~15 ms to decode and ~20 µs to read the size from its frame header;
over 100k images that is half an hour against a few seconds. The size returned is the
size the decoder (:func:`nanodet.data.image_io.read_image`, OpenCV) will produce: when an
EXIF orientation of 5–8 (a quarter turn) is present where OpenCV honours it (JPEG APP1,
PNG ``eXIf``, WebP ``EXIF``), width and height swap.

Formats read from their header: JPEG (SOF), PNG (IHDR), BMP (DIB header), WebP (VP8,
VP8L, VP8X). Anything else (TIFF, PPM, …) is decoded once in grayscale, which costs what
it costs today. A header can lie (a truncated file has a valid header); whoever decodes the
image later checks the size it gets.

A broken or truncated header is a :class:`HeaderError`, never an ``IndexError`` or a
``struct.error``: every field is read only after checking that its bytes are there
(``bench/fuzz.py --target image-headers`` feeds the parser damaged headers of every kind).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOS, _EOI, _APP1 = 0xDA, 0xD9, 0xE1
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
_ORIENTATION_TAG = 0x0112
MAX_EXIF_BYTES = 1 << 20  # an EXIF block is read whole only up to this size


class HeaderError(ValueError):
    """The header is not one this module reads, or it is broken."""


@dataclass(frozen=True)
class HeaderSize:
    """The stored pixel grid and the EXIF orientation (1 when absent or not honoured)."""

    width: int
    height: int
    orientation: int = 1

    @property
    def decoded(self) -> tuple[int, int]:
        """(width, height) after the decoder applies the orientation (5–8 turn a quarter)."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def header_size(stream: BinaryIO) -> HeaderSize:
    """The size in the header of an image stream positioned at its start; HeaderError
    when the format is not one of JPEG, PNG, BMP, WebP or its header is broken."""
    head = stream.read(32)
    if head[:2] == b"\xff\xd8":
        return _jpeg(stream, 2)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(stream, head)
    if head[:2] == b"BM":
        return _bmp(stream, head)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(stream, head)
    raise HeaderError("not a JPEG, PNG, BMP or WebP header")


def _jpeg(stream: BinaryIO, pos: int) -> HeaderSize:
    """Walk the marker segments up to the start of scan: the frame header (SOF) gives the
    size, an ``Exif`` APP1 segment the orientation. The file is read in pieces of 16 KiB or
    more (one read covers the headers of most files)."""
    stream.seek(0)
    data = bytearray(stream.read(16384))  # grown in place: a long run of segments costs linear time

    def have(end: int) -> bool:
        nonlocal data
        while len(data) < end:
            more = stream.read(max(16384, end - len(data)))
            if not more:
                return False
            data += more
        return True

    size, orientation = None, 1
    while have(pos + 2):
        if data[pos] != 0xFF:
            raise HeaderError("JPEG: marker expected")
        code = data[pos + 1]
        if code == 0xFF:  # a fill byte
            pos += 1
            continue
        if code in _STANDALONE:
            pos += 2
            continue
        if code in (_SOS, _EOI) or not have(pos + 4):
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            raise HeaderError("JPEG: bad segment length")
        if code in _SOF_MARKERS and size is None:
            if not have(pos + 9):
                break
            size = (int.from_bytes(data[pos + 7 : pos + 9], "big"), int.from_bytes(data[pos + 5 : pos + 7], "big"))
        elif code == _APP1 and orientation == 1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            if have(pos + 2 + length):
                orientation = exif_orientation(data[pos + 10 : pos + 2 + length])
        pos += 2 + length
    if size is None or not all(size):
        raise HeaderError("JPEG: no frame header")
    return HeaderSize(size[0], size[1], orientation)


def _png(stream: BinaryIO, head: bytes) -> HeaderSize:
    """IHDR gives the size; an ``eXIf`` chunk before the image data gives the orientation."""
    if head[12:16] != b"IHDR":
        raise HeaderError("PNG: IHDR is not the first chunk")
    _need(head, 24, "PNG")
    width, height = struct.unpack(">II", head[16:24])
    orientation = 1
    stream.seek(8)
    while True:
        raw = stream.read(8)
        if len(raw) < 8:
            break
        length, kind = int.from_bytes(raw[:4], "big"), raw[4:8]
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"eXIf" and length <= MAX_EXIF_BYTES:
            orientation = exif_orientation(stream.read(length))
            stream.seek(4, 1)
        else:
            stream.seek(length + 4, 1)  # data and CRC
    if not width or not height:
        raise HeaderError("PNG: zero size")
    return HeaderSize(width, height, orientation)


def _bmp(stream: BinaryIO, head: bytes) -> HeaderSize:
    """BITMAPCOREHEADER (12 bytes: 16-bit sizes) or a later one (signed 32-bit sizes; a
    negative height is a top-down image). BMP has no orientation."""
    _need(head, 18, "BMP")
    dib = int.from_bytes(head[14:18], "little")
    _need(head, 22 if dib == 12 else 26, "BMP")
    if dib == 12:
        width, height = struct.unpack("<HH", head[18:22])
    elif dib >= 40:
        width, height = struct.unpack("<ii", head[18:26])
    else:
        raise HeaderError(f"BMP: unknown DIB header of {dib} bytes")
    if width <= 0 or height == 0:
        raise HeaderError("BMP: bad size")
    return HeaderSize(width, abs(height))


def _webp(stream: BinaryIO, head: bytes) -> HeaderSize:
    """The first chunk: lossy ``VP8 `` (14-bit sizes in the key frame header), lossless
    ``VP8L`` (14-bit sizes minus one after the 0x2f signature) or extended ``VP8X`` (24-bit
    canvas sizes minus one; its ``EXIF`` chunk gives the orientation)."""
    kind = head[12:16]
    _need(head, 30 if kind in (b"VP8 ", b"VP8X") else 25, "WebP")
    if kind == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            raise HeaderError("WebP: bad VP8 start code")
        width, height = struct.unpack("<HH", head[26:30])
        return _nonzero(width & 0x3FFF, height & 0x3FFF)
    if kind == b"VP8L":
        if head[20] != 0x2F:
            raise HeaderError("WebP: bad VP8L signature")
        bits = int.from_bytes(head[21:25], "little")
        return _nonzero((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return HeaderSize(width, height, _webp_exif_orientation(stream))
    raise HeaderError(f"WebP: unknown first chunk {kind!r}")


def _webp_exif_orientation(stream: BinaryIO) -> int:
    stream.seek(12)
    while True:
        raw = stream.read(8)
        if len(raw) < 8:
            return 1
        kind, length = raw[:4], int.from_bytes(raw[4:8], "little")
        if kind == b"EXIF" and length <= MAX_EXIF_BYTES:
            body = stream.read(length)
            return exif_orientation(body[6:] if body[:6] == b"Exif\x00\x00" else body)
        stream.seek(length + (length & 1), 1)  # chunks are padded to even sizes


def _need(head: bytes, size: int, kind: str) -> None:
    """The first ``size`` bytes of the file hold the fields about to be read."""
    if len(head) < size:
        raise HeaderError(f"{kind}: header cut short ({len(head)} of {size} bytes)")


def _nonzero(width: int, height: int) -> HeaderSize:
    if not width or not height:
        raise HeaderError("zero size")
    return HeaderSize(width, height)


def exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block; 1 when absent,
    unreadable or outside 1–8 (the decoder then leaves the image as stored)."""
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for i in range(count):
            tag, kind, _n = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * i)
            if tag == _ORIENTATION_TAG:
                if kind != 3:  # SHORT
                    return 1
                (value,) = struct.unpack_from(order + "H", tiff, ifd + 2 + 12 * i + 8)
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1
