"""Image sizes read from headers equal the sizes the decoder produces (EXIF turns included)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from nanodet.data.image_header import HeaderError, header_size
from nanodet.data.image_io import ImageReadError, image_size, read_image

W, H = 50, 30  # not square, so a quarter turn shows


def picture(width: int = W, height: int = H) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 3, : width // 2] = (255, 128, 0)
    return image


def encoded(ext: str, image: np.ndarray | None = None, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(ext, picture() if image is None else image, list(params))
    assert ok
    return data.tobytes()


def exif_block(orientation: int, little_endian: bool) -> bytes:
    """A TIFF-structured EXIF block whose IFD0 holds an unrelated tag, then Orientation."""
    e = "<" if little_endian else ">"
    head = (b"II" if little_endian else b"MM") + struct.pack(e + "HI", 42, 8)
    make = struct.pack(e + "HHI", 0x010F, 2, 4) + b"cam\x00"  # Make = "cam", inline
    turn = struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return head + struct.pack(e + "H", 2) + make + turn + struct.pack(e + "I", 0)


def jpeg_with_exif(orientation: int, little_endian: bool, params: tuple[int, ...] = (), pad: int = 0) -> bytes:
    """A JPEG with an Exif APP1 segment (and ``pad`` bytes of APP2 segments before it)."""
    jpg = encoded(".jpg", params=params)
    block = b"Exif\x00\x00" + exif_block(orientation, little_endian)
    app1 = b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block
    filler = b""
    while len(filler) < pad:
        chunk = b"ICC_PROFILE\x00" + bytes(60000)
        filler += b"\xff\xe2" + struct.pack(">H", len(chunk) + 2) + chunk
    return jpg[:2] + filler + app1 + jpg[2:]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_exif(orientation: int) -> bytes:
    png = encoded(".png")
    return png[:33] + png_chunk(b"eXIf", exif_block(orientation, True)) + png[33:]  # after IHDR


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 12
    while pos < len(data):
        kind, length = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return chunks


def riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def webp_extended(orientation: int, lossless: bool) -> bytes:
    """An extended (VP8X) WebP with an EXIF chunk after the image."""
    simple = encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101 if lossless else 80))
    flags = bytes([0x08, 0, 0, 0])  # EXIF present
    vp8x = flags + (W - 1).to_bytes(3, "little") + (H - 1).to_bytes(3, "little")
    body = b"WEBP" + riff_chunk(b"VP8X", vp8x) + b"".join(riff_chunk(k, b) for k, b in webp_chunks(simple))
    body += riff_chunk(b"EXIF", exif_block(orientation, False))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def decoded_size(path: Path) -> tuple[int, int]:
    image = read_image(path)
    return image.shape[1], image.shape[0]


def check(tmp_path: Path, name: str, data: bytes) -> tuple[int, int]:
    path = tmp_path / name
    path.write_bytes(data)
    size = image_size(path)
    assert size == decoded_size(path), name
    return size


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("little_endian", [True, False])
def test_jpeg_exif_orientations(tmp_path, orientation, little_endian):
    size = check(tmp_path, "a.jpg", jpeg_with_exif(orientation, little_endian))
    assert size == ((H, W) if orientation >= 5 else (W, H))


def test_jpeg_progressive_and_header_beyond_64k(tmp_path):
    """A progressive frame (SOF2), and an Exif segment after 120 kB of ICC profile segments."""
    progressive = (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert check(tmp_path, "p.jpg", jpeg_with_exif(6, True, params=progressive)) == (H, W)
    assert check(tmp_path, "big.jpg", jpeg_with_exif(8, False, pad=120_000)) == (H, W)
    assert check(tmp_path, "plain.jpg", encoded(".jpg")) == (W, H)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_png_exif_orientations(tmp_path, orientation):
    size = check(tmp_path, "a.png", png_with_exif(orientation))
    assert size == ((H, W) if orientation >= 5 else (W, H))


def test_png_kinds(tmp_path):
    gray16 = (picture()[:, :, 0].astype(np.uint16)) * 257
    assert check(tmp_path, "g16.png", encoded(".png", gray16)) == (W, H)
    rgba = cv2.cvtColor(picture(), cv2.COLOR_BGR2BGRA)
    assert check(tmp_path, "rgba.png", encoded(".png", rgba)) == (W, H)


def test_bmp(tmp_path):
    assert check(tmp_path, "a.bmp", encoded(".bmp")) == (W, H)
    assert check(tmp_path, "g.bmp", encoded(".bmp", picture()[:, :, 0])) == (W, H)
    data = bytearray(encoded(".bmp"))
    struct.pack_into("<i", data, 22, -H)  # stored top-down
    assert check(tmp_path, "top_down.bmp", bytes(data)) == (W, H)


@pytest.mark.parametrize("quality", [80, 101], ids=["lossy", "lossless"])
def test_webp_simple(tmp_path, quality):
    assert check(tmp_path, "a.webp", encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, quality))) == (W, H)


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("lossless", [False, True])
def test_webp_extended_with_exif(tmp_path, orientation, lossless):
    size = check(tmp_path, "a.webp", webp_extended(orientation, lossless))
    assert size == ((H, W) if orientation >= 5 else (W, H))


def test_other_formats_through_a_decode(tmp_path):
    assert check(tmp_path, "a.tiff", encoded(".tiff")) == (W, H)
    assert check(tmp_path, "a.ppm", encoded(".ppm")) == (W, H)


def test_files_that_are_no_images(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "folder.jpg").mkdir()
    for name, reason in [("empty.jpg", "empty"), ("text.jpg", "not a decodable"), ("folder.jpg", "regular file")]:
        with pytest.raises(ImageReadError, match=reason) as err:
            image_size(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(ImageReadError, match="cannot read"):
        image_size(tmp_path / "absent.jpg")


def test_a_header_claiming_too_many_pixels_is_refused(tmp_path):
    data = bytearray(encoded(".png"))
    struct.pack_into(">II", data, 16, 100_000, 100_000)
    (tmp_path / "huge.png").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="too large"):
        image_size(tmp_path / "huge.png")


def test_a_truncated_file_keeps_its_header_size(tmp_path):
    """The header survives truncation: the size is known, the decode later tells the truth."""
    data = encoded(".png", picture(400, 300))
    (tmp_path / "cut.png").write_bytes(data[:200])
    assert image_size(tmp_path / "cut.png") == (400, 300)
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "cut.png")


# --- damaged headers --------------------------------------------------------------------


def _bases() -> dict[str, bytes]:
    from bench.fuzz import make_bases

    return make_bases()


@pytest.mark.parametrize("name", sorted(_bases()))
def test_every_truncation_of_a_header_is_a_header_error_or_a_size(name):
    """Cut after every byte of the first 80: the parser says HeaderError (the caller then
    decodes, which reports the file) or gives a size, never IndexError or struct.error (BMP, PNG
    and WebP cut inside their first 30 bytes raised both before)."""
    data = _bases()[name]
    outcomes = set()
    for cut in range(min(len(data), 80) + 1):
        try:
            size = header_size(io.BytesIO(data[:cut]))
            outcomes.add("size")
            assert size.width > 0 and size.height > 0
        except HeaderError:
            outcomes.add("refused")
    assert "refused" in outcomes  # the file's first bytes are no header


def test_fuzzed_headers_give_only_the_documented_errors():
    """300 seeded mutants of JPEG, PNG, BMP and WebP files (the first 300 of
    bench/fuzz.py --target image-headers's run), each read in a forked child: a size, HeaderError from the
    parser, ImageReadError naming the file from image_size; nothing else, no signal."""
    from bench.fuzz import fuzz

    records, facts = fuzz(300, seed=0, wall_s=300.0, cpu_s=30, jobs=2, target="image-headers")
    bases = facts["bases"]
    assert {b["unmutated"] for b in bases.values()} == {"read"}
    failures = [
        (r.index, r.base, r.what, r.result.detail) for r in records if r.result.outcome not in ("loaded", "refused")
    ]
    assert not failures
    assert {r.result.outcome for r in records} == {"loaded", "refused"}
    assert {r.base for r in records} == set(bases)
