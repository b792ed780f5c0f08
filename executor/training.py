"""The training task.

1. Pick the starting weights (load_from → previous round's model → the image's COCO
   checkpoint → ImageNet backbone → random; see ``weights.py``).
2. Build the model config: the architecture of the starting model (the config saved with a
   model of ours) or of ``config_file``, the training recipe of the matching bundled config
   (so short-run caps are computed from the recipe every round, never from an already capped
   config), the project's classes, and the hyper-parameters.
3. Convert the platform's train/val sets to COCO json (problems counted and logged).
4. Train with the nanodet engine (torchrun DDP for several GPUs). After every evaluation a
   model stage is written (the whole EMA model, its config, its metrics, and the inference
   graph as ONNX for deployment without this image) and result.yaml
   rewritten; a stage's ``mAP`` and ``mAR`` are the AP and the recall at
   ``evaluate_config.iou_thr`` (the platform's scale: its tp/fp/fn are counted there too),
   the COCO metric set is in the stage's ``metrics.json``; monitor.txt follows every batch.
5. At the end, the best stage also gets the labelled images' mining embeddings
   (``labelled_embeddings.py``), so that the next mining round can tell what is labelled already.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from nanodet.config import ConfigError as ModelConfigError
from nanodet.config import NanoDetConfig, ap_key, load_config, recall_key, save_config
from nanodet.deploy.export import write_onnx
from nanodet.engine.trainer import Callback, EvalResult, Trainer
from nanodet.evaluation.counts import count_matches
from nanodet.model.detector import NanoDet
from nanodet.pictures.evaluation import EvalPictures
from nanodet.utils.io import atomic_copy, atomic_write, atomic_write_text
from nanodet.weights.checkpoint import save_pth

from .dataset import annotation_format_of, convert_split
from .devices import select_devices, share_cpus
from .errors import ConfigError
from .labelled_embeddings import FILE_NAME as LABELLED_EMBEDDINGS
from .labelled_embeddings import write_labelled_embeddings
from .launch import process_rank, run_workers
from .monitor import Monitor
from .paths import PathMapper, bundled_configs, model_config_path
from .protocol import EnvConfig, TrainingConfig
from .result import ResultWriter, Stage, keep_file, stage_name
from .weights import SAVED_CONFIG, WeightsChoice, choose_training_weights

log = logging.getLogger("executor.training")

CONVERSION_SHARE = 0.02  # of the task's progress bar: reading the dataset, before the first step


@dataclass
class TrainingPlan:
    """Everything a training process needs, prepared once (and handed to torchrun workers)."""

    model_config: str  # path of the final model config yaml
    models_dir: str
    tensorboard_dir: str
    result_file: str
    monitor_file: str
    task_id: str
    model_stages: bool
    saved_file_patterns: list[str]
    iou_thr: float
    conf_thr: float
    seed: int
    resume: bool
    device: str  # "cpu" or "cuda"
    world_size: int = 1  # > 1: torchrun launches this many training processes

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> TrainingPlan:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def arch_signature(cfg: NanoDetConfig) -> dict:
    """The architecture, whatever the class count, ``detach_epoch`` and ``backbone.pretrain``
    (which are per-project or per-run)."""
    arch = cfg.model.arch.model_dump(exclude={"detach_epoch": True, "backbone": {"pretrain"}})
    for head in ("head", "aux_head"):
        if arch.get(head):
            arch[head].pop("num_classes")
    return arch


def training_recipe(saved: NanoDetConfig, preferred: Path) -> tuple[NanoDetConfig, Path | None]:
    """The bundled config that trains the architecture of a saved model config: ``config_file``
    when it is the same architecture, else the one with the same architecture and input size,
    else any with the same architecture. Its schedule is the recipe; the saved input size is
    kept. A saved config of no bundled architecture is its own recipe (None)."""
    signature = arch_signature(saved)
    candidates = [preferred] + [p for p in bundled_configs() if p != preferred]
    same_arch = [(p, c) for p, c in ((p, load_config(p)) for p in candidates) if arch_signature(c) == signature]
    if not same_arch:
        return saved, None
    path, recipe = next(
        ((p, c) for p, c in same_arch if p == preferred or c.input_size == saved.input_size), same_arch[0]
    )
    sizes = {
        "train": {"input_size": list(saved.data.train.input_size)},
        "val": {"input_size": list(saved.data.val.input_size)},
    }
    return recipe.merged({"data": sizes}), path


def build_model_config(
    hp: TrainingConfig, base: NanoDetConfig, train_json: Path, val_json: Path, train_images: int, world_size: int
) -> NanoDetConfig:
    """The engine's config: classes, data, and every hyper-parameter applied to the recipe
    ``base``. The short-run caps below are computed from the recipe's own values."""
    cfg = base.with_classes(hp.class_names)
    size = [hp.input_size, hp.input_size] if hp.input_size != -1 else list(cfg.data.train.input_size)
    per_rank = max(1, train_images // world_size)
    batch = min(hp.batch_size_per_gpu, per_rank)
    if batch < hp.batch_size_per_gpu:
        log.warning(
            "batch_size_per_gpu %d > %d training images per process: using %d", hp.batch_size_per_gpu, per_rank, batch
        )
    lr = hp.learning_rate if hp.learning_rate != -1 else cfg.schedule.optimizer.lr
    val_intervals = hp.val_intervals if hp.val_intervals > 0 else min(cfg.schedule.val_intervals, hp.epochs)
    # warmup never takes more than a tenth of the run: the official 500 steps would keep a
    # short fine-tune (YMIR projects are often small) at a near-zero learning rate throughout
    total_steps = hp.epochs * max(per_rank // batch, 1)
    warmup = min(cfg.schedule.warmup.steps, max(total_steps // 10, 1))
    if warmup < cfg.schedule.warmup.steps:
        log.info(
            "warmup: %d steps instead of the recipe's %d (a tenth of the %d-step run)",
            warmup,
            cfg.schedule.warmup.steps,
            total_steps,
        )
    overrides = {
        "data": {
            "train": {"img_path": "", "ann_path": str(train_json), "input_size": size},
            "val": {"img_path": "", "ann_path": str(val_json), "input_size": size},
        },
        "device": {"batchsize_per_gpu": batch, "workers_per_gpu": hp.workers_per_gpu, "cache_images": hp.cache_images},
        "schedule": {
            "total_epochs": hp.epochs,
            "optimizer": {"lr": lr},
            "val_intervals": val_intervals,
            "warmup": {"steps": warmup},
            # the cosine schedule must span the epochs actually trained
            "lr_schedule": {"T_max": hp.epochs} if cfg.schedule.lr_schedule.name == "CosineAnnealingLR" else {},
        },
    }
    # the aux branch stops steering the backbone at detach_epoch: keep that inside the run
    detach = cfg.model.arch.detach_epoch
    if detach >= hp.epochs:
        detach = max(hp.epochs // 2, 1)
        log.info(
            "detach_epoch: %d instead of the recipe's %d (half the %d epochs)",
            detach,
            cfg.model.arch.detach_epoch,
            hp.epochs,
        )
    overrides["model"] = {"arch": {"detach_epoch": detach}}
    # the best stage is the one with the best platform mAP: AP at evaluate_config.iou_thr
    overrides["evaluator"] = {"save_key": ap_key(hp.evaluate_iou_thr)}
    return cfg.merged(overrides)


def starting_point(hp: TrainingConfig, models_dir: Path, mapper: PathMapper) -> tuple[WeightsChoice, NanoDetConfig]:
    """The starting weights and the recipe config they are trained with."""
    base_path = model_config_path(hp.config_file)
    try:
        bundled = load_config(base_path)
    except ModelConfigError as err:
        raise ConfigError(str(err)) from None
    backbone = bundled.model.arch.backbone
    choice = choose_training_weights(
        hp.load_from,
        hp.pretrained_model_params,
        models_dir,
        mapper,
        base_path.stem,
        backbone.model_size,
        backbone.pretrain,
    )
    if choice.saved_config is None:
        return choice, bundled
    try:
        saved = load_config(choice.saved_config)
    except ModelConfigError as err:
        raise ConfigError(str(err)) from None
    choice.class_names = list(saved.class_names)
    recipe, recipe_path = training_recipe(saved, base_path)
    log.info(
        "model config saved with the starting model: %s (training recipe: %s)",
        choice.saved_config,
        recipe_path.name if recipe_path else "as saved, no bundled config has this architecture",
    )
    return choice, recipe


def refuse_untrainable(cfg: NanoDetConfig) -> None:
    if cfg.model.arch.head.name == "NanoDetHead":
        raise ConfigError(
            "config.yaml: key 'config_file': legacy NanoDet-m (NanoDetHead) is inference-only in this image: its "
            "official recipe trains with the ATSS assigner, which is not implemented here; train a NanoDet-Plus "
            f"config instead ({', '.join(p.name for p in bundled_configs() if 'plus' in p.name)})"
        )


def prepare_training(
    env: EnvConfig,
    hp: TrainingConfig,
    mapper: PathMapper,
    work: Path,
    progress: Callable[[float], None] = lambda fraction: None,
) -> TrainingPlan:
    """Everything training needs; ``progress`` follows the dataset conversion (0→CONVERSION_SHARE)."""
    if not hp.class_names:
        raise ConfigError("config.yaml: key 'class_names' is empty: training needs the project's classes")
    device, world_size = select_devices(hp.gpu_count, hp.gpu_id)
    models_dir = mapper(env.output.models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    choice, base = starting_point(hp, mapper(env.input.models_dir), mapper)
    refuse_untrainable(base)
    anno = annotation_format_of(hp.export_format)
    train_json, val_json = work / "train.json", work / "val.json"
    train_report = convert_split(
        mapper(env.input.training_index_file),
        mapper,
        hp.class_names,
        anno,
        train_json,
        "training",
        progress=lambda f: progress(f * 0.8 * CONVERSION_SHARE),
    )
    convert_split(
        mapper(env.input.val_index_file),
        mapper,
        hp.class_names,
        anno,
        val_json,
        "validation",
        progress=lambda f: progress((0.8 + 0.2 * f) * CONVERSION_SHARE),
    )
    if train_report.images < world_size:
        log.warning("%d training images for %d GPUs: training on one GPU", train_report.images, world_size)
        world_size = 1
    cfg = build_model_config(hp, base, train_json, val_json, train_report.images, world_size)
    if choice.kind == "random":
        log.warning("starting weights: %s", choice.source)
    else:
        log.info("starting weights: %s", choice.source)
    cfg = cfg.merged(
        {
            "schedule": {
                "load_model": str(choice.path) if choice.path else None,
                "load_model_classes": choice.class_names,
            },
            "model": {"arch": {"backbone": {"pretrain": choice.kind == "imagenet"}}},
        }
    )
    resume = hp.resume and (models_dir / "model_last.ckpt").is_file()
    if hp.resume and not resume:
        log.warning("resume: no %s yet, training from the start", models_dir / "model_last.ckpt")
    config_path = work / SAVED_CONFIG
    save_config(cfg, config_path)
    plan = TrainingPlan(
        model_config=str(config_path),
        models_dir=str(models_dir),
        tensorboard_dir=str(mapper(env.output.tensorboard_dir)),
        result_file=str(mapper(env.output.training_result_file)),
        monitor_file=str(mapper(env.output.monitor_file)),
        task_id=env.task_id,
        model_stages=env.uses_model_stages,
        saved_file_patterns=hp.ymir_saved_file_patterns,
        iou_thr=hp.evaluate_iou_thr,
        conf_thr=hp.evaluate_conf_thr,
        seed=hp.seed,
        resume=resume,
        device=device,
    )
    plan.world_size = world_size
    return plan


class MonitorProgress(Callback):
    """monitor.txt after every batch (throttled): the dataset conversion took 0→CONVERSION_SHARE,
    training takes the bar from there to 0.99, the rest is packing. Rank 0 only."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def on_step_end(self, trainer: Trainer, losses: dict[str, float]) -> None:
        total = trainer.steps_per_epoch * trainer.total_epochs
        self.monitor.progress(CONVERSION_SHARE + (0.99 - CONVERSION_SHARE) * trainer.state.step / max(total, 1))


STAGE_WEIGHTS = "nanodet_model.pth"
STAGE_METRICS = "metrics.json"
STAGE_ONNX = "nanodet_model.onnx"  # the inference graph (box decode included), dynamic batch
# the best stage's pictures of its evaluation (nanodet.pictures.evaluation), one PNG per chart
STAGE_PICTURES = ("confusion_matrix", "pr_curve", "per_class_AP", "val_images")


def attach_onnx(model: NanoDet, cfg: NanoDetConfig, path: Path, weights_file: Path | None = None) -> bool:
    """The stage's ONNX attachment, so the model deploys without this image. A failure costs the
    attachment (a warning), never the stage."""
    try:
        write_onnx(model, cfg, path, dynamic_batch=True, weights_file=weights_file)  # the key: infer uses it as is
    except Exception as err:  # the weights are what matters: keep training
        log.warning("%s: no ONNX attachment (%s: %s)", path.parent.name, type(err).__name__, err)
        return False
    return True


def write_pictures(charts: dict[str, np.ndarray], folder: Path, patterns: list[str]) -> list[str]:
    """The charts of :data:`STAGE_PICTURES` that the patterns keep, as PNG files in ``folder``:
    the names written. A picture that cannot be encoded or written costs that picture only."""
    written = []
    for stem in STAGE_PICTURES:
        name = f"{stem}.png"
        if stem not in charts or not keep_file(name, patterns):
            continue
        ok, png = cv2.imencode(".png", charts[stem], [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            log.warning("%s: %s could not be encoded", folder.name, name)
            continue
        try:
            atomic_write(folder / name, lambda f, data=png: f.write(data.tobytes()))
        except OSError as err:
            log.warning("%s: %s not written (%s)", folder.name, name, err)
            continue
        written.append(name)
    return written


class StageRecorder(Callback):
    """After each evaluation: a model stage folder (the whole EMA model, its config and its
    metrics), counts at evaluate_config, result.yaml. The best stage also keeps the pictures
    of its evaluation (:data:`STAGE_PICTURES`, rendered by ``pictures``): when a better stage
    comes, the one it replaces loses them from its folder and its file list. Rank 0 only."""

    def __init__(self, writer: ResultWriter, plan: TrainingPlan, pictures: EvalPictures | None = None) -> None:
        self.writer = writer
        self.plan = plan
        self.pictures = pictures or EvalPictures(plan.iou_thr, plan.conf_thr)

    def on_eval_end(self, trainer: Trainer, result: EvalResult, is_best: bool) -> None:
        name = stage_name(result.epoch)
        folder = Path(self.plan.models_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        # aux branch included: the next round keeps it; the class names let it fine-tune onto other classes
        save_pth(trainer.eval_model, folder / STAGE_WEIGHTS, class_names=list(trainer.cfg.class_names))
        atomic_copy(self.plan.model_config, folder / SAVED_CONFIG)
        val = trainer.val_set
        counts = count_matches(
            result.detections, {i: val.annotations(i) for i in val.img_ids}, self.plan.iou_thr, self.plan.conf_thr
        )
        platform_map = result.metrics.get(ap_key(self.plan.iou_thr), 0.0)
        platform_mar = result.metrics.get(recall_key(self.plan.iou_thr), 0.0)
        metrics = {
            "epoch": result.epoch,
            "mAP": platform_map,
            "mAP_definition": f"AP at IoU {self.plan.iou_thr} (COCO 101-point interpolation, all sizes, 100 dets)",
            "mAR": platform_mar,
            "mAR_definition": f"recall at IoU {self.plan.iou_thr} (all sizes, 100 dets, mean over classes with boxes)",
            "evaluate_config": {"iou_thr": self.plan.iou_thr, "conf_thr": self.plan.conf_thr},
            **counts,
            "coco": result.metrics,
            "per_class_AP": result.per_class_AP,
        }
        atomic_write_text(folder / STAGE_METRICS, json.dumps(metrics, indent=2))
        files = [STAGE_WEIGHTS, SAVED_CONFIG]  # never filtered: the stage must stay usable
        if keep_file(STAGE_METRICS, self.plan.saved_file_patterns):  # the patterns choose the extras
            files.append(STAGE_METRICS)
        if keep_file(STAGE_ONNX, self.plan.saved_file_patterns) and attach_onnx(
            trainer.eval_model, trainer.cfg, folder / STAGE_ONNX, folder / STAGE_WEIGHTS
        ):
            files.append(STAGE_ONNX)
        previous_best = self.writer.best
        becomes_best = is_best or previous_best is None
        if becomes_best:
            charts = self.pictures.of(trainer, result).charts
            files += write_pictures(charts, folder, self.plan.saved_file_patterns)
        stage = Stage(name, result.epoch, files, platform_map, platform_mar, **counts)
        self.writer.add_stage(stage, is_best)
        if becomes_best and previous_best not in (None, name):
            self.writer.retract_files(previous_best, [f"{stem}.png" for stem in STAGE_PICTURES])
        log.info(
            "epoch %d stage %s: mAP %.4f (AP@%.2f), COCO mAP %.4f; per-class AP: %s",
            result.epoch,
            name,
            platform_map,
            self.plan.iou_thr,
            result.metrics.get("mAP", 0.0),
            ", ".join(f"{k} {v:.3f}" for k, v in result.per_class_AP.items()),
        )


def train_with_plan(plan: TrainingPlan) -> None:
    """Run training in this process (one of torchrun's workers, or the only process). Rank 0
    reports progress and writes the stages and result.yaml."""
    from nanodet.engine.run import train

    cfg = load_config(plan.model_config)
    workers = share_cpus(plan.world_size, cfg.device.workers_per_gpu)
    cfg = cfg.merged({"device": {"workers_per_gpu": workers}})
    main = process_rank() == 0
    pictures = EvalPictures(plan.iou_thr, plan.conf_thr)  # drawn once per evaluation: TensorBoard + best stage
    writer = ResultWriter(
        Path(plan.models_dir),
        Path(plan.result_file),
        plan.model_stages,
        plan.saved_file_patterns,
        plan.iou_thr,
        plan.conf_thr,
    )
    callbacks: list[Callback] = []
    if main:
        if plan.resume:
            writer.load_existing()
        atomic_copy(plan.model_config, Path(plan.models_dir) / SAVED_CONFIG)
        callbacks = [
            MonitorProgress(Monitor(Path(plan.monitor_file), plan.task_id)),
            StageRecorder(writer, plan, pictures),
        ]
    train(
        cfg,
        work_dir=plan.models_dir,
        seed=plan.seed,
        resume=plan.resume,
        tensorboard_dir=plan.tensorboard_dir,
        callbacks=callbacks,
        device=plan.device,
        progress=sys.stderr.isatty(),
        pictures=pictures,
    )
    if main:
        writer.publish_best_to_top_level()
        if not plan.model_stages:
            writer.write()
        attach_labelled_embeddings(cfg, plan, writer)


def attach_labelled_embeddings(cfg: NanoDetConfig, plan: TrainingPlan, writer: ResultWriter) -> None:
    """The labelled set's embeddings through the best stage's weights, for the next mining task
    (``executor/labelled_embeddings.py``). A failure costs the file (a warning), never the stage."""
    if writer.best is None or not keep_file(LABELLED_EMBEDDINGS, plan.saved_file_patterns):
        return
    folder = Path(plan.models_dir) / writer.best
    start = time.perf_counter()
    try:
        rows = write_labelled_embeddings(cfg, folder / STAGE_WEIGHTS, folder / LABELLED_EMBEDDINGS, plan.device)
    except Exception as err:  # the weights are what matters: the task still succeeds
        log.warning("%s: no %s (%s: %s)", writer.best, LABELLED_EMBEDDINGS, type(err).__name__, err)
        return
    writer.add_to_best(LABELLED_EMBEDDINGS)
    elapsed = time.perf_counter() - start
    log.info("%s: %d labelled images embedded for mining in %.1f s", LABELLED_EMBEDDINGS, rows, elapsed)


def run_training_task(env: EnvConfig, hp: TrainingConfig, mapper: PathMapper, monitor: Monitor) -> None:
    with tempfile.TemporaryDirectory(prefix="nanodet-train-") as tmp:
        work = Path(tmp)
        plan = prepare_training(env, hp, mapper, work, monitor.progress)
        monitor.progress(CONVERSION_SHARE, force=True)
        if plan.world_size > 1:
            launch_distributed(plan, work)
        else:
            train_with_plan(plan)
    monitor.done()


def launch_distributed(plan: TrainingPlan, work: Path) -> None:
    """One training process per GPU under torchrun (``executor.train_worker``); a worker's
    failure comes back with its return code."""
    plan_file = work / "plan.json"
    plan.save(plan_file)
    run_workers(plan.world_size, ["-m", "executor.train_worker", str(plan_file)], "training")
