"""Mining and infer tasks: the candidate images through the detector in batches, in one pass
when both run (each batch's single forward gives its uncertainty scores and its detections).

- infer → ``/out/infer-result.json``: every candidate by basename, integer x/y/w/h boxes
  above ``conf_thres`` with class name and score (``boxes`` key from protocol 1.0.0 on,
  ``annotations`` before).
- mining → ``/out/result.tsv``: every candidate with its ``mining_algorithm`` score (ALDD,
  detection entropy, or random as a baseline; ``nanodet/mining.py``), highest first.

An image that is missing or cannot be read gets an empty box list (infer) or the lowest
score (mining) and a warning; the task still succeeds, unless no candidate file exists at
all (300002) or none of those that exist can be decoded (300003). An index that lists no
candidate gives empty results (after the model has been loaded: a bad model still fails).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from nanodet.config import ConfigError as ModelConfigError
from nanodet.config import NanoDetConfig, load_config
from nanodet.data.inference_dataset import ImageFileDataset, InferenceBatch, inference_batches
from nanodet.deploy.runtimes import RuntimeUnavailable
from nanodet.engine.distributed import DistContext, cleanup_distributed, init_distributed
from nanodet.mining import uncertainty_scores
from nanodet.postprocess import Detections
from nanodet.predictor import Predictor
from nanodet.utils.io import atomic_write_text

from .dataset import is_missing, read_index, warn_missing
from .devices import select_devices
from .errors import ConfigError, DatasetError, ImageFormatError
from .launch import is_worker, run_workers
from .monitor import Monitor
from .paths import APP_ROOT, PathMapper, model_config_path
from .protocol import EnvConfig, PredictConfig
from .weights import choose_inference_weights

log = logging.getLogger("executor.predict")

UNREADABLE_SCORE = -1.0  # ALDD scores are >= 0: unreadable images sort last


def candidates(env: EnvConfig, mapper: PathMapper) -> tuple[list[str], list[Path]]:
    """Candidate paths exactly as written in the index (there may be none), and where they are on this machine."""
    index = mapper(env.input.candidate_index_file)
    written = [str(r[0]) for r in read_index(index, PathMapper(), columns=1)]
    return written, [mapper(w) for w in written]


def present_candidates(
    written: list[str], paths: list[Path], env: EnvConfig, mapper: PathMapper, ctx: DistContext
) -> list[int]:
    """Positions of the candidates whose file exists. Rank 0 looks and tells the others, so
    every rank shards the same list. Missing files are warnings; when no file exists at all
    the task has no input (300002)."""
    missing = ctx.broadcast_object([i for i, p in enumerate(paths) if is_missing(p)] if ctx.is_main else None)
    if paths and len(missing) == len(paths):
        raise DatasetError(
            f"{mapper(env.input.candidate_index_file)}: none of the {len(paths)} candidate images "
            f"exists (first: {written[0]})"
        )
    if ctx.is_main:
        for count, i in enumerate(missing, start=1):
            warn_missing("candidates", written[i], count)
    skipped = set(missing)
    return [i for i in range(len(paths)) if i not in skipped]


def write_no_candidates(task: str, output: Path, text: str, monitor: Monitor, ctx: DistContext) -> None:
    """The index lists no image: an empty result (``text``), not an error."""
    if ctx.is_main:
        log.warning("%s: the candidate index lists no image: writing an empty %s", task, output.name)
        atomic_write_text(output, text)
    monitor.progress(1.0, force=True)


def build_predictor(env: EnvConfig, hp: PredictConfig, mapper: PathMapper, device) -> Predictor:
    models_dir = mapper(env.input.models_dir)
    choice = choose_inference_weights(hp.model_params_path, models_dir, mapper)
    try:
        if choice.saved_config is not None:
            cfg = load_config(choice.saved_config)
        else:
            cfg = load_config(model_config_path(hp.config_file or "nanodet-plus-m_416.yml"))
            if hp.class_names:
                cfg = cfg.with_classes(hp.class_names)
    except ModelConfigError as err:
        raise ConfigError(str(err).replace("\n", "; ")) from None
    if hp.class_names and list(hp.class_names) != list(cfg.class_names):
        log.warning(
            "config.yaml class_names %s differ from the model's %s: using the model's", hp.class_names, cfg.class_names
        )
    try:
        predictor = Predictor(cfg, choice.path, device=device, iou_thr=hp.nms_thres, backend=hp.backend)
    except RuntimeUnavailable as err:
        raise ConfigError(f"config.yaml: key 'backend': {err}") from None
    log.info(
        "model %s (%s), %d classes, input %s, backend %s",
        choice.path,
        _model_name(cfg),
        len(cfg.class_names),
        predictor.input_wh,
        predictor.backend,
    )
    return predictor


def _model_name(cfg: NanoDetConfig) -> str:
    return f"{cfg.model.arch.name}/{cfg.model.arch.backbone.model_size}"


def batches(predictor: Predictor, paths: list[Path], hp: PredictConfig) -> Iterator[tuple[list[int], InferenceBatch]]:
    """(candidate positions, batch) in order; unreadable files are reported as failed items."""
    dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
    position = {p: i for i, p in enumerate(paths)}
    pin = hp.pin_memory and predictor.device.type == "cuda"
    for batch in inference_batches(dataset, hp.batch_size_per_gpu, hp.workers_per_gpu, pin_memory=pin):
        for _path, reason in batch.failed:
            log.warning("unreadable candidate: %s", reason)
        yield [position[p] for p in batch.paths], batch


def _run(
    predictor: Predictor,
    paths: list[Path],
    present: list[int],
    hp: PredictConfig,
    monitor: Monitor,
    ctx: DistContext,
    on_batch: Callable[[list[int], InferenceBatch], None],
) -> None:
    """Feed this rank's shard of the present candidates (``present[rank::world]``, possibly
    empty) through ``on_batch`` with global positions."""
    mine = present[ctx.rank :: ctx.world_size]
    done, waited = 0, 0.0
    start = tick = time.perf_counter()
    for local, batch in batches(predictor, [paths[i] for i in mine], hp):
        waited += time.perf_counter() - tick
        if batch.images is not None:
            on_batch([mine[i] for i in local], batch)
        done += len(batch.paths) + len(batch.failed)
        monitor.progress(done / max(len(mine), 1))
        tick = time.perf_counter()
    elapsed = time.perf_counter() - start
    log.info(
        "rank %d: %d images in %.2f s (%.1f images/s), %.0f%% of it waiting for data",
        ctx.rank,
        len(mine),
        elapsed,
        len(mine) / max(elapsed, 1e-9),
        100 * waited / max(elapsed, 1e-9),
    )


def _merge(ctx: DistContext, part: dict[int, object]) -> dict[int, object]:
    """Every rank's {position: result} on every rank."""
    merged: dict[int, object] = {}
    for piece in ctx.gather_objects(part):
        merged.update(piece)
    return merged


