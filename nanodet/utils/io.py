"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .pause_points import pause_point


def atomic_write_file(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call ``write(name)`` to fill a temp file (already created) beside ``path``, fsync it, then
    rename it over ``path``. On any exception (SIGTERM included) the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The name is chosen before the file exists, so a signal raising at any point after it is
    # created (even as os.open returns, where mkstemp's file was left behind) removes it.
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        # the mode open() gives a new file (the platform reads results as another user)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
        write(tmp)
        pause_point(f"write:{path.name}")  # tests only: the data is in the temp file, not yet renamed
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename over ``path``."""

    def fill(name: str) -> None:
        with open(name, "wb") as f:
            write(f)

    atomic_write_file(path, fill)


def remove_stale_temp_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete the temp files ``atomic_write`` left in ``folder`` when a process was killed
    mid-write (``.<name>.<random>.tmp``). Call it only while nothing writes there."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy the file ``src`` to ``dst`` atomically."""
    import shutil

    with open(src, "rb") as source:
        atomic_write(dst, lambda f: shutil.copyfileobj(source, f))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch

    # torch writes the named file itself. Through a Python file object, an exception raised
    # mid-write (SIGTERM's handler) would leave torch's writer broken: its end-of-file write
    # then fails, replacing the exception, or aborts the process when the writer is destroyed.
    atomic_write_file(path, lambda name: torch.save(obj, name))
