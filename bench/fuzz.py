"""Fuzz what reads the files we are given: seeded mutants (mutant ``i`` depends only on ``(seed, i)``), each
read as our code reads it in a forked child (10 CPU-s, a 60 s wall-clock backstop, 2 GiB); the baseline is
each unmutated file, which must load. Anything but loading or the documented refusal naming the file fails.

    python bench/fuzz.py --target checkpoints [--mutants 2400] [--seed 0] [--jobs 2] [--out FILE]
    python bench/fuzz.py --target image-headers [--mutants 4000] [--seed 0] [--jobs 2] [--out FILE]

``checkpoints``: NanoDet-Plus-m 320 weights (random, narrower) as the Lightning 1.4 release, our
``model_last.ckpt`` and ``save_pth`` lay them out; byte flips, truncations, pickle opcodes, values and
numbers, zip members; loaded as fine-tuning and a resume load them (or ``CheckpointError``).
``image-headers``: JPEG, PNG, BMP and WebP files; flips, truncations, inserted and deleted bytes, lengths
and header fields set to extremes; read by ``header_size``, ``jpeg_size``, ``image_size`` (or
``HeaderError`` / ``ImageReadError``). Prints the JSON report (counts, by_base, by_kind, failures).
"""

from __future__ import annotations

import argparse
import copy
import io
import pickletools
import random
import struct
import sys
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _common as c  # noqa: E402
from bench._common import LOADED, REFUSED, UNDOCUMENTED  # noqa: E402
from tests import crafted_pickles as cp  # noqa: E402

