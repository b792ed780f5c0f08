"""Training engine: checkpoints, exact resume, non-finite loss, DDP, eval CLI."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanodet.config import save_config
from nanodet.data.coco_dataset import load_coco
from nanodet.engine.distributed import DistContext
from nanodet.engine.run import train
from nanodet.engine.trainer import NonFiniteLossError, Trainer
from nanodet.inference.predictor import Predictor
from nanodet.weights.checkpoint import read_checkpoint

from .conftest import ROOT, synthetic_training_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


def _state(path: Path) -> dict:
    return read_checkpoint(path)["state_dict"]


def test_checkpoint_files_and_layout(data_root, tmp_path):
    cfg = synthetic_training_config(data_root, epochs=1)
    state = train(cfg, work_dir=tmp_path, progress=False, device="cpu")
    assert state.epoch == 1 and len(state.evaluations) == 1
    last = read_checkpoint(tmp_path / "model_last.ckpt")
    keys = last["state_dict"].keys()
    assert sum(k.startswith("model.") for k in keys) == 887 == sum(k.startswith("avg_model.") for k in keys)
    assert last["epoch"] == 1 and last["global_step"] == 6 and "optimizer_states" in last and "rng_states" in last
    assert (tmp_path / "model_best.ckpt").is_file()
    best = read_checkpoint(tmp_path / "nanodet_model_best.pth")["state_dict"]
    # the whole EMA model, as the official .pth: 645 inference keys + 242 of the aux branch
    assert len(best) == 887 and sum(k.startswith(("aux_fpn.", "aux_head.")) for k in best) == 242
    for k, v in best.items():
        assert torch.equal(v, last["state_dict"][f"avg_model.{k}"])
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # the official-style files feed straight into inference
    Predictor(cfg, tmp_path / "nanodet_model_best.pth").predict([torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()])
    Predictor(cfg, tmp_path / "model_last.ckpt")


def test_resume_equals_straight_run(data_root, tmp_path):
    """Epoch 1, stop, resume for epoch 2 == 2 epochs straight (CPU, same threads, no workers; a
    64 px input: what resume restores does not depend on it)."""
    cfg = synthetic_training_config(data_root, epochs=2, input_size=(64, 64))
    train(cfg, work_dir=tmp_path / "straight", progress=False, device="cpu")
    one = cfg.merged({"schedule": {"total_epochs": 1}})
    train(one, work_dir=tmp_path / "split", progress=False, device="cpu")
    state = train(cfg, work_dir=tmp_path / "split", progress=False, device="cpu", resume=True)
    assert state.epoch == 2 and [e.epoch for e in state.evaluations] == [2]
    a, b = _state(tmp_path / "straight" / "model_last.ckpt"), _state(tmp_path / "split" / "model_last.ckpt")
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= 1e-6, f"resumed weights differ by {worst}"


def test_resume_after_kill_mid_epoch(data_root, tmp_path):
    """A crash inside epoch 2 leaves epoch 1's checkpoint; resume restarts epoch 2 from it."""
    cfg = synthetic_training_config(data_root, epochs=2, input_size=(64, 64))

    class Crash(Exception):
        pass

    from nanodet.engine.trainer import Callback

    class KillInEpoch2(Callback):
        def on_step_end(self, trainer, losses):
            if trainer.state.step == 8:
                raise Crash

    with pytest.raises(Crash):
        train(cfg, work_dir=tmp_path, progress=False, device="cpu", callbacks=[KillInEpoch2()])
    assert read_checkpoint(tmp_path / "model_last.ckpt")["epoch"] == 1
    state = train(cfg, work_dir=tmp_path, progress=False, device="cpu", resume=True)
    assert state.epoch == 2 and state.step == 12


def test_resume_from_weights_of_another_model_names_the_file(data_root, tmp_path):
    """A readable training checkpoint whose weights do not fit the model (a tensor missing, of
    another shape) is one CheckpointError naming the file, not torch's RuntimeError half-way
    through the resume (the executor reports it as 300004)."""
    from nanodet.errors import CheckpointError

    cfg = synthetic_training_config(data_root, epochs=1)
    trainer = Trainer.from_config(cfg, tmp_path, DistContext())
    trainer.save_last()
    path = tmp_path / "model_last.ckpt"
    ckpt = torch.load(path, weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.startswith("model.head.gfl_cls"))
    for damage in ("missing", "shape"):
        damaged = dict(ckpt, state_dict=dict(ckpt["state_dict"]))
        if damage == "missing":
            del damaged["state_dict"][key]
        else:
            damaged["state_dict"][key] = torch.zeros(7, *ckpt["state_dict"][key].shape[1:])
        torch.save(damaged, tmp_path / f"{damage}.ckpt")
        with pytest.raises(CheckpointError, match=rf"{damage}\.ckpt: cannot resume this model from it"):
            Trainer.from_config(cfg, tmp_path / damage, DistContext()).resume(tmp_path / f"{damage}.ckpt")


