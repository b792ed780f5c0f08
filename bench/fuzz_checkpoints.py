"""Fuzz the checkpoint reader: seeded mutants of an official release-layout checkpoint and of
two of ours, each loaded as our code loads weights, in its own forked child.

Bases (the layers of NanoDet-Plus-m 320, random weights, at a narrower width unless
``--full-width``): ``release`` as the Lightning 1.4 release files lay it out
(``tests/old_checkpoints.py``: callbacks keyed by class, a yacs config, numpy scores),
``training`` as our trainer writes ``model_last.ckpt`` (``save_training_checkpoint``: optimizer
moments, an AMP scaler, RNG states, class names) and ``pth`` as ``save_pth`` writes the
inference weights.

Mutations: byte flips (in ``data.pkl``, in the zip's headers, anywhere), truncations, pickle
opcodes swapped, replaced or inserted (single opcodes, names, numpy dtypes, scalars and arrays
of every kind, the object-flag-cleared dtype), pickled numbers and values replaced, and zip
member damage (dropped, cut, grown, renamed, duplicated, compressed, swapped records, other
byte order or version). Mutant ``i`` depends only on ``(seed, i)``: any run's first mutants are
the same as another's.

"Load" is what our code does with a weights file: ``read_checkpoint``, ``extract_state_dict``,
the class names, ``load_weights`` into the model (fine-tuning), and for a file with a training
layout what ``Trainer.resume`` reads: ``load_training_checkpoint``, the counters through
``int``/``float``, the RNG states restored and the scaler state loaded. A mutant must load or
raise ``CheckpointError`` naming the file; a signal, more than 10 s, more than 2 GiB of address
space, or any other exception is a failure. The 10 s are CPU seconds (``RLIMIT_CPU``): on a
shared machine other processes stretch the wall clock, which is a 60 s backstop for a child
that sleeps; the report gives both.

    python bench/fuzz_checkpoints.py [--mutants 2400] [--seed 0] [--out bench/results/fuzz_checkpoints.json]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import pickletools
import random
import struct
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fuzz_children import OUTCOMES, ChildResult, Limits, cpu_model, run_children  # noqa: E402
from nanodet.config import NanoDetConfig, load_config  # noqa: E402
from nanodet.engine.build import build_optimizer  # noqa: E402
from nanodet.engine.checkpointer import (  # noqa: E402
    REQUIRED_KEYS,
    check_resumable,
    restore_rng_states,
    save_training_checkpoint,
)
from nanodet.errors import CheckpointError  # noqa: E402
from nanodet.model import build_model  # noqa: E402
from nanodet.weights.checkpoint import extract_state_dict, file_class_names, load_weights, read_checkpoint, save_pth  # noqa: E402
from tests import crafted_pickles as cp  # noqa: E402
from tests.old_checkpoints import save_lightning_checkpoint  # noqa: E402

CONFIG = REPO / "config" / "nanodet-plus-m_320.yml"
# The same architecture, every tensor of it, at a narrower width: a quarter of the bytes to
# read per mutant, and byte flips land in the pickle and the zip more often than in weights.
NARROW = {
    "model": {
        "arch": {
            "backbone": {"model_size": "0.5x"},
            "fpn": {"in_channels": [48, 96, 192], "out_channels": 32},
            "head": {"input_channel": 32, "feat_channels": 32},
            "aux_head": {"input_channel": 64, "feat_channels": 64},
        }
    }
}
CLASS_NAMES = ["person", "car", "dog"]
RESULT = REPO / "bench" / "results" / "fuzz_checkpoints.json"
KINDS = {  # mutation kind: weight
    "flip": 4,
    "truncate": 1,
    "pickle_swap": 2,
    "pickle_opcode": 2,
    "pickle_insert": 4,
    "pickle_value": 3,
    "pickle_number": 2,
    "zip_member": 3,
}


# --- bases -----------------------------------------------------------------------------


def model_config(full_width: bool = False) -> NanoDetConfig:
    cfg = load_config(CONFIG)
    return cfg if full_width else cfg.merged(NARROW)


def make_bases(cfg: NanoDetConfig, model: torch.nn.Module, work: Path) -> dict[str, bytes]:
    """The three files every mutant comes from (see the module docstring)."""
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
    save_training_checkpoint(
        paths["training"],
        model,
        copy.deepcopy(model),
        optimizer,
        scaler,
        epoch=3,
        global_step=30,
        best_metric=0.4125,
        extra={"best_epoch": 2, "class_names": CLASS_NAMES},
    )
    save_pth(model, paths["pth"], inference_only=True, class_names=CLASS_NAMES)
    return {name: path.read_bytes() for name, path in paths.items()}


# --- what our code does with a weights file --------------------------------------------


def load_like_our_code(path: Path, model: torch.nn.Module) -> None:
    """Every reading of a weights file our code makes (see the module docstring), the file read
    once (``load_weights`` and ``load_training_checkpoint`` each read it when given a path)."""
    ckpt = read_checkpoint(path)
    extract_state_dict(ckpt, str(path))
    file_class_names(ckpt)
    load_weights(model, path, strict=False, class_names=CLASS_NAMES, ckpt=ckpt)
    if all(key in ckpt for key in REQUIRED_KEYS):  # what Trainer.resume reads and converts
        resumed = check_resumable(ckpt, path)
        int(resumed["epoch"]), int(resumed["global_step"])
        float(resumed.get("best_metric", -1.0)), int(resumed.get("best_epoch", -1))
        if "rng_states" in resumed:
            restore_rng_states(resumed["rng_states"])
        if resumed.get("scaler"):
            torch.amp.GradScaler("cpu", enabled=True).load_state_dict(resumed["scaler"])


# --- mutations -------------------------------------------------------------------------


@dataclass
class Base:
    name: str
    data: bytes
    entries: dict[str, bytes]  # zip members in order
    pkl_name: str
    ops: list[tuple[int, int, str, object]]  # (start, end, opcode name, argument) of data.pkl
    pkl_span: tuple[int, int]  # where data.pkl's bytes lie in the file
    structure: list[tuple[int, int]]  # local headers, central directory, end record

    @classmethod
    def parse(cls, name: str, data: bytes) -> Base:
        entries = cp.members(data)
        pkl_name = cp.pickle_member(entries)
        pkl = entries[pkl_name]
        found = list(pickletools.genops(pkl))
        ops = [
            (pos, (found[i + 1][2] if i + 1 < len(found) else len(pkl)), op.name, arg)
            for i, (op, arg, pos) in enumerate(found)
        ]
        structure, pkl_span = [], (0, 0)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            central = archive.start_dir
        for info in infos:
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
            body = info.header_offset + 30 + name_len + extra_len
            structure.append((info.header_offset, body))
            if info.filename == pkl_name:
                pkl_span = (body, body + info.file_size)
        structure.append((central, len(data)))
        return cls(name, data, entries, pkl_name, ops, pkl_span, structure)

    def with_pickle(self, pkl: bytes) -> bytes:
        return cp.write_zip({**self.entries, self.pkl_name: pkl})


GLOBAL_NAMES = [
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.dtypes", "ObjectDType"),
    ("numpy.dtypes", "VoidDType"),
    ("numpy", "frombuffer"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "FloatStorage"),
    ("torch", "Size"),
    ("torch", "device"),
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
    ("builtins", "set"),
    ("builtins", "complex"),
    ("argparse", "Namespace"),
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    ("pytorch_lightning.utilities.parsing", "AttributeDict"),
    ("yacs.config", "CfgNode"),
    ("os", "system"),
    ("builtins", "eval"),
]
DTYPE_CODES = [
    "f8",
    "f4",
    "f2",
    "i8",
    "i4",
    "u1",
    "b1",
    "c16",
    "f16",
    "O8",
    "V8",
    "V0",
    "M8",
    "m8",
    "U4",
    "S3",
    "i3",
    "f8,i4",
    "(2,)f4",
    "",
]
ORDERS = ["<", ">", "|", "=", "x", ""]
FLAGS = [0, 0, 0, 1, 8, 16, 63, 0x7F, -1, 2**31 - 1]
NUMBERS = [0, 1, -1, 2, 7, 255, 256, 65535, 2**31 - 1, -(2**31), 2**20, 2**24, 624, 625, 5056]


def _number(rng: random.Random) -> int:
    return rng.choice(NUMBERS) if rng.random() < 0.7 else rng.randint(-(2**31), 2**31 - 1)


def _random_dtype(rng: random.Random) -> bytes:
    code = rng.choice(DTYPE_CODES)
    if rng.random() < 0.5:
        return cp.dtype(code)
    order = rng.choice(ORDERS)
    names = rng.choice([None, None, ("a",), ("a", "b")])
    fields = rng.choice([None, None, {"a": ("O8", 0)}, {"a": ("f8", 0)}, {"a": ("f8", 4)}])
    state = (
        order,
        None,
        names,
        fields,
        rng.choice([-1, -1, 0, 1, 8, 2**31 - 1]),
        rng.choice([-1, 1, 8]),
        rng.choice(FLAGS),
    )
    return cp.dtype(
        code, state, align=rng.choice([cp.FALSE, cp.TRUE, cp.integer(0)]), copy=rng.choice([cp.TRUE, cp.FALSE])
    )


def _random_bytes(rng: random.Random, most: int = 24) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, most)))


def _value_snippet(rng: random.Random) -> bytes:
    """A pickled value: a hostile numpy value, a plain or odd numpy value, or a plain value."""
    choice = rng.randrange(9)
    if choice == 0:
        return rng.choice(list(cp.HOSTILE_VALUES.values()))()
    if choice == 1:
        return _random_dtype(rng)
    if choice == 2:
        package = rng.choice(["numpy._core", "numpy.core"])
        return (
            cp.glob(f"{package}.multiarray", "scalar")
            + _random_dtype(rng)
            + cp.raw(_random_bytes(rng, 20))
            + cp.TUPLE2
            + cp.REDUCE
        )
    if choice == 3:
        shape = tuple(rng.choice([0, 1, 2, 3, 2**31 - 1, -1]) for _ in range(rng.randint(0, 3)))
        code = rng.choice(DTYPE_CODES)
        data = _random_bytes(rng, 48)
        state = None if rng.random() < 0.5 else (rng.choice(ORDERS), None, None, None, -1, -1, rng.choice(FLAGS))
        return cp.reconstructed_array(code, shape, data, state)
    if choice == 4:
        return (
            cp.glob("numpy", "ndarray")
            + cp.EMPTY_TUPLE
            + _random_dtype(rng)
            + cp.raw(_random_bytes(rng, 16))
            + cp.TUPLE3
            + cp.REDUCE
        )
    if choice == 5:
        return cp.floating(rng.choice([float("nan"), float("inf"), -1.0, 1e308, 0.5]))
    if choice == 6:
        return cp.text(rng.choice(["", "x", "model.backbone.conv1.0.weight", "\udcff"]))
    if choice == 7:
        return rng.choice([cp.NONE, cp.TRUE, cp.FALSE, cp.EMPTY_DICT, cp.EMPTY_LIST, cp.EMPTY_TUPLE])
    return cp.integer(_number(rng))


def _opcode_snippet(rng: random.Random) -> bytes:
    """One opcode with a plausible argument, a global, or a whole value."""
    choice = rng.randrange(4)
    if choice == 0:
        return cp.glob(*rng.choice(GLOBAL_NAMES))
    if choice == 1:
        return _value_snippet(rng)
    if choice == 2:
        return rng.choice(
            [
                b"(",
                b".",
                b"N",
                b"\x88",
                b"\x89",
                b")",
                b"]",
                b"}",
                b"t",
                b"\x85",
                b"\x86",
                b"\x87",
                b"a",
                b"e",
                b"s",
                b"u",
                b"R",
                b"b",
                b"\x81",
                b"Q",
                b"0",
                b"2",
                b"\x8f",
                b"\x94",
                b"i",
                b"o",
            ]
        )
    return rng.choice(
        [
            b"K" + bytes([rng.getrandbits(8)]),
            b"M" + struct.pack("<H", rng.getrandbits(16)),
            b"J" + struct.pack("<i", _number(rng)),
            b"q" + bytes([rng.getrandbits(8)]),
            b"h" + bytes([rng.getrandbits(8)]),
            b"j" + struct.pack("<I", rng.getrandbits(32)),
            b"r" + struct.pack("<I", rng.getrandbits(32)),
            b"X" + struct.pack("<I", rng.choice([0, 3, 2**31, 2**32 - 1])) + b"abc",
            b"U" + bytes([rng.randint(0, 255)]) + _random_bytes(rng, 8),
            b"\x8a" + bytes([rng.randint(0, 255)]) + _random_bytes(rng, 8),
            b"\x80" + bytes([rng.getrandbits(8)]),
            b"G" + _random_bytes(rng, 8).ljust(8, b"\0"),
        ]
    )


def _mutate_pickle(base: Base, kind: str, rng: random.Random) -> tuple[bytes, str]:
    pkl = base.entries[base.pkl_name]
    ops = base.ops
    if kind == "pickle_swap":
        a, b = sorted(rng.sample(range(len(ops)), 2))
        (sa, ea), (sb, eb) = ops[a][:2], ops[b][:2]
        return pkl[:sa] + pkl[sb:eb] + pkl[ea:sb] + pkl[sa:ea] + pkl[eb:], f"swap {ops[a][2]}@{sa} {ops[b][2]}@{sb}"
    if kind == "pickle_opcode":
        start = ops[rng.randrange(len(ops))][0]
        new = rng.choice(b"(.N\x88\x89)]}t\x85\x86\x87aesuRb\x81QKMJqhjrXUG\x8ac\x80")
        return pkl[:start] + bytes([new]) + pkl[start + 1 :], f"opcode@{start}->{chr(new)!r}"
    if kind == "pickle_insert":
        start = ops[rng.randrange(len(ops))][0]
        snippet = b"".join(_opcode_snippet(rng) for _ in range(rng.choice([1, 1, 1, 2, 3])))
        return pkl[:start] + snippet + pkl[start:], f"insert {len(snippet)} bytes@{start}"
    if kind == "pickle_value":
        values = [
            op
            for op in ops
            if op[2] in ("BINFLOAT", "BININT", "BININT1", "BININT2", "BINUNICODE", "NONE", "NEWTRUE", "NEWFALSE")
        ]
        start, end, name, _ = rng.choice(values)
        return pkl[:start] + _value_snippet(rng) + pkl[end:], f"value {name}@{start}"
    numbers = [op for op in ops if op[2] in ("BININT", "BININT1", "BININT2", "LONG1")]  # pickle_number
    start, end, name, _ = rng.choice(numbers)
    return pkl[:start] + cp.integer(_number(rng)) + pkl[end:], f"number {name}@{start}"


def _damage_zip(base: Base, rng: random.Random) -> tuple[bytes, str]:
    entries = dict(base.entries)
    names = list(entries)
    storage = [n for n in names if "/data/" in n]
    target = rng.choice([base.pkl_name, *rng.sample(names, 1), *(rng.sample(storage, 1) if storage else [])])
    action = rng.choice(
        ["drop", "cut", "grow", "garble", "rename", "duplicate", "compress", "swap", "byteorder", "version", "empty"]
    )
    compress = None
    if action == "drop":
        del entries[target]
    elif action == "cut":
        entries[target] = entries[target][: rng.randrange(max(1, len(entries[target])))]
    elif action == "grow":
        entries[target] += _random_bytes(rng, 64) * rng.choice([1, 100])
    elif action == "garble":
        entries[target] = (
            bytes(rng.getrandbits(8) for _ in range(min(len(entries[target]), 4096))) + entries[target][4096:]
        )
    elif action == "rename":
        entries = {(k + rng.choice(["0", "/", "x"]) if k == target else k): v for k, v in entries.items()}
    elif action == "duplicate":
        data = cp.write_zip(entries)
        extra = io.BytesIO(data)
        with zipfile.ZipFile(extra, "a") as archive, _quiet():
            archive.writestr(target, _random_bytes(rng, 64))
        return extra.getvalue(), f"zip duplicate {target}"
    elif action == "compress":
        compress = {target: zipfile.ZIP_DEFLATED}
    elif action == "swap" and len(storage) >= 2:
        a, b = rng.sample(storage, 2)
        entries[a], entries[b] = entries[b], entries[a]
        target = f"{a}<->{b}"
    elif action == "byteorder":
        key = next((n for n in names if n.endswith("/byteorder")), names[0])
        entries[key] = rng.choice([b"big", b"", b"middle", b"little\n"])
    elif action == "version":
        key = next((n for n in names if n.endswith("/version")), names[0])
        entries[key] = rng.choice([b"999\n", b"", b"x", b"1\n", b"-1\n"])
    else:
        entries[target] = b""
    return cp.write_zip(entries, compress), f"zip {action} {target}"


class _quiet:
    """zipfile warns of a duplicate name; the duplicate is the point."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


