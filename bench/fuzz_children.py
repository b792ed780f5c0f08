"""One forked child per input, for the fuzzers: whatever the input does to the child (a signal,
a hang, memory), the parent goes on and records it.

The parent forks after its imports (PyTorch, OpenCV), so a child starts in about a millisecond
instead of the seconds a fresh interpreter takes. The child runs under ``RLIMIT_AS`` (address
space), ``RLIMIT_CPU`` (CPU seconds: ``SIGXCPU`` when spent) and no core files; the parent
also kills it after a wall-clock limit (a child that sleeps spends no CPU). The child reports
one JSON line on a pipe: what it did, or the exception it raised, sorted into documented
(the error the code promises) and undocumented.
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import select
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

GIB = 1 << 30

# What a child can come to
LOADED, REFUSED, UNDOCUMENTED, MEMORY, SIGNAL, TIMEOUT = (
    "loaded",
    "refused",
    "undocumented",
    "memory",
    "signal",
    "timeout",
)
OUTCOMES = (LOADED, REFUSED, UNDOCUMENTED, SIGNAL, TIMEOUT, MEMORY)
# Allocation failures as PyTorch and Python word them, also when wrapped in a documented error
_MEMORY_SIGNS = ("can't allocate memory", "MemoryError", "out of memory", "std::bad_alloc")


@dataclass
class ChildResult:
    outcome: str  # one of OUTCOMES
    detail: str = ""  # exception type and message, or the signal
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_growth_mib: float = 0.0  # the child's peak resident memory beyond its size at the fork


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the reports."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def _status_kib(field: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` (``VmHWM``: its peak)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _name(err: BaseException) -> str:
    """``IndexError``, ``struct.error``: the class as one would import it."""
    module = type(err).__module__
    return type(err).__qualname__ if module == "builtins" else f"{module}.{type(err).__qualname__}"


def _child(fn: Callable[[], None], documented: tuple[type[BaseException], ...], out: int, limits: tuple) -> None:
    """The forked side: limits, quiet output, run, one JSON report. Never returns."""
    try:
        address_space, cpu_s = limits
        faulthandler.disable()  # pytest's, inherited: a crash is the parent's to report, not a traceback dump
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
        rss_start = _status_kib("VmRSS")
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        try:
            fn()
            report = {"outcome": LOADED}
        except documented as err:
            text = str(err)
            outcome = MEMORY if any(sign in text for sign in _MEMORY_SIGNS) else REFUSED
            report = {"outcome": outcome, "detail": f"{type(err).__name__}: {text[:400]}"}
        except MemoryError as err:
            report = {"outcome": MEMORY, "detail": f"MemoryError: {str(err)[:400]}"}
        except BaseException as err:  # noqa: BLE001 - sorting every exception is the point
            report = {"outcome": UNDOCUMENTED, "detail": f"{_name(err)}: {str(err)[:400]}"}
        report["rss_growth_mib"] = max(0, _status_kib("VmHWM") - rss_start) / 1024
        os.write(out, (json.dumps(report) + "\n").encode())
    finally:
        os._exit(0)


@dataclass
class Limits:
    """What a child may use: ``cpu_s`` CPU seconds (the time limit), ``wall_s`` of wall clock
    (a backstop for a child that sleeps), ``address_space`` bytes."""

    wall_s: float = 60.0
    cpu_s: int = 10
    address_space: int = 2 * GIB


@dataclass
class _Running:
    key: Any
    pid: int
    fd: int
    start: float
    data: bytes = b""


def run_children(
    work: Iterable[tuple[Any, Callable[[], None]]],
    documented: tuple[type[BaseException], ...],
    limits: Limits,
    jobs: int = 1,
) -> Iterator[tuple[Any, ChildResult]]:
    """Run each ``(key, fn)`` of ``work`` in its own forked child, at most ``jobs`` at a time,
    and yield ``(key, what came of it)`` as each ends. ``work`` is consumed lazily, one item
    when a child may start (so it can write the file that child reads just before)."""
    pending = iter(work)
    running: dict[int, _Running] = {}
    more = True
    while running or more:
        while more and len(running) < jobs:
            item = next(pending, None)
            if item is None:
                more = False
                break
            child = _spawn(*item, documented, limits)
            running[child.fd] = child
        if not running:
            break
        now = time.monotonic()
        wait = max(0.0, min(c.start + limits.wall_s for c in running.values()) - now)
        ready, _, _ = select.select(list(running), [], [], wait)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                running[fd].data += chunk
            else:
                child = running.pop(fd)
                yield child.key, _finish(child, limits, timed_out=False)
        now = time.monotonic()
        for fd in [fd for fd, c in running.items() if now - c.start >= limits.wall_s]:
            child = running.pop(fd)
            os.kill(child.pid, signal.SIGKILL)
            yield child.key, _finish(child, limits, timed_out=True)


def run_in_child(
    fn: Callable[[], None],
    documented: tuple[type[BaseException], ...],
    wall_s: float = 60.0,
    cpu_s: int = 10,
    address_space: int = 2 * GIB,
) -> ChildResult:
    """Run ``fn`` in a forked child and say what came of it (see the module docstring)."""
    ((_, result),) = run_children([(None, fn)], documented, Limits(wall_s, cpu_s, address_space))
    return result


def _spawn(key: Any, fn: Callable[[], None], documented: tuple, limits: Limits) -> _Running:
    read_end, write_end = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(fn, documented, write_end, (limits.address_space, limits.cpu_s))
    os.close(write_end)
    return _Running(key, pid, read_end, start)


def _finish(child: _Running, limits: Limits, timed_out: bool) -> ChildResult:
    """Reap ``child`` and read its report."""
    os.close(child.fd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - child.start
    cpu = usage.ru_utime + usage.ru_stime
    if timed_out:
        return ChildResult(TIMEOUT, f"still running after {limits.wall_s:.0f} s (wall clock)", wall, cpu)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return ChildResult(TIMEOUT, f"more than {limits.cpu_s} s of CPU (SIGXCPU)", wall, cpu)
        return ChildResult(SIGNAL, f"killed by {signal.Signals(sig).name}", wall, cpu)
    try:
        report = json.loads(child.data.decode())
    except ValueError:
        return ChildResult(SIGNAL, f"exited with {os.waitstatus_to_exitcode(status)} without a report", wall, cpu)
    growth = report.get("rss_growth_mib", 0.0)
    outcome = MEMORY if growth * 2**20 > limits.address_space else report["outcome"]
    return ChildResult(outcome, report.get("detail", ""), wall, cpu, growth)