def test_non_finite_loss_stops_with_clear_error(data_root, tmp_path):
    cfg = synthetic_training_config(data_root, epochs=1)
    trainer = Trainer.from_config(cfg, tmp_path, DistContext())
    batch = next(iter(trainer.train_loader))
    batch.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1, step 1: loss_qfl="):
        trainer.run_step(batch, 0)


def test_fine_tune_onto_other_classes_keeps_fitting_weights(data_root, tmp_path, plus_weights, caplog):
    caplog.set_level("INFO")
    cfg = synthetic_training_config(data_root, epochs=1, schedule={"load_model": str(plus_weights)})
    trainer = Trainer.from_config(cfg, tmp_path, DistContext())
    coco80 = read_checkpoint(plus_weights)["state_dict"]
    own = trainer.model.state_dict()
    assert torch.equal(own["backbone.conv1.0.weight"], coco80["backbone.conv1.0.weight"])
    # the box-distribution rows of the class conv transfer; the 80 COCO class rows do not
    n = len(cfg.class_names)
    assert torch.equal(own["head.gfl_cls.0.weight"][n:], coco80["head.gfl_cls.0.weight"][80:])
    assert "10 class-conv tensors rebuilt from 80 to 3 classes; box-distribution rows kept" in caplog.text


def test_gpu_ids_do_not_pick_the_device(data_root, tmp_path):
    """An official config naming GPU 3 trains where the process was started: on this CPU-only
    machine the CPU (``init_distributed``), without touching CUDA."""
    from nanodet.engine.distributed import init_distributed

    cfg = synthetic_training_config(data_root, epochs=1, device={"gpu_ids": [3], "batchsize_per_gpu": 4})
    ctx = init_distributed("auto")
    assert ctx.device == torch.device("cpu") and not torch.cuda.is_initialized()
    trainer = Trainer.from_config(cfg, tmp_path, ctx)
    losses = trainer.run_step(next(iter(trainer.train_loader)), 0)
    assert math.isfinite(losses["loss"]) and {p.device.type for p in trainer.model.parameters()} == {"cpu"}


def _env_one_thread():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_two_process_gloo_ddp(data_root, tmp_path):
    cfg = synthetic_training_config(data_root, epochs=1, save_dir=str(tmp_path / "work"))
    save_config(cfg, tmp_path / "cfg.yml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "nanodet",
            "train",
            str(tmp_path / "cfg.yml"),
            "--device",
            "cpu",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env_one_thread(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = read_checkpoint(tmp_path / "work" / "model_last.ckpt")
    # 48 images over 2 ranks at batch 8: 3 steps per epoch on each rank
    assert last["epoch"] == 1 and last["global_step"] == 3
    assert proc.stderr.count("eval: mAP") == 1  # rank 0 alone reports


def test_eval_cli_plumbing_equals_per_image_prediction(data_root, tmp_path):
    """What this checks is the eval CLI's plumbing: `nanodet eval` (dataset loader → batched,
    padded forward → CocoEvaluator) gives the numbers that Predictor.predict, one image at a time,
    scored by COCOeval here, gives. Both sides share the pre-processing, decode and NMS code and
    the metric is COCOeval on both, so the metric itself is not what is checked here: our AP
    against hand-computed cases is tests/test_coco_eval.py. The weights are randomized so that
    there are detections, some of which hit the ground truth: the numbers compared are not zero,
    and small ones are compared relatively."""
    from pycocotools.cocoeval import COCOeval

    from nanodet.data.image_io import read_image
    from nanodet.weights.checkpoint import save_pth

    from .conftest import randomized_model

    cfg = synthetic_training_config(data_root, epochs=1)
    save_config(cfg, tmp_path / "cfg.yml")
    save_pth(randomized_model(cfg, seed=1, cls_bias=-2.0), tmp_path / "random.pth")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanodet",
            "eval",
            str(tmp_path / "cfg.yml"),
            "--weights",
            str(tmp_path / "random.pth"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env_one_thread(),
        check=True,
        timeout=300,
    ).stdout
    ours = json.loads(out)["metrics"]
    gt = load_coco(cfg.data.val.ann_path)
    predictor = Predictor(cfg, tmp_path / "random.pth", optimize=False)
    cat_ids = sorted(gt.getCatIds())
    results = []
    for img_id, info in gt.imgs.items():
        dets = predictor.predict([read_image(Path(cfg.data.val.img_path) / info["file_name"])])[0]
        for (x1, y1, x2, y2), s, lab in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist()):
            results.append(
                {"image_id": img_id, "category_id": cat_ids[lab], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
            )
    assert len(results) > 10 * len(gt.imgs)
    ev = COCOeval(gt, gt.loadRes(results), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[8] > 0.05 and ev.stats[1] > 1e-3  # AR@100 and AP50: some detections hit
    for name, index in (("mAP", 0), ("AP_50", 1), ("AP_75", 2), ("AR_100", 8)):
        assert ours[name] == pytest.approx(ev.stats[index], rel=1e-3, abs=1e-6), name
