"""Download, verify and install pretrained weights into a directory (run at image build time).

    PYTHONPATH=/app python3 /app/docker/fetch_weights.py --dest /weights

Each file is streamed to a hidden temp file inside ``--dest``, checked, and only then moved to
its final name with ``os.replace``; on any failure the temp file is removed, so ``--dest`` never
holds a partial or unverified download. Checks:

- ``imagenet-backbone``: the sha256 starts with the hex in torchvision's file name, and the
  state dict fits the ShuffleNetV2 of that width (``nanodet.model.pretrained.fit_backbone``);
- ``coco-checkpoint``: read weights-only (a pickle that would run code is refused), and every
  tensor of the full training model of its config (aux branch included) is present with its shape.

Every problem is one line on stderr naming the file and what is wrong; the exit status is
non-zero when any file failed (1) or the arguments/manifest are unusable (2), so a build fails
loudly. Files already in ``--dest`` that verify are kept without a download.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # /app in the image, the repository here
KINDS = ("imagenet-backbone", "coco-checkpoint")
CHUNK = 1 << 20
RETRY_DELAY_S = 1.0

# The official NanoDet-Plus COCO checkpoints of the bundled Plus configs (Lightning .ckpt with
# raw and EMA weights, aux branch included). No hash is published for them: they are verified
# by loading them into the model of their config. config/nanodet-m.yml (legacy NanoDet-m) has
# no entry: its official COCO weights are on Google Drive only, not in a GitHub release.
COCO_RELEASE_URL = "https://github.com/RangiLyu/nanodet/releases/download/v1.0.0-alpha-1/"
COCO_CHECKPOINTS = (
    "nanodet-plus-m_320_checkpoint.ckpt",
    "nanodet-plus-m_416_checkpoint.ckpt",
    "nanodet-plus-m-1.5x_320_checkpoint.ckpt",
    "nanodet-plus-m-1.5x_416_checkpoint.ckpt",
)
CKPT_SUFFIX = "_checkpoint.ckpt"


class FetchError(Exception):
    """One file that could not be installed; the message says what is wrong with it."""


class NetworkError(FetchError):
    """A download that failed in transit (connection, timeout, truncation): worth one retry."""


class ManifestError(Exception):
    """A manifest or command line that cannot be used at all."""


@dataclass(frozen=True)
class Entry:
    """One file to install: where it comes from, its name in --dest and how to check it."""

    name: str
    url: str
    file_name: str
    kind: str
    sha256: str | None = None  # a prefix (as in torchvision file names) or the full hex digest
    model_size: str | None = None  # imagenet-backbone: the ShuffleNetV2 width ("0.5x", ...)
    config: str | None = None  # coco-checkpoint: model config, relative to ROOT or absolute

    def config_path(self) -> Path:
        """The model config file this checkpoint belongs to."""
        path = Path(self.config or "")
        return path if path.is_absolute() else ROOT / path


# --- the manifest ----------------------------------------------------------------------------


def default_manifest() -> list[Entry]:
    """ImageNet backbones (as ``nanodet.model.pretrained`` names them) and the COCO checkpoints."""
    from nanodet.model.pretrained import IMAGENET_BACKBONES

    entries = [
        Entry(
            name=f"shufflenetv2-{size}",
            url=w.url,
            file_name=w.file_name,
            kind="imagenet-backbone",
            sha256=w.sha256_prefix,
            model_size=size,
        )
        for size, w in IMAGENET_BACKBONES.items()
    ]
    for file_name in COCO_CHECKPOINTS:
        stem = file_name.removesuffix(CKPT_SUFFIX)
        entries.append(
            Entry(
                name=stem,
                url=COCO_RELEASE_URL + file_name,
                file_name=file_name,
                kind="coco-checkpoint",
                config=f"config/{stem}.yml",
            )
        )
    return entries


def read_manifest(path: Path) -> list[Entry]:
    """Entries from a JSON list of objects with the fields of :class:`Entry`."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err})") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ManifestError(f"{path}: the manifest must be a JSON list of objects")
    known = {f.name for f in fields(Entry)}
    entries = []
    for i, item in enumerate(data):
        unknown = sorted(set(item) - known)
        if unknown:
            raise ManifestError(f"{path}: entry {i}: unknown fields {unknown} (known: {sorted(known)})")
        not_text = sorted(k for k, v in item.items() if not isinstance(v, str) and v is not None)
        if not_text:
            raise ManifestError(f"{path}: entry {i}: fields {not_text} must be strings (or null)")
        try:
            entries.append(Entry(**item))
        except TypeError as err:
            raise ManifestError(f"{path}: entry {i}: {err}") from None
    return entries