TARGETS = {"checkpoints": 2400, "image-headers": 4000}  # the default mutant count of each
CONFIG = REPO / "config" / "nanodet-plus-m_320.yml"
# Every tensor of the architecture at a narrower width: a quarter of the bytes to read per mutant,
# and byte flips land in the pickle and the zip more often than in weights.
NARROW = dict(backbone={"model_size": "0.5x"}, fpn={"in_channels": [48, 96, 192], "out_channels": 32})
NARROW |= dict(head={"input_channel": 32, "feat_channels": 32}, aux_head={"input_channel": 64, "feat_channels": 64})
CLASS_NAMES = ["person", "car", "dog"]
CKPT_KINDS = dict(  # mutation kind: weight
    flip=4, truncate=1, pickle_swap=2, pickle_opcode=2, pickle_insert=4, pickle_value=3, pickle_number=2, zip_member=3
)
GLOBAL_NAMES = [
    tuple(name.split(":"))
    for name in """numpy:dtype numpy:ndarray numpy._core.multiarray:scalar numpy.core.multiarray:scalar
    numpy._core.multiarray:_reconstruct numpy.core.multiarray:_reconstruct numpy.dtypes:ObjectDType
    numpy.dtypes:VoidDType numpy:frombuffer torch._utils:_rebuild_tensor_v2 torch._utils:_rebuild_parameter
    torch._utils:_rebuild_device_tensor_from_numpy torch._utils:_rebuild_meta_tensor_no_storage
    torch._utils:_rebuild_sparse_tensor torch._utils:_rebuild_qtensor torch._utils:_rebuild_wrapper_subclass
    torch._tensor:_rebuild_from_type_v2 torch:FloatStorage torch:Size torch:device collections:OrderedDict
    collections:Counter _codecs:encode builtins:bytearray builtins:set builtins:complex argparse:Namespace
    pytorch_lightning.callbacks.model_checkpoint:ModelCheckpoint pytorch_lightning.utilities.parsing:AttributeDict
    yacs.config:CfgNode os:system builtins:eval""".split()
]
DTYPE_CODES = "f8 f4 f2 i8 i4 u1 b1 c16 f16 O8 V8 V0 M8 m8 U4 S3 i3 f8,i4 (2,)f4".split() + [""]
ORDERS = ["<", ">", "|", "=", "x", ""]
FLAGS = [0, 0, 0, 1, 8, 16, 63, 0x7F, -1, 2**31 - 1]
NUMBERS = [0, 1, -1, 2, 7, 255, 256, 65535, 2**31 - 1, -(2**31), 2**20, 2**24, 624, 625, 5056]
OPCODES = b"(.N\x88\x89)]}t\x85\x86\x87aesuRb\x81Q02\x8f\x94io"  # argument-free ones, inserted
REPLACEMENTS = b"(.N\x88\x89)]}t\x85\x86\x87aesuRb\x81QKMJqhjrXUG\x8ac\x80"  # an opcode's new byte
ZIP_ACTIONS = ["drop", "cut", "grow", "garble", "rename", "duplicate", "compress", "swap", "byteorder", "version"]
IMAGE_KINDS = dict(flip=4, truncate=2, insert=1, delete=1, length=3, field=3)
EXTREMES = [0, 1, 2, 3, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@dataclass
class Record:
    index: int
    base: str
    kind: str
    what: str
    result: c.ChildResult


def model_config():
    from nanodet.config import load_config

    return load_config(CONFIG).merged({"model": {"arch": NARROW}})


def checkpoint_bases(cfg, model, work: Path) -> dict[str, bytes]:
    """The three files every checkpoint mutant comes from."""
    import torch

    from nanodet.engine.build import build_optimizer
    from nanodet.engine.checkpointer import save_training_checkpoint
    from nanodet.weights.checkpoint import save_pth
    from tests.old_checkpoints import save_lightning_checkpoint

    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    paths = {name: work / f"base_{name}.ckpt" for name in ("release", "training", "pth")}
    save_lightning_checkpoint(model.state_dict(), paths["release"], "1.4.9")
    optimizer = build_optimizer(cfg, model)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 0.01
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cpu", enabled=True)  # the state a GPU run writes
    extra = {"best_epoch": 2, "class_names": CLASS_NAMES}
    save_training_checkpoint(paths["training"], model, copy.deepcopy(model), optimizer, scaler, 3, 30, 0.4125, extra)
    save_pth(model, paths["pth"], inference_only=True, class_names=CLASS_NAMES)
    return {name: path.read_bytes() for name, path in paths.items()}


def load_like_our_code(path: Path, model) -> None:
    """Every reading of a weights file our code makes, the file read once: fine-tuning's, and for a
    training layout what ``Trainer.resume`` reads and converts (counters, RNG states, the scaler's)."""
    import torch

    from nanodet.engine.checkpointer import REQUIRED_KEYS, check_resumable, restore_rng_states
    from nanodet.weights.checkpoint import extract_state_dict, file_class_names, load_weights, read_checkpoint

    ckpt = read_checkpoint(path)
    extract_state_dict(ckpt, str(path))
    file_class_names(ckpt)
    load_weights(model, path, strict=False, class_names=CLASS_NAMES, ckpt=ckpt)
    if all(key in ckpt for key in REQUIRED_KEYS):
        resumed = check_resumable(ckpt, path)
        int(resumed["epoch"]), int(resumed["global_step"])
        float(resumed.get("best_metric", -1.0)), int(resumed.get("best_epoch", -1))
        if "rng_states" in resumed:
            restore_rng_states(resumed["rng_states"])
        if resumed.get("scaler"):
            torch.amp.GradScaler("cpu", enabled=True).load_state_dict(resumed["scaler"])


@dataclass
class Base:
    name: str
    data: bytes
    entries: dict[str, bytes]  # zip members in order
    pkl_name: str
    ops: list[tuple[int, int, str, object]]  # (start, end, opcode name, argument) in data.pkl
    pkl_span: tuple[int, int]  # where data.pkl's bytes lie in the file
    structure: list[tuple[int, int]]  # local headers, central directory, end record

    @classmethod
    def parse(cls, name: str, data: bytes) -> Base:
        entries = cp.members(data)
        pkl_name = cp.pickle_member(entries)
        pkl = entries[pkl_name]
        found = list(pickletools.genops(pkl))
        ends = [pos for _, _, pos in found[1:]] + [len(pkl)]
        ops = [(pos, end, op.name, arg) for (op, arg, pos), end in zip(found, ends)]
        structure, pkl_span = [], (0, 0)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos, central = archive.infolist(), archive.start_dir
        for info in infos:
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
            body = info.header_offset + 30 + name_len + extra_len
            structure.append((info.header_offset, body))
            if info.filename == pkl_name:
                pkl_span = (body, body + info.file_size)
        structure.append((central, len(data)))
        return cls(name, data, entries, pkl_name, ops, pkl_span, structure)


def _number(rng: random.Random) -> int:
    return rng.choice(NUMBERS) if rng.random() < 0.7 else rng.randint(-(2**31), 2**31 - 1)


def _random_bytes(rng: random.Random, most: int = 24) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, most)))


