"""Download the pretrained weights listed in ``docker/weights.json`` (stdlib only).

    python3 docker/download_weights.py --dest /weights [--only NAME ...] [--mirror URL]

The image build runs this in a layer of its own, before any project code is copied, so that
editing the code or the README never downloads again; ``fetch_weights.py`` verifies the files
once the code is there. Each file is streamed to a hidden temp file in ``--dest``, its sha256
(and size, where the list gives them) checked, then moved to its name with ``os.replace``: on
any failure nothing partial is left. A file already present with the listed hash is kept. A run
that is killed cannot clean up: the next run removes the partial files it left (``.NAME.*.part``),
``.dockerignore`` keeps them out of a build context, and the image build refuses any it finds.
A full disk (``ENOSPC``, or a used-up quota) is reported as such, naming the disk.

Networks fail in two ways, handled differently:

- a host that cannot be reached (no DNS, refused, no route, connect time-out): no retry, and
  no other file from that host is tried; the summary says which sources were reachable and how
  to build without them (``--build-arg FETCH_WEIGHTS=0``, or files put in ``docker/weights/``);
- a transfer that breaks once connected (truncated body, 5xx): retried once.

Exit status: 0 when every file is in place, 1 when any failed, 2 for an unusable list.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).resolve().parent / "weights.json"
KINDS = ("imagenet-backbone", "coco-checkpoint")
CHUNK = 1 << 20
RETRY_DELAY_S = 1.0
OFFLINE_HINT = (
    "to build without them: --build-arg FETCH_WEIGHTS=0 (no pretrained weights baked in), or put the files "
    "in docker/weights/ before building (see docker/weights/README.md)"
)


class FetchError(Exception):
    """One file that could not be installed; the message says what is wrong with it."""


class NetworkError(FetchError):
    """A transfer that broke once connected (truncation, 5xx): worth one retry."""


class HostUnreachable(FetchError):
    """The host could not be reached at all: no retry, and no other file from it is tried."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # what the connection attempt said, for the closing summary


class WriteError(FetchError):
    """The file could not be written where it goes (a full disk, permissions): no network's fault."""


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
    size: int | None = None  # bytes, where known
    model_size: str | None = None  # imagenet-backbone: the ShuffleNetV2 width ("0.5x", ...)
    config: str | None = None  # coco-checkpoint: model config, relative to the repository or absolute

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc


# --- the manifest ----------------------------------------------------------------------------


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
        wrong = sorted(
            k
            for k, v in item.items()
            if v is not None
            and not (isinstance(v, int) and not isinstance(v, bool) if k == "size" else isinstance(v, str))
        )
        if wrong:
            raise ManifestError(
                f"{path}: entry {i}: fields {wrong} have the wrong type (size: integer, others: string)"
            )
        try:
            entries.append(Entry(**item))
        except TypeError as err:
            raise ManifestError(f"{path}: entry {i}: {err}") from None
    return entries


