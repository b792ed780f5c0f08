"""One torchrun training process: ``python -m executor.train_worker PLAN.json``.

A failure is left for the launcher (``launch.report_failure``), which reports it with its
return code."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .failures import classify
from .launch import report_failure
from .training import TrainingPlan, train_with_plan


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan_file = Path(sys.argv[1])
    try:
        train_with_plan(TrainingPlan.load(plan_file))
    except BaseException as err:  # noqa: BLE001 - reported to the launcher, then re-raised
        report_failure(*classify(err))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
