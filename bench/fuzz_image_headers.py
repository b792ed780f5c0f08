"""Fuzz the image-header parser (``nanodet/data/image_header.py``): seeded mutants of JPEG, PNG,
BMP and WebP files, each read as our code reads an image's size, in its own forked child.

Bases: JPEG (baseline with an Exif orientation, progressive), PNG (with an ``eXIf`` chunk),
BMP (the 40-byte info header and the 12-byte core header), WebP (lossy, lossless, extended with
EXIF). Mutations: byte flips (in the first 64 bytes, in the header segments, anywhere),
truncations (mostly inside the header), inserted and deleted bytes, a segment or chunk length
set to an extreme, and header fields (sizes, DIB size, offsets) set to extremes.

"Read" is ``header_size`` on the bytes (HeaderError is its documented refusal, which sends
the caller to a decode), ``jpeg_size`` (None when unreadable) and ``image_size`` on the file
(ImageReadError is its documented error). Anything else coming out (IndexError, struct.error
...), a signal, more than 10 s of CPU (60 s of wall clock), or 2 GiB is a failure. Mutant ``i`` depends only on
``(seed, i)``.

    python bench/fuzz_image_headers.py [--mutants 4000] [--seed 0] [--out bench/results/fuzz_image_headers.json]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fuzz_children import LOADED, OUTCOMES, REFUSED, ChildResult, Limits, cpu_model, run_children  # noqa: E402
from nanodet.data.image_header import HeaderError, header_size  # noqa: E402
from nanodet.data.image_io import ImageReadError, image_size, jpeg_size  # noqa: E402
from tests import test_image_header as samples  # noqa: E402

RESULT = REPO / "bench" / "results" / "fuzz_image_headers.json"
KINDS = {"flip": 4, "truncate": 2, "insert": 1, "delete": 1, "length": 3, "field": 3}
EXTREMES = [0, 1, 2, 3, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def core_bmp(width: int = samples.W, height: int = samples.H) -> bytes:
    """A BMP with the 12-byte BITMAPCOREHEADER (OS/2), 24 bits per pixel."""
    row = (width * 3 + 3) & ~3
    pixels = bytes(row * height)
    header = struct.pack("<IHHHH", 12, width, height, 1, 24)
    offset = 14 + len(header)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + header + pixels


def make_bases() -> dict[str, bytes]:
    progressive = (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    return {
        "jpeg-exif": samples.jpeg_with_exif(6, True),
        "jpeg-progressive": samples.jpeg_with_exif(3, False, params=progressive),
        "png-exif": samples.png_with_exif(8),
        "bmp-info": samples.encoded(".bmp"),
        "bmp-core": core_bmp(),
        "webp-lossy": samples.encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 80)),
        "webp-lossless": samples.encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101)),
        "webp-extended": samples.webp_extended(6, lossless=False),
    }


def read_like_our_code(path: Path) -> None:
    """Every size reading of an image our code makes (see the module docstring)."""
    data = path.read_bytes()
    try:
        header_size(io.BytesIO(data))
    except HeaderError:
        pass
    if data:
        jpeg_size(np.frombuffer(data, np.uint8))
    image_size(path)


def _length_fields(name: str, data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of the segment and chunk lengths and header fields of ``data``."""
    fields: list[tuple[int, str]] = []
    if name.startswith("jpeg"):
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF:
            fields.append((pos + 2, ">H"))
            if data[pos + 1] in (0xC0, 0xC2):
                fields += [(pos + 5, ">H"), (pos + 7, ">H")]
            if data[pos + 1] == 0xDA:
                break
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    elif name.startswith("png"):
        pos = 8
        fields += [(16, ">I"), (20, ">I")]
        while pos + 8 <= len(data):
            fields.append((pos, ">I"))
            pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    elif name.startswith("bmp"):
        fields += [(2, "<I"), (10, "<I"), (14, "<I"), (18, "<i"), (22, "<i"), (18, "<H"), (20, "<H")]
    else:
        fields += [(4, "<I"), (26, "<H"), (28, "<H"), (21, "<I"), (24, "<I"), (27, "<I")]
        pos = 12
        while pos + 8 <= len(data):
            fields.append((pos + 4, "<I"))
            length = int.from_bytes(data[pos + 4 : pos + 8], "little")
            pos += 8 + length + (length & 1)
    return [(off, fmt) for off, fmt in fields if off + struct.calcsize(fmt) <= len(data)]


def mutant(bases: dict[str, bytes], seed: int, index: int) -> tuple[str, str, str, bytes]:
    """(base name, kind, what was done, bytes) of mutant ``index``: a function of (seed, index)."""
    rng = random.Random(f"{seed}:{index}")
    name = list(bases)[index % len(bases)]
    data = bytearray(bases[name])
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    head = min(len(data), rng.choice([32, 64, 256]))
    if kind == "flip":
        span = rng.choice([head, head, len(data)])
        flips = [rng.randrange(span) for _ in range(rng.choice([1, 1, 2, 4]))]
        for pos in flips:
            data[pos] ^= rng.randint(1, 255)
        return name, kind, f"flip {flips}", bytes(data)
    if kind == "truncate":
        cut = rng.randrange(head) if rng.random() < 0.7 else rng.randrange(len(data))
        return name, kind, f"truncate at {cut}", bytes(data[:cut])
    if kind == "insert":
        pos = rng.randrange(head)
        extra = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
        return name, kind, f"insert {len(extra)} at {pos}", bytes(data[:pos] + extra + data[pos:])
    if kind == "delete":
        pos = rng.randrange(head)
        count = rng.randint(1, 16)
        return name, kind, f"delete {count} at {pos}", bytes(data[:pos] + data[pos + count :])
    fields = _length_fields(name, bytes(data))
    offset, fmt = rng.choice(fields)
    size = struct.calcsize(fmt)
    value = rng.choice(EXTREMES) % (1 << (8 * size))
    if fmt[-1].islower() and value >= 1 << (8 * size - 1):
        value -= 1 << (8 * size)
    struct.pack_into(fmt, data, offset, value)
    return name, kind, f"{kind} {fmt}@{offset}={value}", bytes(data)