def entry_problems(entry: Entry) -> list[str]:
    """What makes an entry unusable before anything is downloaded (checks needing no code)."""
    problems = []
    if not re.fullmatch(r"https?://\S+", str(entry.url)):
        problems.append(f"url {entry.url!r} is not an http(s) URL")
    if not isinstance(entry.file_name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", entry.file_name):
        problems.append(f"file_name {entry.file_name!r} is not a plain file name")
    if entry.sha256 is not None and not re.fullmatch(r"[0-9a-f]{8,64}", str(entry.sha256)):
        problems.append(f"sha256 {entry.sha256!r} is not 8 to 64 lowercase hex digits")
    if entry.size is not None and entry.size <= 0:
        problems.append(f"size {entry.size!r} is not a positive byte count")
    if entry.kind not in KINDS:
        problems.append(f"kind {entry.kind!r} is not one of {list(KINDS)}")
    return problems


def check_entries(entries: list[Entry], problems_of=entry_problems) -> None:
    """Every entry usable, names and file names unique; else one line per problem."""
    problems = [f"{e.name}: {p}" for e in entries for p in problems_of(e)]
    for attr in ("name", "file_name"):
        values = [getattr(e, attr) for e in entries]
        problems += [
            f"{attr} {v!r} appears {values.count(v)} times" for v in sorted(set(values), key=str) if values.count(v) > 1
        ]
    if problems:
        raise ManifestError("\n".join(f"manifest: {p}" for p in problems))


def select(entries: list[Entry], only: list[str] | None) -> list[Entry]:
    """The entries named by --only (all when not given or empty)."""
    only = [n for n in only or [] if n]
    if not only:
        return entries
    names = {e.name for e in entries}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ManifestError(f"--only: unknown names {unknown} (known: {sorted(names)})")
    return [e for e in entries if e.name in only]


def mirrored(entries: list[Entry], mirror: str | None) -> list[Entry]:
    """Every URL moved to ``mirror`` (a folder URL serving the same file names), when given."""
    if not mirror:
        return entries
    base = mirror if mirror.endswith("/") else mirror + "/"
    return [replace(e, url=base + e.url.rsplit("/", 1)[-1]) for e in entries]


# --- download --------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"fetch_weights: {message}", file=sys.stderr, flush=True)


def download(url: str, out: Any, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into the open binary file ``out``; returns (sha256 hex, size). A body
    shorter than its Content-Length is a truncated download (urllib does not notice)."""
    host = urllib.parse.urlsplit(url).netloc
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        error = NetworkError if err.code >= 500 else FetchError
        raise error(f"HTTP {err.code} {err.reason} from {url}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as err:
        reason = f"{type(err).__name__}: {getattr(err, 'reason', None) or err}"
        raise HostUnreachable(f"cannot reach {host} for {url} ({reason})", reason) from None
    digest = hashlib.sha256()
    size = 0
    with response:
        expected = response.headers.get("Content-Length")
        while True:
            try:
                chunk = response.read(CHUNK)
            except (http.client.HTTPException, OSError) as err:  # reading only: a write error is no network's
                raise NetworkError(
                    f"download from {url} broke after {size} bytes ({type(err).__name__}: {err})"
                ) from None
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    if expected is not None and expected.isdigit() and size != int(expected):
        raise NetworkError(f"download from {url} truncated: got {size} of {expected} bytes (Content-Length)")
    return digest.hexdigest(), size


def download_with_retry(url: str, tmp: Path, timeout: float) -> tuple[str, int]:
    """:func:`download` into ``tmp`` (rewritten from the start), retried once after a broken
    transfer; an unreachable host is not retried."""
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


def check_hash(entry: Entry, sha256: str, size: int) -> None:
    """The file's digest starts with the manifest's prefix (or equals the full hash), and its
    size is the listed one."""
    if entry.sha256 is not None and not sha256.startswith(entry.sha256):
        raise FetchError(f"sha256 {sha256} does not start with the expected {entry.sha256}")
    if entry.size is not None and size != entry.size:
        raise FetchError(f"{size} bytes, the list says {entry.size}")


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding ``path`` (an existing directory)."""
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def write_error(doing: str, folder: Path, err: OSError, needed: int | None = None) -> WriteError:
    """A failed write in ``folder``, in words: a full disk (ENOSPC) or a used-up quota (EDQUOT)
    names the disk (its mount point and free space) and what the file needs."""
    if err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return WriteError(f"{doing} in {folder}: {err.strerror or err}")
    state = "full (no space left on device)" if err.errno == errno.ENOSPC else "over its quota (disk quota exceeded)"
    try:
        stats = os.statvfs(folder)
        free = f"{stats.f_bavail * stats.f_frsize / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    need = f"; the file is {needed / 2**20:.1f} MiB" if needed else ""
    return WriteError(
        f"{doing} in {folder}: the disk is {state}: the filesystem mounted at {mount_point(folder)} ({free}{need})"
    )


def fetch_to_temp(entry: Entry, dest: Path, timeout: float) -> tuple[Path, str, int]:
    """Download ``entry`` into a hidden temp file in ``dest`` and check its hash and size;
    returns (temp path, sha256, size). On failure the temp file is gone."""
    try:
        fd, name = tempfile.mkstemp(dir=dest, prefix=f".{entry.file_name}.", suffix=".part")
    except OSError as err:
        raise write_error("cannot create its temp file", dest, err, entry.size) from None
    os.close(fd)
    tmp = Path(name)
    try:
        sha256, size = download_with_retry(entry.url, tmp, timeout)
        check_hash(entry, sha256, size)
    except OSError as err:  # opening, writing or closing the temp file (download() turns network errors into ours)
        tmp.unlink(missing_ok=True)
        raise write_error("cannot write it", dest, err, entry.size) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, sha256, size


def move_into_place(tmp: Path, target: Path) -> None:
    try:
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error("cannot install it", target.parent, err) from None


def remove_partial_downloads(entries: list[Entry], dest: Path) -> list[Path]:
    """The temp files (``.NAME.*.part``) a killed run left in ``dest`` for these entries, removed."""
    removed = []
    for entry in entries:
        for path in sorted(dest.glob(f".{entry.file_name}.*.part")):  # file names hold no wildcards
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as err:
                say(f"cannot remove {path}, a partial download left by an interrupted run ({err.strerror or err})")
                continue
            removed.append(path)
            say(f"removed {path.name}: a partial download left by an interrupted run")
    return removed


class Sources:
    """Which hosts answered and which could not be reached, for the closing summary."""

    def __init__(self) -> None:
        self.reached: dict[str, int] = {}
        self.unreachable: dict[str, str] = {}
        self.skipped: dict[str, int] = {}

    def skip(self, entry: Entry) -> bool:
        """True (and counted) when the entry's host is already known to be unreachable."""
        if entry.host not in self.unreachable:
            return False
        self.skipped[entry.host] = self.skipped.get(entry.host, 0) + 1
        return True

    def lines(self) -> list[str]:
        if not self.unreachable:
            return []
        down = "; ".join(
            f"cannot reach {host} ({reason}; {self.skipped.get(host, 0) + 1} files not fetched)"
            for host, reason in self.unreachable.items()
        )
        up = ", ".join(f"{host} ({n} files)" for host, n in self.reached.items())
        return [f"no network to some sources: {down}" + (f"; reachable: {up}" if up else ""), OFFLINE_HINT]


def run(entries: list[Entry], dest: Path, timeout: float, install) -> int:
    """``install(entry, dest, timeout) -> bool`` (downloaded or already there) for every entry,
    each failure one line, an unreachable host tried once; returns the exit status."""
    downloaded = present = 0
    failed: list[str] = []
    sources = Sources()
    remove_partial_downloads(entries, dest)
    for entry in entries:
        if sources.skip(entry):
            failed.append(entry.file_name)
            continue
        try:
            if install(entry, dest, timeout):
                downloaded += 1
                sources.reached[entry.host] = sources.reached.get(entry.host, 0) + 1
            else:
                present += 1
        except HostUnreachable as err:
            say(f"ERROR {entry.file_name}: {err}; not trying the other files from {entry.host}")
            sources.unreachable[entry.host] = err.reason
            failed.append(entry.file_name)
        except FetchError as err:
            say(f"ERROR {entry.file_name}: {err}")
            failed.append(entry.file_name)
        except Exception as err:  # noqa: BLE001 (a bad config or a library bug: one line, then the next file)
            say(f"ERROR {entry.file_name}: unexpected {type(err).__name__}: {err}")
            failed.append(entry.file_name)
    for line in sources.lines():
        say(line)
    summary = f"{downloaded} downloaded, {present} already present, {len(failed)} failed, in {dest}"
    say(f"FAILED: {summary} ({', '.join(failed)})" if failed else f"done: {summary}")
    return 1 if failed else 0


def download_entry(entry: Entry, dest: Path, timeout: float) -> bool:
    """Download-only install: a file already there (put in docker/weights/ by hand) is kept
    (False) when it has the listed hash, or when none is listed (the verification step checks
    it against its model)."""
    target = dest / entry.file_name
    if target.is_file() and entry.sha256 is None:
        say(f"ok {entry.file_name}: already present (verified after the code)")
        return False
    if target.is_file():
        sha256 = file_sha256(target)
        try:
            check_hash(entry, sha256, target.stat().st_size)
            say(f"ok {entry.file_name}: already present; sha256 {sha256}, {target.stat().st_size} bytes")
            return False
        except FetchError as err:
            say(f"{entry.file_name}: present in {dest} but {err}: downloading it again")
    tmp, sha256, size = fetch_to_temp(entry, dest, timeout)
    move_into_place(tmp, target)
    say(f"ok {entry.file_name}: downloaded from {entry.url}; sha256 {sha256}, {size} bytes (verified after the code)")
    return True


# --- command line ----------------------------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", type=Path, required=True, help="directory the weights are installed in")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="JSON list of entries (default: weights.json)")
    parser.add_argument("--only", nargs="*", metavar="NAME", help="only these entries (by name); none: all")
    parser.add_argument("--mirror", help="a folder URL serving the same file names, used instead of each URL")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to connect or to wait for data before a download fails (default 30)",
    )


def load_entries(args: argparse.Namespace, problems_of=entry_problems) -> list[Entry]:
    entries = mirrored(select(read_manifest(args.manifest), args.only), args.mirror)
    check_entries(entries, problems_of)
    args.dest.mkdir(parents=True, exist_ok=True)
    return entries


def report_manifest_error(err: Exception, args: argparse.Namespace) -> int:
    if isinstance(err, OSError):
        say(f"ERROR --dest {args.dest}: {err}")
    else:
        for line in str(err).splitlines():
            say(f"ERROR {line}")
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    try:
        entries = load_entries(args)
    except (ManifestError, OSError) as err:
        return report_manifest_error(err, args)
    say(f"downloading {len(entries)} files into {args.dest}")
    return run(entries, args.dest, args.timeout, download_entry)


if __name__ == "__main__":
    sys.exit(main())
