"""The YMIR loop through start.py: train from the image's COCO checkpoint, mine, train again
from the previous round's best stage; and the starting-weights order around it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from executor.workspace import make_predict_workspace, make_training_workspace
from nanodet.config import BackboneConfig, ap_key, load_config, recall_key
from nanodet.model import build_model
from nanodet.model.backbone import ShuffleNetV2
from nanodet.weights.checkpoint import read_checkpoint, save_pth
from nanodet.weights.imagenet import IMAGENET_BACKBONES

from .conftest import CONFIG_DIR, randomized_model
from .executor_helpers import assert_failure, assert_success, check_training_outputs, run_start
from .old_checkpoints import save_lightning_checkpoint

PREVIOUS_IMAGE_PATTERNS = "model_last.ckpt, model_best.ckpt, nanodet_model_best.pth, .*.json, .*.yaml, .*.yml"
SMALL = dict(epochs=2, input_size=128, val_intervals=1, batch_size_per_gpu=8, workers_per_gpu=0)

# the tests share a module fixture (a whole task): one xdist worker runs them all, so it runs once
pytestmark = pytest.mark.xdist_group("executor-loop")


def write_official_coco_checkpoint(path: Path) -> None:
    """What the official release holds: a Lightning 1.4 checkpoint of the 80-class model with
    ``model.*`` and ``avg_model.*`` (887 keys each) and Lightning's pickled bookkeeping (callbacks
    keyed by class, hyper-parameters), as ``nanodet-plus-m_320_checkpoint.ckpt``."""
    cfg = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml")
    save_lightning_checkpoint(randomized_model(cfg, seed=3).state_dict(), path, "1.4.9")


def log_lines(text: str, pattern: str) -> list[str]:
    return [line.split(": ", 1)[-1] for line in text.splitlines() if re.search(pattern, line)]


def stage_checks(out_dir: Path, iou_thr: float = 0.5) -> dict:
    """Every stage: mAP and mAR = that epoch's AP and recall at iou_thr (metrics.json), a weights
    file listed, the whole EMA model (aux branch included) in it; the best stage has the highest
    mAP, the newest of those on a tie (the platform's order)."""
    result = check_training_outputs(out_dir)
    models = out_dir / "models"
    for name, stage in result["model_stages"].items():
        assert "nanodet_model.pth" in stage["files"] and "train_cfg.yml" in stage["files"], stage["files"]
        metrics = json.loads((models / name / "metrics.json").read_text())
        assert metrics["epoch"] == int(name.split("_")[1])
        assert stage["mAP"] == pytest.approx(metrics["coco"][ap_key(iou_thr)], abs=1e-12)
        assert stage["mAP"] == pytest.approx(metrics["mAP"], abs=1e-12)
        assert stage["mAR"] == pytest.approx(metrics["coco"][recall_key(iou_thr)], abs=1e-12)
        assert stage["mAR"] == pytest.approx(metrics["mAR"], abs=1e-12)
        assert 0.0 <= metrics["coco"]["mAP"] <= metrics["coco"]["AP_50"] + 1e-9
        assert {k: metrics[k] for k in ("tp", "fp", "fn")} == {k: stage[k] for k in ("tp", "fp", "fn")}
        weights = read_checkpoint(models / name / "nanodet_model.pth")["state_dict"]
        assert len(weights) == 887 and sum(k.startswith(("aux_fpn.", "aux_head.")) for k in weights) == 242
    top = max(s["mAP"] for s in result["model_stages"].values())
    tied = [name for name, s in result["model_stages"].items() if s["mAP"] == top]
    assert result["best_stage_name"] == max(tied, key=lambda name: int(name.split("_")[1]))
    return result


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Round 1 from the image's COCO checkpoint → mining on its model → round 2 from round 1."""
    root = tmp_path_factory.mktemp("loop")
    weights = root / "weights"
    weights.mkdir()
    write_official_coco_checkpoint(weights / "nanodet-plus-m_320_checkpoint.ckpt")
    env = {"NANODET_WEIGHTS_DIR": str(weights)}

    r1_in = make_training_workspace(root / "r1" / "in", train_images=16, val_images=8, **SMALL)
    r1 = run_start(r1_in, root / "r1" / "out", env=env)
    assert_success(r1, root / "r1" / "out")

    mine_in = make_predict_workspace(
        root / "mine" / "in", root / "r1" / "out" / "models", candidates=8, mining=True, infer=False
    )
    mining = run_start(mine_in, root / "mine" / "out", env=env)
    assert_success(mining, root / "mine" / "out")

    result1 = yaml.safe_load((root / "r1" / "out" / "models" / "result.yaml").read_text())
    best = result1["best_stage_name"]
    r2_in = make_training_workspace(
        root / "r2" / "in",
        train_images=16,
        val_images=8,
        seed=5,
        ymir_saved_file_patterns=PREVIOUS_IMAGE_PATTERNS,
        pretrained_model_params=[f"/in/models/{best}/{f}" for f in result1["model_stages"][best]["files"]],
        **SMALL,
    )
    shutil.copytree(root / "r1" / "out" / "models", r2_in / "models")
    r2 = run_start(r2_in, root / "r2" / "out", env=env)
    assert_success(r2, root / "r2" / "out")
    return {"root": root, "weights": weights, "r1": r1, "mining": mining, "r2": r2, "best1": best}


def test_round_1_starts_from_the_images_coco_checkpoint(loop):
    out = loop["r1"].stdout + loop["r1"].stderr
    ckpt = loop["weights"] / "nanodet-plus-m_320_checkpoint.ckpt"
    assert f"starting weights: COCO checkpoint {ckpt}" in out
    # 80 COCO classes onto the project's 3 (none of them COCO's): the box rows of the class convs
    # transfer, the class rows start anew; everything else loads
    assert "10 class-conv tensors rebuilt from 80 to 3 classes; box-distribution rows kept (32 per tensor)" in out
    assert "new classes at their initial rows: circle, square, triangle" in out
    assert re.search(r"loaded .*nanodet-plus-m_320_checkpoint.ckpt: 887 tensors loaded, 0 skipped \(shape\)", out)
    assert "assign-guidance branch (aux_fpn, aux_head): " in out and "tensors restored from" in out
    stage_checks(loop["root"] / "r1" / "out")


def test_mining_ranks_the_candidates_with_round_1s_model(loop):
    """The scores are those of round 1's best model: recomputed here, in this process, from that
    stage's weights (batched as the task batches), they match the task's result.tsv."""
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches
    from nanodet.inference.predictor import Predictor
    from nanodet.mining.uncertainty import uncertainty_scores

    root = loop["root"]
    lines = (root / "mine" / "out" / "result.tsv").read_text().splitlines()
    written = {line.split("\t")[0]: float(line.split("\t")[1]) for line in lines}
    scores = [float(line.split("\t")[1]) for line in lines]
    assert len(lines) == 8 and scores == sorted(scores, reverse=True) and scores[0] > 0

    models = root / "r1" / "out" / "models"
    predictor = Predictor(
        load_config(models / "train_cfg.yml"), models / loop["best1"] / "nanodet_model.pth", backend="torch"
    )
    mine_in = root / "mine" / "in"
    listed = (mine_in / "candidate-index.tsv").read_text().split()
    paths = [mine_in / p.removeprefix("/in/") for p in listed]
    batch_size = yaml.safe_load((mine_in / "config.yaml").read_text())["batch_size_per_gpu"]
    dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
    ours = {}
    for batch in inference_batches(dataset, batch_size, 0):
        levels = predictor.forward_levels(batch.images)
        hw = (batch.images.shape[2], batch.images.shape[3])
        values = uncertainty_scores("aldd", levels, predictor.num_classes, hw).tolist()
        ours.update((f"/in/{p.relative_to(mine_in)}", v) for p, v in zip(batch.paths, values))
    assert ours.keys() == written.keys()
    for path, value in written.items():  # the task ran ONNX Runtime: float noise only
        assert value == pytest.approx(ours[path], rel=1e-3, abs=1e-5), path


def test_round_2_starts_from_round_1_with_its_aux_branch(loop):
    out = loop["r2"].stdout + loop["r2"].stderr
    assert f"starting weights: pretrained model /in/models/{loop['best1']}/nanodet_model.pth" in out.replace(
        str(loop["root"] / "r2" / "in"), "/in"
    )
    assert "training recipe: nanodet-plus-m_320.yml" in out
    assert "887 tensors loaded, 0 skipped (shape), 0 missing" in out
    assert "assign-guidance branch (aux_fpn, aux_head): 242 tensors restored from" in out
    # the tensors themselves: round 2's model, built from its saved config as its trainer builds it
    # (before any step), equals round 1's best stage, aux branch included
    from nanodet.engine.build import build_training_model

    cfg = load_config(loop["root"] / "r2" / "out" / "models" / "train_cfg.yml")
    start = build_training_model(cfg).state_dict()
    best = read_checkpoint(loop["root"] / "r1" / "out" / "models" / loop["best1"] / "nanodet_model.pth")
    assert start.keys() == best["state_dict"].keys() and len(start) == 887
    assert all(torch.equal(start[k], v) for k, v in best["state_dict"].items())
    # the previous image's default patterns never drop a stage's weights
    stage_checks(loop["root"] / "r2" / "out")


def test_short_run_caps_are_the_same_every_round(loop):
    caps = [
        log_lines(loop[r].stdout + loop[r].stderr, r"(warmup|detach_epoch): \d+.* instead of the recipe")
        for r in ("r1", "r2")
    ]
    assert caps[0] == caps[1] and len(caps[0]) == 2, caps
    assert "warmup: 1 steps instead of the recipe's 500" in caps[0][0]
    assert "detach_epoch: 1 instead of the recipe's 10 (half the 2 epochs)" in caps[0][1]
    saved = [load_config(loop["root"] / r / "out" / "models" / "train_cfg.yml") for r in ("r1", "r2")]
    assert [c.schedule.warmup.steps for c in saved] == [1, 1]
    assert [c.model.arch.detach_epoch for c in saved] == [1, 1]
    assert [c.evaluator.save_key for c in saved] == ["AP_50", "AP_50"]


@pytest.mark.parametrize("iou_thr, key, epochs", [(0.05, "AP_05", 2), (0.95, "AP_95", 1)])  # 0.5: the loop above
def test_stage_map_follows_evaluate_iou_thr(tmp_path, iou_thr, key, epochs):
    """Every stage's mAP and mAR are the AP and the recall at evaluate_iou_thr, and the best stage
    is picked by that AP: near both ends of the template's range, whose keys have two digits."""
    hyper = {**SMALL, "epochs": epochs, "evaluate_iou_thr": iou_thr}
    in_dir = make_training_workspace(tmp_path / "in", train_images=8, val_images=4, **hyper)
    assert_success(run_start(in_dir, tmp_path / "out"), tmp_path / "out")
    result = stage_checks(tmp_path / "out", iou_thr=iou_thr)
    assert result["evaluate_config"]["iou_thr"] == iou_thr
    assert load_config(tmp_path / "out" / "models" / "train_cfg.yml").evaluator.save_key == key
    for name in result["model_stages"]:
        coco = json.loads((tmp_path / "out" / "models" / name / "metrics.json").read_text())["coco"]
        assert key in coco and f"recall_{key[3:]}" in coco


def test_imagenet_backbone_when_no_coco_checkpoint(tmp_path):
    """No COCO weights: the backbone starts from the ImageNet file (torchvision's name)."""
    weights = tmp_path / "weights"
    weights.mkdir()
    backbone = ShuffleNetV2(BackboneConfig(model_size="1.0x"))
    torch.nn.init.constant_(backbone.conv1[0].weight, 0.125)
    state = backbone.state_dict() | {"fc.weight": torch.zeros(1000, 1024), "fc.bias": torch.zeros(1000)}
    torch.save(state, weights / IMAGENET_BACKBONES["1.0x"].file_name)
    in_dir = make_training_workspace(
        tmp_path / "in", train_images=8, val_images=4, epochs=1, input_size=128, workers_per_gpu=0, learning_rate=1e-9
    )
    proc = run_start(in_dir, tmp_path / "out", env={"NANODET_WEIGHTS_DIR": str(weights)})
    assert_success(proc, tmp_path / "out")
    assert f"starting weights: ImageNet backbone {weights / 'shufflenetv2_x1-5666bf0f80.pth'}" in proc.stdout
    assert "backbone: ImageNet weights from" in proc.stdout
    trained = read_checkpoint(tmp_path / "out" / "models" / "model_last.ckpt")["state_dict"]
    # lr 1e-9: one step leaves the ImageNet values in place
    assert torch.allclose(trained["model.backbone.conv1.0.weight"], torch.full_like(backbone.conv1[0].weight, 0.125))


def test_nothing_to_start_from_names_what_is_missing(tmp_path):
    in_dir = make_training_workspace(
        tmp_path / "in", train_images=4, val_images=2, epochs=1, input_size=128, workers_per_gpu=0
    )
    proc = run_start(in_dir, tmp_path / "out")
    assert_success(proc, tmp_path / "out")
    assert "starting weights: random init (no COCO checkpoint" in proc.stderr + proc.stdout
    missing = "ImageNet ShuffleNetV2 1.0x weights (shufflenetv2_x1-5666bf0f80.pth) not found in"
    assert missing in proc.stderr + proc.stdout


def test_legacy_nanodet_m_training_is_refused(tmp_path):
    in_dir = make_training_workspace(
        tmp_path / "in", train_images=4, val_images=2, epochs=1, config_file="config/nanodet-m.yml"
    )
    fields = assert_failure(run_start(in_dir, tmp_path / "out"), tmp_path / "out", 300001)
    assert "legacy NanoDet-m (NanoDetHead) is inference-only" in fields[5] and "ATSS" in fields[5]


@pytest.mark.parametrize("mining", [True, False])
def test_weights_that_do_not_fit_are_a_model_error(tmp_path, mining):
    """80-class weights without a saved config, 3 project classes: 300004, never a random head."""
    models = tmp_path / "models"
    models.mkdir()
    cfg = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml")
    save_pth(build_model(cfg.model.arch), models / "coco80.pth")
    in_dir = make_predict_workspace(
        tmp_path / "in",
        models,
        candidates=2,
        mining=mining,
        infer=not mining,
        config_file="config/nanodet-plus-m_320.yml",
    )
    fields = assert_failure(run_start(in_dir, tmp_path / "out"), tmp_path / "out", 300004)
    assert "coco80.pth: these weights do not fit the model config" in fields[5]
    assert "the weights are for 80 classes, the model config has 3" in fields[5]