def _random_dtype(rng: random.Random) -> bytes:
    code = rng.choice(DTYPE_CODES)
    if rng.random() < 0.5:
        return cp.dtype(code)
    order = rng.choice(ORDERS)
    names = rng.choice([None, None, ("a",), ("a", "b")])
    fields = rng.choice([None, None, {"a": ("O8", 0)}, {"a": ("f8", 0)}, {"a": ("f8", 4)}])
    state = (order, None, names, fields, rng.choice([-1, -1, 0, 1, 8, 2**31 - 1]), rng.choice([-1, 1, 8]))
    state += (rng.choice(FLAGS),)
    align = rng.choice([cp.FALSE, cp.TRUE, cp.integer(0)])
    return cp.dtype(code, state, align=align, copy=rng.choice([cp.TRUE, cp.FALSE]))


def _value_snippet(rng: random.Random) -> bytes:
    """A pickled value: a hostile numpy value, a plain or odd numpy value, or a plain value."""
    choice = rng.randrange(9)
    if choice == 3:
        shape = tuple(rng.choice([0, 1, 2, 3, 2**31 - 1, -1]) for _ in range(rng.randint(0, 3)))
        code, data = rng.choice(DTYPE_CODES), _random_bytes(rng, 48)
        state = None if rng.random() < 0.5 else (rng.choice(ORDERS), None, None, None, -1, -1, rng.choice(FLAGS))
        return cp.reconstructed_array(code, shape, data, state)
    scalar = lambda: cp.glob(f"{rng.choice(['numpy._core', 'numpy.core'])}.multiarray", "scalar")  # noqa: E731
    return {
        0: lambda: rng.choice(list(cp.HOSTILE_VALUES.values()))(),
        1: lambda: _random_dtype(rng),
        2: lambda: scalar() + _random_dtype(rng) + cp.raw(_random_bytes(rng, 20)) + cp.TUPLE2 + cp.REDUCE,
        4: lambda: cp.glob("numpy", "ndarray") + cp.EMPTY_TUPLE + _random_dtype(rng) + cp.raw(_random_bytes(rng, 16)),
        5: lambda: cp.floating(rng.choice([float("nan"), float("inf"), -1.0, 1e308, 0.5])),
        6: lambda: cp.text(rng.choice(["", "x", "model.backbone.conv1.0.weight", "\udcff"])),
        7: lambda: rng.choice([cp.NONE, cp.TRUE, cp.FALSE, cp.EMPTY_DICT, cp.EMPTY_LIST, cp.EMPTY_TUPLE]),
        8: lambda: cp.integer(_number(rng)),
    }[choice]() + (cp.TUPLE3 + cp.REDUCE if choice == 4 else b"")