def mutant(bases: list[Base], seed: int, index: int) -> tuple[str, str, str, bytes]:
    """(base name, kind, what was done, bytes) of mutant ``index``: a function of (seed, index)."""
    rng = random.Random(f"{seed}:{index}")
    base = bases[index % len(bases)]
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
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
    return base.name, kind, what, base.with_pickle(pkl)


# --- the run ---------------------------------------------------------------------------


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
    full_width: bool = False,
    jobs: int = 1,
) -> tuple[list[Record], dict]:
    """Load mutants ``start .. start+count-1`` (``jobs`` children at a time); the records in
    order, and facts about the bases."""
    torch.set_num_threads(1)  # one thread: nothing for a forked child to inherit half-started
    cfg = model_config(full_width)
    model = build_model(cfg.model.arch)
    limits = Limits(wall_s, cpu_s)
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="fuzz_ckpt_") as tmp:
        work = Path(tmp)
        raw = make_bases(cfg, model, work)
        bases = [Base.parse(name, data) for name, data in raw.items()]
        bases_facts = {b.name: {"bytes": len(b.data), "pickle_opcodes": len(b.ops)} for b in bases}
        width = "full width (1.0x)" if full_width else "narrow (0.5x backbone, 32-channel neck and head)"
        facts = {"model": f"NanoDet-Plus-m 320, {width}, {sum(p.numel() for p in model.parameters())} params"}
        facts["bases"] = bases_facts

        def files(items):  # each file written just before its child starts, removed once it ended
            for key, data in items:
                path = work / f"mutant_{key[0]}.ckpt"
                path.write_bytes(data)
                yield (*key, path), lambda p=path: load_like_our_code(p, model)

        controls = files(((i, name, "", ""), data) for i, (name, data) in enumerate(raw.items()))
        for (_, name, _, _, path), result in run_children(controls, (CheckpointError,), limits, jobs):
            bases_facts[name]["unmutated"] = result.outcome  # the control: every base loads
            path.unlink()

        def mutants():
            for i in range(start, start + count):
                base, kind, what, data = mutant(bases, seed, i)
                yield (i, base, kind, what), data

        for (index, base, kind, what, path), result in run_children(files(mutants()), (CheckpointError,), limits, jobs):
            path.unlink()
            if result.outcome == "refused" and not result.detail.startswith(f"CheckpointError: {path}"):
                result.outcome, result.detail = "undocumented", f"does not name the file: {result.detail}"
            records.append(Record(index, base, kind, what, result))
            if progress and result.outcome not in ("loaded", "refused"):
                print(f"mutant {index} ({base}, {what}): {result.outcome}: {result.detail}", file=sys.stderr)
            if progress and len(records) % 100 == 0:
                print(f"{len(records)} mutants, {dict(Counter(r.result.outcome for r in records))}", file=sys.stderr)
    return sorted(records, key=lambda r: r.index), facts


