"""Verify (and, outside the image build, download) the pretrained weights of ``docker/weights.json``.

    PYTHONPATH=/app python3 /app/docker/fetch_weights.py --dest /weights --verify-only   (image build)
    PYTHONPATH=. python3 docker/fetch_weights.py --dest docker/weights                  (by hand)

The image build downloads in an earlier layer (``download_weights.py``, stdlib only, before the
code is copied) and runs this with ``--verify-only`` once the code is there: every listed file
must be present and pass its checks. Without ``--verify-only`` a missing or failing file is
downloaded (temp file, checks, ``os.replace``) and checked the same way. Checks:

- ``imagenet-backbone``: the sha256 starts with the hex in torchvision's file name, and the
  state dict fits the ShuffleNetV2 of that width (``nanodet.weights.imagenet.fit_backbone``);
- ``coco-checkpoint``: read weights-only (the Lightning names of the official release files
  become inert stand-ins; a pickle that would run code is refused), and every tensor of the full
  training model of its config (aux branch included) is present with its shape.

``--verify-only`` also checks every other weights file in ``--dest`` (files put in
``docker/weights/`` by hand): one with the name of a listed file as that entry (its hash, where
the list has one, and its model), any other ``.pth``/``.ckpt``/``.pt`` as the training task
will load it (``/weights/<config name>*``: the body of the model of the longest bundled config
name it starts with must fit; a file no config name matches would never be used and fails).
``--missing-ok`` (``FETCH_WEIGHTS=0``): listed files that are absent are no error.

Every problem is one line on stderr naming the file and what is wrong; the exit status is
non-zero when any file failed (1) or the arguments/manifest are unusable (2), so a build fails
loudly. Each verified file's sha256 and size are printed (docs/image.md's table records them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download_weights import (  # noqa: E402 (the sibling module, importable from any working directory)
    Entry,
    FetchError,
    ManifestError,
    add_common_arguments,
    check_entries,
    check_hash,
    fetch_to_temp,
    file_sha256,
    load_entries,
    move_into_place,
    read_manifest,
    report_manifest_error,
    run,
    say,
)
from download_weights import entry_problems as download_problems  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent  # /app in the image, the repository here
WEIGHT_SUFFIXES = (".pth", ".ckpt", ".pt")  # what a training task takes from /weights (executor/weights.py)


def config_path(entry: Entry) -> Path:
    """The model config file a checkpoint entry belongs to."""
    path = Path(entry.config or "")
    return path if path.is_absolute() else ROOT / path


def entry_problems(entry: Entry) -> list[str]:
    """What makes an entry unusable: the download checks, plus the model it must fit."""
    problems = download_problems(entry)
    if entry.kind == "imagenet-backbone":
        from nanodet.weights.imagenet import IMAGENET_BACKBONES

        if entry.model_size not in IMAGENET_BACKBONES:
            problems.append(f"model_size {entry.model_size!r} is not one of {sorted(IMAGENET_BACKBONES)}")
    elif entry.kind == "coco-checkpoint":
        if not entry.config or not config_path(entry).is_file():
            problems.append(f"config {entry.config!r} not found (looked at {config_path(entry)})")
    return problems


# --- verification ----------------------------------------------------------------------------


def without_path(message: str, path: Path) -> str:
    """A library error message with the (temp) file path taken out: the caller names the file."""
    return message.removeprefix(f"{path}: ").replace(str(path), "the file")


def check_backbone(entry: Entry, path: Path) -> str:
    """The file fits the ShuffleNetV2 of the entry's width; returns a one-line description."""
    from nanodet.config import BackboneConfig
    from nanodet.model.backbone import ShuffleNetV2
    from nanodet.weights.checkpoint import CheckpointError
    from nanodet.weights.imagenet import fit_backbone

    try:
        report = fit_backbone(ShuffleNetV2(BackboneConfig(model_size=entry.model_size, pretrain=False)), path)
    except CheckpointError as err:
        raise FetchError(f"ShuffleNetV2 {entry.model_size}: {without_path(str(err), path)}") from None
    return f"fits ShuffleNetV2 {entry.model_size} ({len(report.loaded)} tensors)"


def check_coco_checkpoint(entry: Entry, path: Path) -> str:
    """Every tensor of the full training model of the entry's config is in the file with its
    shape (an official Plus checkpoint holds them all, aux branch included): a strict load."""
    import logging

    from nanodet.config import load_config
    from nanodet.model import build_model
    from nanodet.weights.checkpoint import CheckpointError, load_weights

    model = build_model(load_config(config_path(entry)).model.arch)
    try:
        report = load_weights(model, path, logging.getLogger("fetch_weights"), strict=True)
    except CheckpointError as err:
        raise FetchError(f"{entry.config}: {without_path(str(err), path)}") from None
    return f"fits {entry.config} (all {len(report.loaded)} tensors, {report.source_format})"


def training_config_for(path: Path) -> Path | None:
    """The bundled model config whose training task would start from ``path`` (its name starts
    with the config's name; the longest such name), or None."""
    configs = [c for c in (ROOT / "config").glob("*.yml") if path.name.startswith(c.stem)]
    return max(configs, key=lambda c: len(c.stem), default=None)


