"""Worker processes under torchrun, and which process this one is.

The task process (the one the container started) runs a task itself or, when it needs several
processes (one per GPU, or ``cpu_processes``), launches them on this machine:

    python -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node N TARGET ARGS...

Failure: a worker that fails writes ``{code, message}`` to the error file whose path the
launcher puts in its environment (``NANODET_ERROR_FILE``). The first failure is kept: the other
workers usually fail because of it (torchrun stops them, their collectives break). The launcher
raises it as the task's failure, so monitor.txt and the last stderr line carry the worker's
return code and reason; a worker that ended without writing one (killed) gives a generic
failure with torchrun's exit code.

Stopping: when the task process is stopped (SIGTERM from the platform, Ctrl-C), the launcher is
asked to stop too (torchrun passes SIGTERM on to its workers and waits for them) before the
failure is reported, so no worker keeps writing to /out after monitor.txt says the task failed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import ExecutorError, ReturnCode
from .paths import APP_ROOT

log = logging.getLogger("executor.launch")

ERROR_FILE_ENV = "NANODET_ERROR_FILE"
STOP_GRACE_S = 5.0  # then SIGKILL: docker stop allows 10 s in all


def process_rank() -> int:
    """This process's rank among torchrun's workers; 0 in the task process itself."""
    return int(os.environ.get("RANK", "0"))


def is_worker() -> bool:
    """True in a process torchrun started, False in the task process."""
    return "RANK" in os.environ


def torchrun_command(nproc: int, target: list[str]) -> list[str]:
    """``target`` (``["-m", module, *args]`` or ``[script, *args]``) in ``nproc`` processes on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(nproc),
        *target,
    ]


def run_workers(nproc: int, target: list[str], what: str) -> None:
    """Run ``target`` in ``nproc`` torchrun workers to completion; a worker's failure is raised
    here with its return code and reason (``what`` names the work in a generic failure)."""
    with tempfile.TemporaryDirectory(prefix="nanodet-workers-", ignore_cleanup_errors=True) as tmp:
        error_file = Path(tmp) / "error.json"
        # workers write no bytecode next to the sources: nothing outside /out and the temp dir
        env = {**os.environ, ERROR_FILE_ENV: str(error_file), "PYTHONDONTWRITEBYTECODE": "1"}
        log.info("launching %d processes with torchrun: %s", nproc, " ".join(target))
        returncode = run_launcher(torchrun_command(nproc, target), APP_ROOT, env)
        if returncode != 0:
            raise worker_failure(error_file, returncode, what)


def run_launcher(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run ``command`` to completion; its exit code. Stopped early (any exception while waiting,
    SIGTERM's included), it stops the command first: SIGTERM, then SIGKILL after STOP_GRACE_S."""
    proc = subprocess.Popen(command, cwd=cwd, env=env)
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def worker_failure(error_file: Path, returncode: int, what: str) -> ExecutorError:
    """The failure a worker wrote to ``error_file``, or a generic one when none did."""
    try:
        record = json.loads(error_file.read_text(encoding="utf-8"))
        return ExecutorError(str(record["message"]), ReturnCode(int(record["code"])))
    except (OSError, ValueError, KeyError, TypeError):
        return ExecutorError(
            f"{what}: a worker process failed without reporting why (torchrun exit code {returncode})", ReturnCode.MODEL
        )


def report_failure(code: int, message: str) -> None:
    """In a worker: leave this failure for the launcher, unless an earlier one is there already.
    Does nothing outside torchrun workers, and never raises (the failure is reported anyway)."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path:
        return
    record = json.dumps({"code": int(code), "message": message}).encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".error.", suffix=".tmp", dir=Path(path).parent)
        try:
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view) :]
            os.close(fd)
            fd = -1
            os.link(tmp, path)  # atomic, and never replaces an earlier record
        except FileExistsError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(tmp)
    except OSError as err:
        print(f"cannot leave the failure for the launcher in {path}: {err}", file=sys.stderr)
