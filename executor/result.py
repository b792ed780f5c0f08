"""``/out/models/result.yaml`` in the form the task's protocol version needs.

- protocol >= 1.0.0: ``model_stages`` (one per evaluation: the 10 latest plus the best),
  ``best_stage_name``, ``mAP``, ``evaluate_config``; stage files live in
  ``/out/models/<stage>/``.
- older: ``model: [files]`` and ``map``, files flat in ``/out/models``.
Either way the best stage's files are copied to the top level as soon as it becomes best, before
result.yaml is rewritten, so the old form names usable weights from the first stage on (a task
killed mid-run still leaves a result the platform can pack). Floats are plain Python floats in
[0, 1]; file names are relative; no symlinks.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nanodet.utils.io import atomic_copy, atomic_write_text

MAX_LATEST_STAGES = 10


@dataclass
class Stage:
    name: str
    epoch: int
    files: list[str]
    mAP: float
    mAR: float
    tp: int
    fp: int
    fn: int
    timestamp: int = field(default_factory=lambda: int(time.time()))

    def as_yaml(self) -> dict:
        return {
            "stage_name": self.name,
            "files": list(self.files),
            "timestamp": self.timestamp,
            "mAP": _unit(self.mAP),
            "mAR": _unit(self.mAR),
            "tp": int(self.tp),
            "fp": int(self.fp),
            "fn": int(self.fn),
        }


def _unit(x: float) -> float:
    return float(min(max(float(x), 0.0), 1.0))


def stage_name(epoch: int) -> str:
    return f"epoch_{epoch}"


def keep_file(name: str, patterns: list[str]) -> bool:
    """``ymir_saved_file_patterns``: ``re.search`` patterns; none means keep everything."""
    return not patterns or any(re.search(p, name) for p in patterns)


class ResultWriter:
    def __init__(
        self,
        models_dir: Path,
        result_file: Path,
        model_stages: bool,
        patterns: list[str],
        iou_thr: float,
        conf_thr: float,
    ) -> None:
        self.models_dir = models_dir
        self.result_file = result_file
        self.model_stages = model_stages
        self.patterns = patterns
        self.evaluate_config = {"iou_thr": float(iou_thr), "conf_thr": float(conf_thr)}
        self.stages: dict[str, Stage] = {}
        self.best: str | None = None

    def load_existing(self) -> None:
        """Keep the stages of an earlier (interrupted) run of the same task when resuming."""
        if not self.result_file.is_file():
            return
        data = yaml.safe_load(self.result_file.read_text(encoding="utf-8")) or {}
        for name, s in (data.get("model_stages") or {}).items():
            if (self.models_dir / name).is_dir():
                epoch = int(name.split("_")[-1]) if name.split("_")[-1].isdigit() else 0
                self.stages[name] = Stage(
                    name,
                    epoch,
                    list(s["files"]),
                    s["mAP"],
                    s.get("mAR", 0.0),
                    s.get("tp", 0),
                    s.get("fp", 0),
                    s.get("fn", 0),
                    s["timestamp"],
                )
        self.best = data.get("best_stage_name") if data.get("best_stage_name") in self.stages else None

    def add_stage(self, stage: Stage, is_best: bool) -> None:
        """Record a stage; ``is_best``: the trainer's verdict (on a tie the newer stage is best,
        as the platform orders stages by mAP, then timestamp)."""
        self.stages[stage.name] = stage
        if is_best or self.best is None:
            self.best = stage.name
            self.publish_best_to_top_level()  # before result.yaml names them (the old form)
        dropped = self._prune()
        self.write()
        for name in dropped:  # only once result.yaml no longer names them: a crash never leaves it dangling
            shutil.rmtree(self.models_dir / name, ignore_errors=True)

    def retract_files(self, name: str, files: list[str]) -> None:
        """Take ``files`` off stage ``name``'s list, rewrite result.yaml, then delete them from
        its folder (in that order: result.yaml never names a file that is gone)."""
        stage = self.stages.get(name)
        if stage is None:
            return
        gone = [f for f in stage.files if f in files]
        if not gone:
            return
        stage.files = [f for f in stage.files if f not in gone]
        self.write()
        for f in gone:
            (self.models_dir / name / f).unlink(missing_ok=True)

    def add_to_best(self, name: str) -> None:
        """A file written into the best stage's folder after its evaluation (the labelled set's
        embeddings, at the end of training): listed, copied to the top level (that file only: the
        others are there already), result.yaml rewritten."""
        if self.best is None:
            return
        stage = self.stages[self.best]
        if name not in stage.files:
            stage.files.append(name)
        atomic_copy(self.models_dir / self.best / name, self.models_dir / name)
        self.write()

    def _prune(self) -> list[str]:
        latest = sorted(self.stages.values(), key=lambda s: s.epoch)[-MAX_LATEST_STAGES:]
        keep = {s.name for s in latest} | {self.best}
        dropped = [name for name in self.stages if name not in keep]
        for name in dropped:
            del self.stages[name]
        return dropped

    def write(self) -> None:
        if not self.stages or self.best is None:
            return
        best = self.stages[self.best]
        if self.model_stages:
            data = {
                "best_stage_name": best.name,
                "mAP": _unit(best.mAP),
                "model_stages": {name: s.as_yaml() for name, s in self.stages.items()},
                "evaluate_config": self.evaluate_config,
            }
        else:
            data = {"model": [f for f in best.files if (self.models_dir / f).is_file()], "map": _unit(best.mAP)}
        atomic_write_text(self.result_file, yaml.safe_dump(data, sort_keys=False))

    def publish_best_to_top_level(self) -> None:
        """Copy the best stage's files to ``/out/models`` (the verifier hands only those on)."""
        if self.best is None:
            return
        for name in self.stages[self.best].files:
            src = self.models_dir / self.best / name
            if src.is_file():
                atomic_copy(src, self.models_dir / name)