def verify_unlisted(path: Path) -> str:
    """A weights file the list does not name, checked as the training task of its config loads
    it (not strict: the head may differ; the backbone and neck must fit)."""
    import logging

    from nanodet.config import load_config
    from nanodet.model import build_model
    from nanodet.weights.checkpoint import CheckpointError, load_weights

    config = training_config_for(path)
    if config is None:
        names = ", ".join(c.stem for c in sorted((ROOT / "config").glob("*.yml")))
        raise FetchError(
            "not in docker/weights.json and its name starts with no bundled model config's name, so no task would "
            f"use it (a training task takes /weights/<config name>*; configs: {names}): rename or remove it"
        )
    model = build_model(load_config(config).model.arch)
    try:
        report = load_weights(model, path, logging.getLogger("fetch_weights"))
    except CheckpointError as err:
        raise FetchError(f"config/{config.name}: {without_path(str(err), path)}") from None
    total = len(model.state_dict())
    return (
        f"not listed; fits config/{config.name} as its training start ({len(report.loaded)} of {total} tensors, "
        f"{report.source_format}); sha256 {file_sha256(path)}, {path.stat().st_size} bytes"
    )


def verify(entry: Entry, path: Path, digest: tuple[str, int] | None = None) -> str:
    """All checks of one file; raises :class:`FetchError`, else says what was checked (with the
    file's sha256 and size). ``digest``: its (sha256, size) when the download already hashed it."""
    sha256, size = digest or (file_sha256(path), path.stat().st_size)
    check_hash(entry, sha256, size)
    checked = check_backbone(entry, path) if entry.kind == "imagenet-backbone" else check_coco_checkpoint(entry, path)
    return f"{checked}; sha256 {sha256}, {size} bytes"


# --- install ---------------------------------------------------------------------------------


def verify_present(entry: Entry, dest: Path) -> str:
    """``--verify-only``: the file must be in ``dest`` and pass every check."""
    target = dest / entry.file_name
    if not target.is_file():
        raise FetchError(f"not in {dest} (the download step did not fetch it)")
    return verify(entry, target)


def install(entry: Entry, dest: Path, timeout: float) -> bool:
    """Download, verify and move one file into ``dest``. Returns True when it was downloaded,
    False when it was already there and verified; raises :class:`FetchError` with nothing left
    behind."""
    target = dest / entry.file_name
    if target.is_file():
        try:
            say(f"ok {entry.file_name}: already present, {verify(entry, target)}")
            return False
        except FetchError as err:
            say(f"{entry.file_name}: present in {dest} but {err}: downloading it again")
    tmp, sha256, size = fetch_to_temp(entry, dest, timeout)
    try:
        checked = verify(entry, tmp, (sha256, size))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    move_into_place(tmp, target)
    say(f"ok {entry.file_name}: downloaded from {entry.url}, {checked}")
    return True


def verify_all(entries: list[Entry], dest: Path, listed: list[Entry], missing_ok: bool = False) -> int:
    """``--verify-only``: every selected entry (absent ones are an error unless ``missing_ok``),
    then every other weights file in ``dest`` (put there by hand); returns the exit status."""
    checks: list[tuple[str, Callable[[], str]]] = []
    absent = []
    for entry in entries:
        if missing_ok and not (dest / entry.file_name).is_file():
            absent.append(entry.file_name)
        else:
            checks.append((entry.file_name, partial(verify_present, entry, dest)))
    selected = {e.file_name for e in entries}
    by_name = {e.file_name: e for e in listed}
    for path in sorted(dest.iterdir()):
        if path.name in selected or not path.is_file():
            continue
        if path.name in by_name:
            checks.append((path.name, partial(verify, by_name[path.name], path)))
        elif path.suffix.lower() in WEIGHT_SUFFIXES:
            checks.append((path.name, partial(verify_unlisted, path)))
    failed = []
    for name, check in checks:
        try:
            say(f"ok {name}: {check()}")
        except FetchError as err:
            say(f"ERROR {name}: {err}")
            failed.append(name)
        except Exception as err:  # noqa: BLE001 (one line per file, then the next)
            say(f"ERROR {name}: unexpected {type(err).__name__}: {err}")
            failed.append(name)
    if absent:
        say(f"not in {dest} (none downloaded): {', '.join(absent)}")
    summary = f"{len(checks) - len(failed)} verified, {len(failed)} failed, in {dest}"
    say(f"FAILED: {summary} ({', '.join(failed)})" if failed else f"done: {summary}")
    return 1 if failed else 0


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--verify-only", action="store_true", help="download nothing: check the files in --dest")
    parser.add_argument(
        "--missing-ok",
        action="store_true",
        help="with --verify-only: listed files absent from --dest are no error (offline builds)",
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
        entries = load_entries(args, entry_problems)
    except (ManifestError, OSError) as err:
        return report_manifest_error(err, args)
    if args.verify_only:
        try:
            listed = read_manifest(args.manifest)
            check_entries(listed, entry_problems)
        except ManifestError as err:
            return report_manifest_error(err, args)
        say(f"verifying the files in {args.dest}")
        return verify_all(entries, args.dest, listed, args.missing_ok)
    say(f"installing {len(entries)} files into {args.dest}")
    return run(entries, args.dest, args.timeout, install)


if __name__ == "__main__":
    sys.exit(main())
