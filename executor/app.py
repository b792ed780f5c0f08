"""Task dispatch, as the protocol lays it out.

    read /in/env.yaml → run_training?  → training
                        else: run_mining? → mining (progress 0→0.5 when infer follows)
                              run_infer?  → infer  (0.5→1)
                        neither → warn, exit 0

Output paths of env.yaml outside /out are refused (300001) before anything is written. Tasks
that need several processes run them under torchrun (``launch.py``); a worker runs this same
``main`` (mining/infer) or ``train_worker`` (training) and leaves its failure for the launcher.

Every failure ends with monitor.txt in the error state (return code + one-line reason),
the reason as the last line on stderr, and a non-zero exit code. SIGTERM (the platform
stopping the task) is no failure of the task: outputs stay consistent, monitor.txt goes to
the error state *without* a return code (the platform then shows its own stop, not one of
ours; the reason is on the record's second line), and the exit code is 143 (128 + SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from pathlib import Path

from nanodet.utils.io import remove_stale_temp_files

from .errors import TaskTerminated
from .failures import classify
from .launch import is_worker, process_rank, report_failure
from .monitor import Monitor
from .paths import MONITOR_NAME, OUT_ROOT, PathMapper, check_output_paths, monitor_path
from .protocol import EnvConfig, PredictConfig, TrainingConfig, parse_env, parse_task_config, read_yaml

log = logging.getLogger("executor")

STOPPED_EXIT_CODE = 128 + signal.SIGTERM  # the shell's code for a process ended by SIGTERM


def _on_sigterm(signum, frame) -> None:
    raise TaskTerminated("task stopped by SIGTERM")


def run(env: EnvConfig, mapper: PathMapper, monitor: Monitor) -> None:
    config_file = mapper(env.input.config_file)
    raw = read_yaml(config_file, "task config")
    if env.run_training:
        from .training import run_training_task

        hp = parse_task_config(TrainingConfig, raw, str(config_file))
        run_training_task(env, hp, mapper, monitor)
        return
    if not (env.run_mining or env.run_infer):
        log.warning("env.yaml sets none of run_training, run_mining, run_infer: nothing to do")
        monitor.done()
        return
    from .predict import run_predict_tasks

    run_predict_tasks(env, parse_task_config(PredictConfig, raw, str(config_file)), mapper, monitor)
    monitor.done()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="NanoDet-Plus YMIR executor")
    parser.add_argument("--in", dest="in_dir", default="/in", help="folder standing for /in (local runs)")
    parser.add_argument("--out", dest="out_dir", default="/out", help="folder standing for /out (local runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    mapper = PathMapper(Path(args.in_dir), Path(args.out_dir))
    env_file = mapper("/in/env.yaml")
    monitor = Monitor(mapper(f"{OUT_ROOT}/{MONITOR_NAME}"), "default-task")  # until env.yaml says where
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        env = parse_env(read_yaml(env_file, "env.yaml"), str(env_file))
        monitor = Monitor(mapper(monitor_path(env.output)), env.task_id)
        monitor.enabled = process_rank() == 0  # under torchrun rank 0 reports
        check_output_paths(env.output, str(env_file))  # nothing is written outside the output root
        mapper(env.output.root_dir).mkdir(parents=True, exist_ok=True)
        if not is_worker():  # the task process, before anything writes: a killed run's leftovers
            stale = remove_stale_temp_files(mapper(env.output.root_dir)) + remove_stale_temp_files(
                mapper(env.output.models_dir), recursive=True
            )
            if stale:
                log.info("removed %d temp files left by an interrupted run", len(stale))
        with monitor.heartbeat():  # the record changes at least every HEARTBEAT_S, whatever the phase
            run(env, mapper, monitor)
        return 0
    except TaskTerminated as err:  # asked for by the platform: report no error code of ours
        try:
            monitor.stopped(str(err))
        except OSError as write_err:
            print(f"cannot write monitor file: {write_err}", file=sys.stderr)
        sys.stdout.flush()
        print(f"stopped: {err} (no error code: the platform asked for it)", file=sys.stderr)
        return STOPPED_EXIT_CODE
    except BaseException as err:  # noqa: BLE001 - every failure is reported the same way
        if isinstance(err, SystemExit) and err.code in (0, None):
            raise
        code, message = classify(err)
        report_failure(code, message)  # in a torchrun worker: for the launcher, which reports it
        try:
            monitor.error(int(code), message, traceback.format_exc())
        except OSError as write_err:
            print(f"cannot write monitor file: {write_err}", file=sys.stderr)
        sys.stdout.flush()
        print(f"error {int(code)}: {message}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