def _opcode_snippet(rng: random.Random) -> bytes:
    """One opcode with a plausible argument, a global, or a whole value."""
    choice = rng.randrange(4)
    if choice == 0:
        return cp.glob(*rng.choice(GLOBAL_NAMES))
    if choice == 1:
        return _value_snippet(rng)
    if choice == 2:
        return bytes([rng.choice(OPCODES)])
    # every candidate is drawn (in this order), then one is chosen
    one = [b"K" + bytes([rng.getrandbits(8)]), b"M" + struct.pack("<H", rng.getrandbits(16))]
    one += [b"J" + struct.pack("<i", _number(rng)), b"q" + bytes([rng.getrandbits(8)])]
    one += [b"h" + bytes([rng.getrandbits(8)]), b"j" + struct.pack("<I", rng.getrandbits(32))]
    one += [b"r" + struct.pack("<I", rng.getrandbits(32))]
    one += [b"X" + struct.pack("<I", rng.choice([0, 3, 2**31, 2**32 - 1])) + b"abc"]
    one += [b"U" + bytes([rng.randint(0, 255)]) + _random_bytes(rng, 8)]
    one += [b"\x8a" + bytes([rng.randint(0, 255)]) + _random_bytes(rng, 8), b"\x80" + bytes([rng.getrandbits(8)])]
    return rng.choice(one + [b"G" + _random_bytes(rng, 8).ljust(8, b"\0")])


def _mutate_pickle(base: Base, kind: str, rng: random.Random) -> tuple[bytes, str]:
    pkl, ops = base.entries[base.pkl_name], base.ops
    if kind == "pickle_swap":
        a, b = sorted(rng.sample(range(len(ops)), 2))
        (sa, ea), (sb, eb) = ops[a][:2], ops[b][:2]
        return pkl[:sa] + pkl[sb:eb] + pkl[ea:sb] + pkl[sa:ea] + pkl[eb:], f"swap {ops[a][2]}@{sa} {ops[b][2]}@{sb}"
    if kind == "pickle_opcode":
        start = ops[rng.randrange(len(ops))][0]
        new = rng.choice(REPLACEMENTS)
        return pkl[:start] + bytes([new]) + pkl[start + 1 :], f"opcode@{start}->{chr(new)!r}"
    if kind == "pickle_insert":
        start = ops[rng.randrange(len(ops))][0]
        snippet = b"".join(_opcode_snippet(rng) for _ in range(rng.choice([1, 1, 1, 2, 3])))
        return pkl[:start] + snippet + pkl[start:], f"insert {len(snippet)} bytes@{start}"
    if kind == "pickle_value":
        plain = ("BINFLOAT", "BININT", "BININT1", "BININT2", "BINUNICODE", "NONE", "NEWTRUE", "NEWFALSE")
        start, end, name, _ = rng.choice([op for op in ops if op[2] in plain])
        return pkl[:start] + _value_snippet(rng) + pkl[end:], f"value {name}@{start}"
    numbers = [op for op in ops if op[2] in ("BININT", "BININT1", "BININT2", "LONG1")]  # pickle_number
    start, end, name, _ = rng.choice(numbers)
    return pkl[:start] + cp.integer(_number(rng)) + pkl[end:], f"number {name}@{start}"


