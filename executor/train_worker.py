"""One torchrun training process: ``python -m executor.train_worker PLAN.json``.

A failure on rank 0 leaves ``error.json`` beside the plan so the launcher reports the
right return code."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from .failures import classify
from .training import TrainingPlan, train_with_plan


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan_file = Path(sys.argv[1])
    try:
        train_with_plan(TrainingPlan.load(plan_file))
    except BaseException as err:  # noqa: BLE001 - reported to the launcher, then re-raised
        if os.environ.get("RANK", "0") == "0":
            code, message = classify(err)
            plan_file.with_name("error.json").write_text(json.dumps({"code": int(code), "message": message}))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