def summary(records: list[Record], facts: dict, seed: int, seconds: float, limits: dict) -> dict:
    counts = Counter(r.result.outcome for r in records)
    bad = [r for r in records if r.result.outcome not in ("loaded", "refused")]
    walls = sorted(r.result.wall_s for r in records)
    refusals = Counter(_reason(r.result.detail) for r in records if r.result.outcome == "refused")
    from bench._common import host_info

    return {
        "benchmark": "fuzz_checkpoints",
        "seed": seed,
        "model": facts["model"],
        "mutants": len(records),
        "counts": {outcome: counts.get(outcome, 0) for outcome in OUTCOMES},
        "by_base": {
            name: dict(Counter(r.result.outcome for r in records if r.base == name)) for name in facts["bases"]
        },
        "by_kind": {kind: dict(Counter(r.result.outcome for r in records if r.kind == kind)) for kind in KINDS},
        "bases": facts["bases"],
        "failures": [
            {
                "index": r.index,
                "base": r.base,
                "kind": r.kind,
                "what": r.what,
                "outcome": r.result.outcome,
                "detail": r.result.detail,
            }
            for r in bad[:20]
        ],
        "refusal_reasons_top": refusals.most_common(12),
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


def _reason(detail: str) -> str:
    """A refusal's message without the file name and the specifics, to count the kinds."""
    text = detail.split(": ", 2)[-1]
    return text.split("(")[0].strip()[:80]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="the first mutant's index (to replay one)")
    parser.add_argument("--wall-s", type=float, default=60.0, help="wall-clock backstop (a sleeping child)")
    parser.add_argument("--cpu-s", type=int, default=10, help="the time limit: CPU seconds (SIGXCPU)")
    parser.add_argument("--full-width", action="store_true", help="the 1.0x model's bytes, not a narrower one")
    parser.add_argument("--jobs", type=int, default=1, help="children at a time")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    start = time.monotonic()
    records, facts = fuzz(
        args.mutants, args.seed, args.wall_s, args.cpu_s, True, args.start, args.full_width, args.jobs
    )
    limits = {"address_space_gib": 2, "cpu_s": args.cpu_s, "wall_s": args.wall_s, "jobs": args.jobs}
    report = summary(records, facts, args.seed, time.monotonic() - start, limits)
    text = json.dumps(report, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