def _damage_zip(base: Base, rng: random.Random) -> tuple[bytes, str]:
    entries, names = dict(base.entries), list(base.entries)
    storage = [n for n in names if "/data/" in n]
    target = rng.choice([base.pkl_name, *rng.sample(names, 1), *(rng.sample(storage, 1) if storage else [])])
    action, compress = rng.choice([*ZIP_ACTIONS, "empty"]), None
    if action == "drop":
        del entries[target]
    elif action == "cut":
        entries[target] = entries[target][: rng.randrange(max(1, len(entries[target])))]
    elif action == "grow":
        entries[target] += _random_bytes(rng, 64) * rng.choice([1, 100])
    elif action == "garble":
        garbled = bytes(rng.getrandbits(8) for _ in range(min(len(entries[target]), 4096)))
        entries[target] = garbled + entries[target][4096:]
    elif action == "rename":
        entries = {(k + rng.choice(["0", "/", "x"]) if k == target else k): v for k, v in entries.items()}
    elif action == "duplicate":
        extra = io.BytesIO(cp.write_zip(entries))
        with zipfile.ZipFile(extra, "a") as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns of a duplicate name; the duplicate is the point
            archive.writestr(target, _random_bytes(rng, 64))
        return extra.getvalue(), f"zip duplicate {target}"
    elif action == "compress":
        compress = {target: zipfile.ZIP_DEFLATED}
    elif action == "swap" and len(storage) >= 2:
        a, b = rng.sample(storage, 2)
        entries[a], entries[b], target = entries[b], entries[a], f"{a}<->{b}"
    elif action in ("byteorder", "version"):
        key = next((n for n in names if n.endswith(f"/{action}")), names[0])
        choices = (
            [b"big", b"", b"middle", b"little\n"] if action == "byteorder" else [b"999\n", b"", b"x", b"1\n", b"-1\n"]
        )
        entries[key] = rng.choice(choices)
    else:
        entries[target] = b""
    return cp.write_zip(entries, compress), f"zip {action} {target}"


def checkpoint_mutant(bases: list[Base], seed: int, index: int) -> tuple[str, str, str, bytes]:
    """(base name, kind, what was done, bytes) of mutant ``index``."""
    rng = random.Random(f"{seed}:{index}")
    base = bases[index % len(bases)]
    kind = rng.choices(list(CKPT_KINDS), weights=list(CKPT_KINDS.values()))[0]
    data = bytearray(base.data)
    if kind == "flip":
        where = rng.choice(["pickle", "pickle", "structure", "anywhere"])
        spans = {"pickle": [base.pkl_span], "structure": base.structure, "anywhere": [(0, len(data))]}[where]
        flips = []
        for _ in range(rng.choice([1, 1, 2, 4, 8])):
            start, end = rng.choice(spans)
            pos = rng.randrange(start, max(start + 1, end))
            data[pos] ^= rng.randint(1, 255)
            flips.append(pos)
        return base.name, kind, f"flip {where} {flips}", bytes(data)
    if kind == "truncate":
        cut = rng.randrange(len(data) - 4096, len(data)) if rng.random() < 0.5 else rng.randrange(len(data))
        return base.name, kind, f"truncate at {cut} of {len(data)}", bytes(data[:cut])
    if kind == "zip_member":
        damaged, what = _damage_zip(base, rng)
        return base.name, kind, what, damaged
    pkl, what = _mutate_pickle(base, kind, rng)
    return base.name, kind, what, cp.write_zip({**base.entries, base.pkl_name: pkl})


def make_bases() -> dict[str, bytes]:
    """The image files every header mutant comes from."""
    import cv2

    from tests import test_image_header as samples

    row = (samples.W * 3 + 3) & ~3  # a BMP with the 12-byte BITMAPCOREHEADER (OS/2), 24 bits per pixel
    core = struct.pack("<IHHHH", 12, samples.W, samples.H, 1, 24)
    offset = 14 + len(core)
    core_bmp = b"BM" + struct.pack("<IHHI", offset + row * samples.H, 0, 0, offset) + core + bytes(row * samples.H)
    return {
        "jpeg-exif": samples.jpeg_with_exif(6, True),
        "jpeg-progressive": samples.jpeg_with_exif(3, False, params=(cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        "png-exif": samples.png_with_exif(8),
        "bmp-info": samples.encoded(".bmp"),
        "bmp-core": core_bmp,
        "webp-lossy": samples.encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 80)),
        "webp-lossless": samples.encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101)),
        "webp-extended": samples.webp_extended(6, lossless=False),
    }


def read_like_our_code(path: Path) -> None:
    """Every size reading of an image our code makes."""
    import numpy as np

    from nanodet.data.image_header import HeaderError, header_size
    from nanodet.data.image_io import image_size, jpeg_size

    data = path.read_bytes()
    try:
        header_size(io.BytesIO(data))
    except HeaderError:
        pass
    if data:
        jpeg_size(np.frombuffer(data, np.uint8))
    image_size(path)