def entry_problems(entry: Entry) -> list[str]:
    """What makes an entry unusable before anything is downloaded."""
    problems = []
    if not re.fullmatch(r"https?://\S+", str(entry.url)):
        problems.append(f"url {entry.url!r} is not an http(s) URL")
    if not isinstance(entry.file_name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", entry.file_name):
        problems.append(f"file_name {entry.file_name!r} is not a plain file name")
    if entry.sha256 is not None and not re.fullmatch(r"[0-9a-f]{8,64}", str(entry.sha256)):
        problems.append(f"sha256 {entry.sha256!r} is not 8 to 64 lowercase hex digits")
    if entry.kind == "imagenet-backbone":
        from nanodet.model.pretrained import IMAGENET_BACKBONES

        if entry.model_size not in IMAGENET_BACKBONES:
            problems.append(f"model_size {entry.model_size!r} is not one of {sorted(IMAGENET_BACKBONES)}")
    elif entry.kind == "coco-checkpoint":
        if not entry.config or not entry.config_path().is_file():
            problems.append(f"config {entry.config!r} not found (looked at {entry.config_path()})")
    else:
        problems.append(f"kind {entry.kind!r} is not one of {list(KINDS)}")
    return problems


def check_manifest(entries: list[Entry]) -> None:
    """Every entry usable, names and file names unique; else one line per problem."""
    problems = [f"{e.name}: {p}" for e in entries for p in entry_problems(e)]
    for attr in ("name", "file_name"):
        values = [getattr(e, attr) for e in entries]
        problems += [
            f"{attr} {v!r} appears {values.count(v)} times" for v in sorted(set(values), key=str) if values.count(v) > 1
        ]
    if problems:
        raise ManifestError("\n".join(f"manifest: {p}" for p in problems))


def select(entries: list[Entry], only: list[str] | None) -> list[Entry]:
    """The entries named by --only (all when not given)."""
    if not only:
        return entries
    names = {e.name for e in entries}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ManifestError(f"--only: unknown names {unknown} (known: {sorted(names)})")
    return [e for e in entries if e.name in only]


# --- download --------------------------------------------------------------------------------


def download(url: str, out: Any, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into the open binary file ``out``; returns (sha256 hex, size). A body
    shorter than its Content-Length is a truncated download (urllib does not notice)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except urllib.error.HTTPError as err:
        error = NetworkError if err.code >= 500 else FetchError
        raise error(f"HTTP {err.code} {err.reason} from {url}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise NetworkError(f"download from {url} failed ({type(err).__name__}: {reason})") from None
    if expected is not None and expected.isdigit() and size != int(expected):
        raise NetworkError(f"download from {url} truncated: got {size} of {expected} bytes (Content-Length)")
    return digest.hexdigest(), size


def download_with_retry(url: str, tmp: Path, timeout: float) -> tuple[str, int]:
    """:func:`download` into ``tmp`` (rewritten from the start), retried once after a network error."""
    for attempt in (1, 2):
        try:
            with open(tmp, "wb") as out:
                return download(url, out, timeout)
        except NetworkError as err:
            if attempt == 2:
                raise
            say(f"retrying once: {err}")
            time.sleep(RETRY_DELAY_S)
    raise AssertionError("unreachable")


def file_sha256(path: Path) -> str:
    """The full sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- verification ----------------------------------------------------------------------------


def check_hash(entry: Entry, sha256: str) -> None:
    """The file's digest starts with the manifest's prefix (or equals the full hash)."""
    if entry.sha256 is not None and not sha256.startswith(entry.sha256):
        raise FetchError(f"sha256 {sha256} does not start with the expected {entry.sha256}")


def without_path(message: str, path: Path) -> str:
    """A library error message with the (temp) file path taken out: the caller names the file."""
    return message.removeprefix(f"{path}: ").replace(str(path), "the file")


def check_backbone(entry: Entry, path: Path) -> str:
    """The file fits the ShuffleNetV2 of the entry's width; returns a one-line description."""
    from nanodet.checkpoint import CheckpointError
    from nanodet.config import BackboneConfig
    from nanodet.model.backbone import ShuffleNetV2
    from nanodet.model.pretrained import fit_backbone

    try:
        report = fit_backbone(ShuffleNetV2(BackboneConfig(model_size=entry.model_size, pretrain=False)), path)
    except CheckpointError as err:
        raise FetchError(f"ShuffleNetV2 {entry.model_size}: {without_path(str(err), path)}") from None
    return f"fits ShuffleNetV2 {entry.model_size} ({len(report.loaded)} tensors)"


def check_coco_checkpoint(entry: Entry, path: Path) -> str:
    """Every tensor of the full training model of the entry's config is in the file with its
    shape (an official Plus checkpoint holds them all, aux branch included): a strict load."""
    import logging

    from nanodet.checkpoint import CheckpointError, load_weights
    from nanodet.config import load_config
    from nanodet.model import build_model

    model = build_model(load_config(entry.config_path()).model.arch)
    try:
        report = load_weights(model, path, logging.getLogger("fetch_weights"), strict=True)
    except CheckpointError as err:
        raise FetchError(f"{entry.config}: {without_path(str(err), path)}") from None
    return f"fits {entry.config} (all {len(report.loaded)} tensors, {report.source_format})"


def verify(entry: Entry, path: Path, sha256: str) -> str:
    """All checks of one file; raises :class:`FetchError`, else returns what was checked."""
    check_hash(entry, sha256)
    if entry.kind == "imagenet-backbone":
        return check_backbone(entry, path)
    return check_coco_checkpoint(entry, path)


# --- install ---------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"fetch_weights: {message}", file=sys.stderr, flush=True)


def verify_present(entry: Entry, target: Path) -> bool:
    """True when ``target`` already exists and passes every check (then nothing is downloaded)."""
    if not target.is_file():
        return False
    sha256 = file_sha256(target)
    try:
        checked = verify(entry, target, sha256)
    except FetchError as err:
        say(f"{entry.file_name}: present in {target.parent} but {err}: downloading it again")
        return False
    say(f"ok {entry.file_name}: already present, {checked}; sha256 {sha256}, {target.stat().st_size} bytes")
    return True


def install(entry: Entry, dest: Path, timeout: float) -> bool:
    """Download, verify and move one file into ``dest``. Returns True when it was downloaded,
    False when it was already there; raises :class:`FetchError` with nothing left behind."""
    target = dest / entry.file_name
    if verify_present(entry, target):
        return False
    try:
        fd, name = tempfile.mkstemp(dir=dest, prefix=f".{entry.file_name}.", suffix=".part")
    except OSError as err:
        raise FetchError(f"cannot write in {dest} ({err})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        sha256, size = download_with_retry(entry.url, tmp, timeout)
        checked = verify(entry, tmp, sha256)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:  # writing the temp file, chmod, replace (download errors are FetchErrors)
        tmp.unlink(missing_ok=True)
        raise FetchError(f"cannot install it as {target} ({err})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    say(f"ok {entry.file_name}: downloaded from {entry.url}, {checked}; sha256 {sha256}, {size} bytes")
    return True


def install_all(entries: list[Entry], dest: Path, timeout: float) -> int:
    """Every entry, each failure one line; returns the exit status (0 when all are installed)."""
    downloaded = present = 0
    failed = []
    for entry in entries:
        try:
            if install(entry, dest, timeout):
                downloaded += 1
            else:
                present += 1
        except FetchError as err:
            say(f"ERROR {entry.file_name}: {err}")
            failed.append(entry.file_name)
        except Exception as err:  # noqa: BLE001 (a bad config or a library bug: one line, then the next file)
            say(f"ERROR {entry.file_name}: unexpected {type(err).__name__}: {err}")
            failed.append(entry.file_name)
    summary = f"{downloaded} downloaded, {present} already present, {len(failed)} failed, in {dest}"
    say(f"FAILED: {summary} ({', '.join(failed)})" if failed else f"done: {summary}")
    return 1 if failed else 0


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="directory the weights are installed in")
    parser.add_argument("--manifest", type=Path, help="JSON list of entries to use instead of the built-in one")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="fetch only these entries (by name)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds a download may stall (connect or wait for data) before it fails (default 120)",
    )
    return parser.parse_args(argv)


def ensure_importable() -> None:
    """``import nanodet`` without PYTHONPATH too, when run from a checkout (the image sets it)."""
    try:
        import nanodet  # noqa: F401
    except ImportError:
        sys.path.append(str(ROOT))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_importable()
    try:
        entries = select(read_manifest(args.manifest) if args.manifest else default_manifest(), args.only)
        check_manifest(entries)
        args.dest.mkdir(parents=True, exist_ok=True)
    except ManifestError as err:
        for line in str(err).splitlines():
            say(f"ERROR {line}")
        return 2
    except OSError as err:
        say(f"ERROR --dest {args.dest}: {err}")
        return 2
    say(f"installing {len(entries)} files into {args.dest}")
    return install_all(entries, args.dest, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
