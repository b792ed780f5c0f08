"""Exported graphs that can be used again instead of exporting the same model once more.

Exporting Plus-m to ONNX takes seconds (the TorchScript tracer and ONNX passes): on a
thousand small images that is a fifth of a ``nanodet detect`` run, paid again every run.
An export is keyed by everything it depends on: the weights file's bytes, the model
architecture and :class:`~.spec.ModelSpec`, the export options, the torch version and this
package's model and export code. The key is stored in the file's metadata
(``nanodet_export_key``) and checked before a file is used, so an export is never used for
other weights, another config or changed code, whatever its file name.

Where a used-again export comes from, first found wins:

* the ``nanodet_model.onnx`` beside the weights: a training stage writes its graph there,
  keyed by the stage's weights;
* the export cache: ``$NANODET_CACHE_DIR``, else ``$XDG_CACHE_HOME/nanodet/exports``, else
  ``~/.cache/nanodet/exports``. A new export is written there when the folder is writable.
  Otherwise it is kept in memory only: no error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
from functools import cache
from pathlib import Path

from ..config import NanoDetConfig
from ..errors import ExportError
from ..utils.io import atomic_write
from .exported import read_metadata
from .spec import ModelSpec

log = logging.getLogger(__name__)

KEY = "nanodet_export_key"
STAGE_GRAPH = "nanodet_model.onnx"  # what a training stage writes beside its weights
_CODE = (
    "model",
    "deploy/graph.py",
    "deploy/export.py",
    "deploy/interface.py",
    "deploy/spec.py",
    "inference/postprocess.py",
)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@cache
def torch_version() -> str:
    """The installed torch's version (its package metadata: the same string as
    ``torch.__version__``, without importing torch for a cache lookup)."""
    return importlib.metadata.version("torch")


@cache
def code_digest() -> str:
    """sha256 of the source files the exported graph is made of (this package's model, graph
    and export code): an export made by other code is not used."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in _CODE:
        files = sorted((root / name).rglob("*.py")) if (root / name).is_dir() else [root / name]
        for path in files:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def export_key(weights_digest: str, cfg: NanoDetConfig, dynamic_batch: bool) -> str:
    """The key of an ONNX export of ``cfg``'s model with the weights of that digest."""
    parts = {
        "weights": weights_digest,
        "arch": cfg.model.arch.model_dump(mode="json"),
        "spec": ModelSpec.from_config(cfg).to_metadata(),
        "dynamic_batch": dynamic_batch,
        "torch": torch_version(),
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_dir() -> Path | None:
    """The export cache folder; None when there is none (no home directory to put it in)."""
    if os.environ.get("NANODET_CACHE_DIR"):
        return Path(os.environ["NANODET_CACHE_DIR"])
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except (RuntimeError, KeyError):  # a user id without a passwd entry and no HOME (docker --user)
        return None
    return base / "nanodet" / "exports"


def key_of(path: Path) -> str | None:
    """The export key in an ONNX file's metadata; None when it has none or is no ONNX file."""
    try:
        return read_metadata(path).get(KEY)
    except (ExportError, OSError):
        return None


def find_exports(weights: Path, key: str) -> list[Path]:
    """The existing exports with this key, first to use first: the stage graph beside
    ``weights``, then the cache's."""
    folder = cache_dir()
    candidates = (weights.parent / STAGE_GRAPH, folder / f"{key}.onnx" if folder else None)
    return [c for c in candidates if c is not None and c.is_file() and key_of(c) == key]


def store_export(data: bytes, key: str) -> Path | None:
    """Keep an export in the cache (atomically); None when the cache folder is not writable."""
    folder = cache_dir()
    if folder is None:
        return None
    path = folder / f"{key}.onnx"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(data))
    except OSError as err:
        log.debug("export cache %s not writable (%s): the export stays in memory", path.parent, err)
        return None
    return path