def _header_fields(name: str, data: bytes) -> list[tuple[int, str]]:
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


def image_mutant(bases: dict[str, bytes], seed: int, index: int) -> tuple[str, str, str, bytes]:
    """(base name, kind, what was done, bytes) of mutant ``index``."""
    rng = random.Random(f"{seed}:{index}")
    name = list(bases)[index % len(bases)]
    data = bytearray(bases[name])
    kind = rng.choices(list(IMAGE_KINDS), weights=list(IMAGE_KINDS.values()))[0]
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
        pos, count = rng.randrange(head), rng.randint(1, 16)
        return name, kind, f"delete {count} at {pos}", bytes(data[:pos] + data[pos + count :])
    offset, fmt = rng.choice(_header_fields(name, bytes(data)))
    size = struct.calcsize(fmt)
    value = rng.choice(EXTREMES) % (1 << (8 * size))
    if fmt[-1].islower() and value >= 1 << (8 * size - 1):
        value -= 1 << (8 * size)
    struct.pack_into(fmt, data, offset, value)
    return name, kind, f"{kind} {fmt}@{offset}={value}", bytes(data)


def _target(target: str, work: Path, seed: int):
    """(unmutated files, facts, the documented error, mutant(i), read(path)) of ``target``; one thread:
    nothing for a forked child to inherit half-started."""
    if target == "image-headers":
        import cv2

        from nanodet.data.image_io import ImageReadError

        cv2.setNumThreads(1)
        raw = make_bases()
        facts = {"bases": {name: {"bytes": len(data)} for name, data in raw.items()}}
        return raw, facts, ImageReadError, partial(image_mutant, raw, seed), read_like_our_code
    import torch

    from nanodet.errors import CheckpointError
    from nanodet.model import build_model

    torch.set_num_threads(1)
    cfg = model_config()
    model = build_model(cfg.model.arch)
    raw = checkpoint_bases(cfg, model, work)
    parsed = [Base.parse(name, data) for name, data in raw.items()]
    params = sum(p.numel() for p in model.parameters())
    facts = {
        "model": f"NanoDet-Plus-m 320, narrow (0.5x backbone, 32-channel neck and head), {params} params",
        "bases": {b.name: {"bytes": len(b.data), "pickle_opcodes": len(b.ops)} for b in parsed},
    }
    return (
        raw,
        facts,
        CheckpointError,
        partial(checkpoint_mutant, parsed, seed),
        partial(load_like_our_code, model=model),
    )


def fuzz(
    count: int, seed=0, wall_s=60.0, cpu_s=10, jobs=1, target="checkpoints", progress=False
) -> tuple[list[Record], dict]:
    """Read mutants ``0 .. count-1`` of ``target`` (``jobs`` children at a time): the records in order,
    and facts (``bases``: each base's size and how its unmutated file did)."""
    checkpoints, limits, records = target == "checkpoints", c.Limits(wall_s, cpu_s), []
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
        work = Path(tmp)
        raw, facts, documented, mutant, read = _target(target, work, seed)

        def files(items):  # each file written just before its child starts, removed once it ended
            for key, data in items:
                path = work / f"mutant_{key[0]}{'.ckpt' if checkpoints else ''}"
                path.write_bytes(data)
                yield (*key, path), partial(read, path)

        controls = (((i, name, "", ""), data) for i, (name, data) in enumerate(raw.items()))
        for (_, name, _, _, path), result in c.run_children(files(controls), (documented,), limits, jobs):
            header_read = not checkpoints and result.outcome == LOADED  # the control: every base reads
            facts["bases"][name]["unmutated"] = "read" if header_read else result.outcome
            path.unlink()
        mutants = (((i, *m[:3]), m[3]) for i in range(count) for m in [mutant(i)])
        for (index, base, kind, what, path), result in c.run_children(files(mutants), (documented,), limits, jobs):
            path.unlink()
            named = result.detail.startswith(f"CheckpointError: {path}") if checkpoints else str(path) in result.detail
            if result.outcome == REFUSED and not named:
                result.outcome, result.detail = UNDOCUMENTED, f"does not name the file: {result.detail}"
            records.append(Record(index, base, kind, what, result))
            if progress and result.outcome not in (LOADED, REFUSED):
                c.log(f"mutant {index} ({base}, {what}): {result.outcome}: {result.detail}")
            if progress and len(records) % 100 == 0:
                c.log(f"{len(records)} mutants, {dict(Counter(r.result.outcome for r in records))}")
    return sorted(records, key=lambda r: r.index), facts


