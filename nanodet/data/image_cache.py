"""A cache of decoded training images, shared by the DataLoader workers (``cache_images``).

``none``: every sample decodes its image. ``ram``: each image is stored once, decoded at the
reduced size the augmentation needs (:meth:`~nanodet.data.transforms.TrainTransform.decode_factor`),
in one file in shared memory (``/dev/shm``); ``disk``: the same file in the temporary folder
(``TMPDIR``). Every process, the training process and each DataLoader worker, maps the same
file: one copy, whatever the number of workers. An image is stored the first time a worker
decodes it (during the first epoch) and read from the map afterwards; what is stored is exactly
what the decode gave, so the samples are those of an uncached dataset that decodes at each image's
reduction (``decode_per_draw=False``); uncached training decodes at each draw's own reduction,
which differs from them by resampling only (the same draws and boxes).

Budget: the whole set's size is reserved when the cache is made (``posix_fallocate``), so a
full disk or shared memory can never fail a write later. It must fit in half the available
memory and nine tenths of ``/dev/shm``'s free space (``ram``), or in four fifths of the free
space of the temporary folder (``disk``), divided among the training processes of the machine
(``LOCAL_WORLD_SIZE``, one cache each). A set that does not fit falls back to ``none`` with a
warning that gives both sizes.

The file is removed when the process that made it ends (or its cache is closed); a file left
by a process that was killed is removed by the next cache made in the same folder.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

CacheMode = Literal["none", "ram", "disk"]
SHM_FOLDER = Path("/dev/shm")
FILE_PREFIX = "nanodet-images-"
_ALIGN = 64  # each image starts on a cache line
_NAME = re.compile(rf"{FILE_PREFIX}(\d+)-[\w]+\.cache$")


@dataclass(frozen=True)
class Slot:
    """Where one image lives in the file and what it is: (height, width) at 1/``factor``."""

    offset: int
    height: int
    width: int
    factor: int

    @property
    def nbytes(self) -> int:
        return self.height * self.width * 3


class ImageCache:
    """One file: a byte of state per image (1 = stored), then each image's BGR pixels.

    Made by :func:`make_image_cache`; a worker process gets it by fork (the map is inherited) or
    by pickling (it opens the file again by its path)."""

    def __init__(self, path: Path, slots: Sequence[Slot | None], size: int, mode: CacheMode) -> None:
        self.path = path
        self.slots = list(slots)
        self.size = size
        self.mode = mode
        self._owner = os.getpid()
        self._open()
        self._finalizer = weakref.finalize(self, _remove_file, path, self._owner)

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ)
        self._state = np.frombuffer(self._map, dtype=np.uint8, count=len(self.slots))

    def __getstate__(self) -> dict:
        return {"path": self.path, "slots": self.slots, "size": self.size, "mode": self.mode, "owner": self._owner}

    def __setstate__(self, state: dict) -> None:
        self.path, self.slots, self.size, self.mode = state["path"], state["slots"], state["size"], state["mode"]
        self._owner = state["owner"]
        self._finalizer = None  # the owner removes the file
        self._open()

    def __len__(self) -> int:
        return len(self.slots)

    def slot(self, index: int) -> Slot | None:
        return self.slots[index]

    def stored(self) -> int:
        """How many images are stored."""
        return int(np.count_nonzero(self._state))

    def get(self, index: int) -> np.ndarray | None:
        """The stored image (a read-only view of the map), or None when not stored yet."""
        slot = self.slots[index]
        if slot is None or not self._state[index]:
            return None
        return np.frombuffer(self._map, np.uint8, slot.nbytes, slot.offset).reshape(slot.height, slot.width, 3)

    def put(self, index: int, image: np.ndarray, factor: int) -> bool:
        """Store the image decoded for ``index`` at ``1/factor``; False (nothing stored) when it is
        not the shape its slot was made for (a header that lied, another format) or the write fails."""
        slot = self.slots[index]
        if slot is None or image.shape != (slot.height, slot.width, 3) or factor != slot.factor:
            return False
        try:
            os.pwrite(self._fd, np.ascontiguousarray(image, dtype=np.uint8).data, slot.offset)
            os.pwrite(self._fd, b"\x01", index)  # after the pixels: a reader never sees half an image
        except OSError as err:
            log.warning("image cache %s: cannot store image %d (%s)", self.path, index, err.strerror)
            return False
        return True

    def close(self) -> None:
        """Unmap, and remove the file when this is the process that made it."""
        self._state = None
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if self._finalizer is not None:
            self._finalizer()


def _remove_file(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked worker that drops its copy must not remove the owner's file
        with contextlib.suppress(OSError):
            path.unlink()


def cache_folder(mode: CacheMode) -> Path:
    """Where a cache of this mode lives: shared memory, or the temporary folder."""
    return SHM_FOLDER if mode == "ram" else Path(tempfile.gettempdir())


def cache_budget(mode: CacheMode, folder: Path) -> tuple[int, str]:
    """(bytes a cache of this mode may take, how that was worked out): see the module's docstring."""
    processes = _local_processes()
    try:
        stat = os.statvfs(folder)
    except OSError as err:
        return 0, f"{folder} is not usable ({err.strerror})"
    free = stat.f_bavail * stat.f_frsize
    if mode == "ram":
        memory = available_memory()
        budget = min(memory // 2, free * 9 // 10)
        why = f"half of {_gib(memory)} available memory, at most 9/10 of {_gib(free)} free in {folder}"
    else:
        budget = free * 4 // 5
        why = f"4/5 of {_gib(free)} free in {folder}"
    if processes > 1:
        budget //= processes
        why += f", shared by {processes} training processes"
    return budget, why


def available_memory() -> int:
    """Bytes of memory this process can still get: ``MemAvailable``, less where the cgroup's
    limit leaves less."""
    available = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        with contextlib.suppress(OSError, ValueError):
            limit = int(Path(limit_file).read_text().strip())
            usage = int(Path(usage_file).read_text().strip())
            available = min(available, max(limit - usage, 0)) if available else max(limit - usage, 0)
            break
    return available


def _local_processes() -> int:
    value = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def layout(shapes: Sequence[tuple[int, int, int] | None]) -> tuple[list[Slot | None], int]:
    """Slots for images of these (height, width, factor) (None: never stored) after one state
    byte per image; the file's size."""
    offset = -(-max(len(shapes), 1) // 4096) * 4096
    slots: list[Slot | None] = []
    for shape in shapes:
        if shape is None:
            slots.append(None)
            continue
        slot = Slot(offset, *shape)
        slots.append(slot)
        offset += -(-slot.nbytes // _ALIGN) * _ALIGN
    return slots, offset


def make_image_cache(
    mode: CacheMode,
    shapes: Sequence[tuple[int, int, int] | None],
    folder: Path | None = None,
    budget: int | None = None,
) -> ImageCache | None:
    """A cache for images of these (height, width, factor), or None for ``none`` and for a set
    that does not fit the budget (:func:`cache_budget` unless ``budget`` is given; a warning says
    why). ``folder`` defaults to :func:`cache_folder`."""
    if mode == "none":
        return None
    folder = folder or cache_folder(mode)
    slots, size = layout(shapes)
    if budget is None:
        budget, why = cache_budget(mode, folder)
    else:
        why = "the given budget"
    if size > budget:
        log.warning(
            "cache_images: %s: the %d training images take %s decoded, more than the cache's %s (%s): "
            "not caching (cache_images: none)",
            mode,
            len(shapes),
            _gib(size),
            _gib(budget),
            why,
        )
        return None
    _remove_stale(folder)
    try:
        fd, name = tempfile.mkstemp(prefix=f"{FILE_PREFIX}{os.getpid()}-", suffix=".cache", dir=folder)
    except OSError as err:
        log.warning("cache_images: %s: cannot make a file in %s (%s): not caching", mode, folder, err.strerror)
        return None
    path = Path(name)
    try:
        try:
            os.posix_fallocate(fd, 0, size)  # reserved now: no write can find the space gone later
        except OSError as err:
            path.unlink()
            log.warning(
                "cache_images: %s: cannot reserve %s in %s (%s): not caching", mode, _gib(size), folder, err.strerror
            )
            return None
    finally:
        os.close(fd)
    cache = ImageCache(path, slots, size, mode)
    log.info(
        "cache_images: %s: %d images, %s decoded, in %s (budget %s: %s)",
        mode,
        len(shapes),
        _gib(size),
        path,
        _gib(budget),
        why,
    )
    return cache


def _remove_stale(folder: Path) -> None:
    """Remove cache files whose process is gone (killed before it could remove its own)."""
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = _NAME.match(entry.name)
            if match and not _alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    entry.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