@dataclass
class Record:
    index: int
    base: str
    kind: str
    what: str
    result: ChildResult


def fuzz(
    count: int,
    seed: int = 0,
    wall_s: float = 60.0,
    cpu_s: int = 10,
    progress: bool = False,
    start: int = 0,
    jobs: int = 1,
) -> tuple[list[Record], dict]:
    """Read mutants ``start .. start+count-1`` (``jobs`` children at a time); the records in
    order and whether every base reads."""
    cv2.setNumThreads(1)
    bases = make_bases()
    limits = Limits(wall_s, cpu_s)
    records: list[Record] = []
    controls: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="fuzz_img_") as tmp:

        def files(items):  # each file written just before its child starts, removed once it ended
            for key, data in items:
                path = Path(tmp) / f"mutant_{key[0]}"
                path.write_bytes(data)
                yield (*key, path), lambda p=path: read_like_our_code(p)

        unmutated = (((i, name, "", ""), data) for i, (name, data) in enumerate(bases.items()))
        for (_, name, _, _, path), result in run_children(files(unmutated), (ImageReadError,), limits, jobs):
            controls[name] = result.outcome
            path.unlink()

        def mutants():
            for i in range(start, start + count):
                base, kind, what, data = mutant(bases, seed, i)
                yield (i, base, kind, what), data

        for (index, base, kind, what, path), result in run_children(files(mutants()), (ImageReadError,), limits, jobs):
            path.unlink()
            if result.outcome == REFUSED and str(path) not in result.detail:
                result.outcome, result.detail = "undocumented", f"does not name the file: {result.detail}"
            records.append(Record(index, base, kind, what, result))
            if progress and result.outcome not in (LOADED, REFUSED):
                print(f"mutant {index} ({base}, {what}): {result.outcome}: {result.detail}", file=sys.stderr)
    records.sort(key=lambda r: r.index)
    unmutated = {name: "read" if controls[name] == LOADED else controls[name] for name in bases}
    return records, {name: {"bytes": len(data), "unmutated": unmutated[name]} for name, data in bases.items()}


def summary(records: list[Record], bases: dict, seed: int, seconds: float, limits: dict) -> dict:
    from bench._common import host_info

    def label(outcome: str) -> str:  # a header is read, not loaded
        return "read" if outcome == LOADED else outcome

    counts = Counter(label(r.result.outcome) for r in records)
    bad = [r for r in records if r.result.outcome not in (LOADED, REFUSED)]
    walls = sorted(r.result.wall_s for r in records)
    return {
        "benchmark": "fuzz_image_headers",
        "seed": seed,
        "mutants": len(records),
        "counts": {label(o): counts.get(label(o), 0) for o in OUTCOMES},
        "by_base": {name: dict(Counter(label(r.result.outcome) for r in records if r.base == name)) for name in bases},
        "by_kind": {kind: dict(Counter(label(r.result.outcome) for r in records if r.kind == kind)) for kind in KINDS},
        "bases": bases,
        "failures": [
            {"index": r.index, "base": r.base, "what": r.what, "outcome": r.result.outcome, "detail": r.result.detail}
            for r in bad[:20]
        ],
        "failure_kinds": dict(Counter(r.result.detail.split(":")[0] for r in bad)),
        "limits": limits,
        "child_wall_ms": {"median": round(walls[len(walls) // 2] * 1000, 1), "max": round(walls[-1] * 1000, 1)}
        if walls
        else {},
        "child_cpu_s_max": round(max((r.result.cpu_s for r in records), default=0.0), 2),
        "child_rss_growth_mib_max": round(max((r.result.rss_growth_mib for r in records), default=0.0), 1),
        "children_over_10_s_wall": sum(r.result.wall_s > 10 for r in records),
        "seconds": round(seconds, 1),
        "host": {**host_info(), "cpu_model": cpu_model()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="the first mutant's index (to replay one)")
    parser.add_argument("--wall-s", type=float, default=60.0, help="wall-clock backstop (a sleeping child)")
    parser.add_argument("--cpu-s", type=int, default=10, help="the time limit: CPU seconds (SIGXCPU)")
    parser.add_argument("--jobs", type=int, default=1, help="children at a time")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    start = time.monotonic()
    records, bases = fuzz(args.mutants, args.seed, args.wall_s, args.cpu_s, True, args.start, args.jobs)
    limits = {"address_space_gib": 2, "cpu_s": args.cpu_s, "wall_s": args.wall_s, "jobs": args.jobs}
    report = summary(records, bases, args.seed, time.monotonic() - start, limits)
    text = json.dumps(report, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
