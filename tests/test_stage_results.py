"""The stages the platform reads: a tie between two stages goes to the newer one (the platform
orders stages by mAP, then timestamp), and with a protocol before 1.0.0 result.yaml names
usable weights from the first stage on, even when the task dies right after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from executor.result import ResultWriter
from executor.training import StageRecorder, TrainingPlan
from executor.workspace import make_training_workspace
from nanodet.config import load_config, save_config
from nanodet.engine.distributed import DistContext
from nanodet.engine.trainer import Callback, Trainer
from nanodet.inference.predictor import Predictor
from nanodet.weights.checkpoint import read_checkpoint

from .conftest import ROOT, synthetic_training_config
from .executor_helpers import NO_WEIGHTS


class BestFlags(Callback):
    def __init__(self) -> None:
        self.flags: list[bool] = []

    def on_eval_end(self, trainer, result, is_best) -> None:
        self.flags.append(is_best)


def test_a_tie_goes_to_the_newer_stage(tmp_path):
    """The same weights evaluated as epoch 1 and as epoch 2 (no step between): the same mAP by
    construction. The newer evaluation is best everywhere: the trainer's verdict, its
    model_best.ckpt, result.yaml's best_stage_name, the stage that keeps the pictures and the
    files copied to the top level."""
    cfg = synthetic_training_config(tmp_path / "data", train_images=8, val_images=6, epochs=2)
    cfg = cfg.merged({"evaluator": {"save_key": "AP_50"}})
    models = tmp_path / "models"
    models.mkdir()
    save_config(cfg, tmp_path / "train_cfg.yml")
    plan = TrainingPlan(
        model_config=str(tmp_path / "train_cfg.yml"),
        models_dir=str(models),
        tensorboard_dir=str(tmp_path / "tensorboard"),
        result_file=str(models / "result.yaml"),
        monitor_file=str(tmp_path / "monitor.txt"),
        task_id="t0000001tie",
        model_stages=True,
        saved_file_patterns=[r"\.json$", r"\.png$"],  # no ONNX export: not what this test is about
        iou_thr=0.5,
        conf_thr=0.35,
        seed=0,
        resume=False,
        device="cpu",
    )
    writer = ResultWriter(models, models / "result.yaml", True, plan.saved_file_patterns, 0.5, 0.35)
    flags = BestFlags()
    trainer = Trainer.from_config(cfg, models, DistContext(), callbacks=[flags, StageRecorder(writer, plan)])
    results = []
    for epoch in (1, 2):
        trainer.state.epoch = epoch
        results.append(trainer.evaluate())
    assert results[0].metrics == results[1].metrics  # the tie
    assert flags.flags == [True, True]
    assert trainer.state.best_epoch == 2 and read_checkpoint(models / "model_best.ckpt")["epoch"] == 2

    result = yaml.safe_load((models / "result.yaml").read_text())
    stages = result["model_stages"]
    assert stages["epoch_1"]["mAP"] == stages["epoch_2"]["mAP"] == results[1].metrics["AP_50"]
    assert stages["epoch_2"]["timestamp"] >= stages["epoch_1"]["timestamp"]
    assert result["best_stage_name"] == "epoch_2"
    pictures = {"confusion_matrix.png", "pr_curve.png", "per_class_AP.png", "val_images.png"}
    assert pictures <= set(stages["epoch_2"]["files"]) and not pictures & set(stages["epoch_1"]["files"])
    assert json.loads((models / "metrics.json").read_text())["epoch"] == 2  # the top level: the best stage's


KILL_AFTER_THE_FIRST_STAGE = """
import os, sys
sys.path.insert(0, sys.argv[1])
from executor import training

record = training.StageRecorder.on_eval_end

def record_then_die(self, trainer, result, is_best):
    record(self, trainer, result, is_best)
    os._exit(9)  # as a SIGKILL right after the first stage: no handler, no final copy, no result rewrite

training.StageRecorder.on_eval_end = record_then_die
from executor.app import main
sys.exit(main(["--in", sys.argv[2], "--out", sys.argv[3]]))
"""


def test_protocol_0_result_names_usable_weights_from_the_first_stage(tmp_path):
    """Protocol 0.0.1 (ymir 1.0/1.1: ``model`` + ``map``, files flat in /out/models): a task that
    dies right after its first stage leaves a result.yaml whose every file is at the top level,
    the weights and their config among them, and they load and detect; ``map`` is that stage's."""
    in_dir = make_training_workspace(
        tmp_path / "in",
        train_images=4,
        val_images=2,
        epochs=2,
        input_size=64,
        val_intervals=1,
        batch_size_per_gpu=4,
        workers_per_gpu=0,
        protocol_version="0.0.1",
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_THE_FIRST_STAGE, str(ROOT), str(in_dir), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "NANODET_WEIGHTS_DIR": str(NO_WEIGHTS),
            "TORCH_HOME": str(NO_WEIGHTS),
        },
    )
    assert proc.returncode == 9, proc.stdout[-2000:] + proc.stderr[-3000:]
    models = out / "models"
    assert not (models / "epoch_2").exists()  # it died after the first stage, as meant
    result = yaml.safe_load((models / "result.yaml").read_text())
    assert set(result) == {"model", "map"}
    assert {"nanodet_model.pth", "train_cfg.yml"} <= set(result["model"])
    for name in result["model"]:
        assert (models / name).is_file() and not (models / name).is_symlink(), name
    weights = read_checkpoint(models / "nanodet_model.pth")["state_dict"]
    assert len(weights) == 887
    predictor = Predictor(load_config(models / "train_cfg.yml"), models / "nanodet_model.pth", backend="torch")
    assert len(predictor.predict([np.zeros((64, 64, 3), np.uint8)])) == 1
    assert result["map"] == pytest.approx(json.loads((models / "epoch_1" / "metrics.json").read_text())["mAP"])