def check_some_readable(unreadable: int, total: int, env: EnvConfig, mapper: PathMapper, missing: int = 0) -> None:
    """Unreadable candidates are warnings; a task where none could be decoded has no result (300003).
    ``unreadable`` counts the ``missing`` files too (a task where every file is missing stopped earlier)."""
    if total and unreadable == total:
        also = f"; {missing} of them missing" if missing else ""
        raise ImageFormatError(
            f"{mapper(env.input.candidate_index_file)}: none of the {total} candidate images "
            f"can be decoded (see the warnings above{also})"
        )


def run_candidates(env: EnvConfig, hp: PredictConfig, mapper: PathMapper, monitor: Monitor, ctx: DistContext) -> None:
    """Mining and/or infer in one pass over the candidates: each batch's single forward gives
    both its uncertainty scores and its detections; then mining's result, then infer's."""
    algorithm = hp.mining_algorithm if env.run_mining else None
    written, paths = candidates(env, mapper)
    predictor = build_predictor(env, hp, mapper, ctx.device)
    if not paths:
        if algorithm:
            write_no_candidates("mining", mapper(env.output.mining_result_file), "", monitor, ctx)
        if env.run_infer:
            write_no_candidates(
                "infer", mapper(env.output.infer_result_file), json.dumps({"detection": {}}), monitor, ctx
            )
        return
    present = present_candidates(written, paths, env, mapper, ctx)
    scores: dict[int, float] = {}
    detections: dict[int, Detections] = {}

    def on_batch(positions: list[int], batch: InferenceBatch) -> None:
        levels, dets = forward(predictor, batch, uses_levels=algorithm in MODEL_BASED, detects=env.run_infer)
        if algorithm == "random":  # a baseline: a stable pseudo-random score per path
            scores.update((pos, zlib.crc32(written[pos].encode("utf-8")) / 2**32) for pos in positions)
        elif algorithm:
            hw = (batch.images.shape[2], batch.images.shape[3])
            values = uncertainty_scores(algorithm, levels, predictor.num_classes, hw).cpu().tolist()
            scores.update(zip(positions, values))
        if dets is not None:
            detections.update((pos, d.above(hp.conf_thres)) for pos, d in zip(positions, dets))

    _run(predictor, paths, present, hp, monitor, ctx, on_batch)
    scores = _merge(ctx, scores) if algorithm else {}
    detections = _merge(ctx, detections) if env.run_infer else {}
    if not ctx.is_main:
        return
    done = scores if algorithm else detections
    check_some_readable(len(paths) - len(done), len(paths), env, mapper, len(paths) - len(present))
    if algorithm:
        write_mining_result(env, mapper, algorithm, written, scores, len(paths) - len(present))
    if env.run_infer:
        write_infer_result(env, mapper, predictor, written, detections, len(paths) - len(present))