def summary(target: str, records: list[Record], facts: dict, seed: int, seconds: float, limits: dict) -> dict:
    images = target == "image-headers"
    label = lambda outcome: "read" if images and outcome == LOADED else outcome  # noqa: E731 - a header is read
    counted = lambda rows: dict(Counter(label(r.result.outcome) for r in rows))  # noqa: E731
    bad = [r for r in records if r.result.outcome not in (LOADED, REFUSED)]
    walls, counts = sorted(r.result.wall_s for r in records), counted(records)
    kinds = IMAGE_KINDS if images else CKPT_KINDS
    report = {"benchmark": f"fuzz_{target.replace('-', '_')}", "seed": seed}
    report |= {} if images else {"model": facts["model"]}
    report |= {
        "mutants": len(records),
        "counts": {label(o): counts.get(label(o), 0) for o in c.OUTCOMES},
        "by_base": {name: counted(r for r in records if r.base == name) for name in facts["bases"]},
        "by_kind": {kind: counted(r for r in records if r.kind == kind) for kind in kinds},
        "bases": facts["bases"],
        "failures": [
            {"index": r.index, "base": r.base, "kind": r.kind, "what": r.what}
            | {"outcome": r.result.outcome, "detail": r.result.detail}
            for r in bad[:20]
        ],
    }
    if images:
        report["failure_kinds"] = dict(Counter(r.result.detail.split(":")[0] for r in bad))
    else:  # a refusal's message without the file name and the specifics
        refused = [r.result.detail for r in records if r.result.outcome == REFUSED]
        report["refusal_reasons_top"] = Counter(
            d.split(": ", 2)[-1].split("(")[0].strip()[:80] for d in refused
        ).most_common(12)
    walls_ms = {"median": round(walls[len(walls) // 2] * 1000, 1), "max": round(walls[-1] * 1000, 1)} if walls else {}
    return report | {
        "limits": limits,
        "child_wall_ms": walls_ms,
        "child_cpu_s_max": round(max((r.result.cpu_s for r in records), default=0.0), 2),
        "child_rss_growth_mib_max": round(max((r.result.rss_growth_mib for r in records), default=0.0), 1),
        "children_over_10_s_wall": sum(r.result.wall_s > 10 for r in records),
        "seconds": round(seconds, 1),
        "host": c.host_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=list(TARGETS), required=True)
    parser.add_argument("--mutants", type=int, help="default: 2400 checkpoints, 4000 image headers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="children at a time")
    parser.add_argument("--out", type=Path, help="default: bench/results/fuzz_<target>.json")
    args = parser.parse_args()
    began = time.monotonic()
    records, facts = fuzz(
        args.mutants or TARGETS[args.target], args.seed, jobs=args.jobs, target=args.target, progress=True
    )
    limits = {"address_space_gib": 2, "cpu_s": 10, "wall_s": 60.0, "jobs": args.jobs}
    report = summary(args.target, records, facts, args.seed, time.monotonic() - began, limits)
    c.print_report(report, args.out or c.RESULTS / f"fuzz_{args.target.replace('-', '_')}.json")


if __name__ == "__main__":
    main()