MODEL_BASED = ("aldd", "entropy")


def forward(
    predictor: Predictor, batch: InferenceBatch, uses_levels: bool, detects: bool
) -> tuple[list | None, list[Detections] | None]:
    """What a batch needs, from at most one forward: per-level maps and/or detections."""
    if uses_levels and detects:
        return predictor.predict_batch_with_levels(batch.images, batch.warp_matrices, batch.sizes)
    if detects:
        return None, predictor.predict_batch(batch.images, batch.warp_matrices, batch.sizes)
    if uses_levels:
        return predictor.forward_levels(batch.images), None
    return None, None


def write_mining_result(
    env: EnvConfig, mapper: PathMapper, algorithm: str, written: list[str], merged: dict[int, float], missing: int
) -> None:
    """``result.tsv``: every candidate as written in the index, highest score first."""
    scores = np.array([merged.get(i, UNREADABLE_SCORE) for i in range(len(written))], dtype=np.float64)
    order = sorted(range(len(written)), key=lambda i: -scores[i])  # stable: ties keep index order
    lines = [f"{written[i]}\t{scores[i]:.8g}" for i in order]
    atomic_write_text(mapper(env.output.mining_result_file), "\n".join(lines) + "\n")
    log.info(
        "mining (%s): %d images ranked, %d unreadable, %d missing",
        algorithm,
        len(written),
        len(written) - len(merged) - missing,
        missing,
    )


def write_infer_result(
    env: EnvConfig,
    mapper: PathMapper,
    predictor: Predictor,
    written: list[str],
    merged: dict[int, Detections],
    missing: int,
) -> None:
    """``infer-result.json``: an entry for every candidate by basename."""
    key = "boxes" if env.uses_model_stages else "annotations"
    detection: dict[str, dict] = {}
    for i, path in enumerate(written):
        name = Path(path).name
        if name in detection:
            log.warning("candidates share the basename %r: %s is reported under the first one only", name, path)
            continue
        detection[name] = {key: _boxes(merged[i], predictor.class_names) if i in merged else []}
    atomic_write_text(mapper(env.output.infer_result_file), json.dumps({"detection": detection}))
    log.info(
        "infer: %d images, %d boxes, %d unreadable, %d missing",
        len(written),
        sum(len(v[key]) for v in detection.values()),
        len(written) - len(merged) - missing,
        missing,
    )


def _boxes(dets: Detections, class_names: list[str]) -> list[dict]:
    out = []
    for (x1, y1, x2, y2), score, label in zip(dets.boxes, dets.scores, dets.labels):
        x, y = int(round(float(x1))), int(round(float(y1)))
        w, h = int(round(float(x2))) - x, int(round(float(y2))) - y
        if w <= 0 or h <= 0:
            continue
        out.append(
            {"class_name": class_names[label], "score": round(float(score), 6), "box": {"x": x, "y": y, "w": w, "h": h}}
        )
    return out


def run_predict_tasks(env: EnvConfig, hp: PredictConfig, mapper: PathMapper, monitor: Monitor) -> None:
    """Mining and/or infer over all candidates in one pass (sharded over processes when there are several)."""
    device, world = select_devices(hp.gpu_count, hp.gpu_id)
    if device == "cpu":
        world = hp.cpu_processes
    if world > 1 and not is_worker():  # this same task in ``world`` torchrun workers; rank 0 writes every output
        run_workers(
            world,
            [str(APP_ROOT / "start.py"), "--in", str(mapper.in_dir), "--out", str(mapper.out_dir)],
            "mining/infer",
        )
        return
    ctx = init_distributed(device)
    try:
        run_candidates(env, hp, mapper, monitor, ctx)
        ctx.barrier()
    finally:
        cleanup_distributed()
