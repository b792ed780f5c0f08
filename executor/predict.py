"""Mining and infer tasks: the candidate images through the detector in batches, in one pass
when both run (each batch's single forward gives its uncertainty scores and its detections).

- infer → ``/out/infer-result.json``: every candidate by basename, integer x/y/w/h boxes
  above ``conf_thres`` with class name and score (``boxes`` key from protocol 1.0.0 on,
  ``annotations`` before).
- mining → ``/out/result.tsv``: every candidate with its ``mining_algorithm`` score (ALDD,
  detection entropy, or random as a baseline; ``nanodet/mining/uncertainty.py``), highest first. With
  ``mining_diversity`` (ALDD and entropy), near-duplicates of a higher-ranked candidate have
  their score discounted (``nanodet/mining/diversity.py``; embeddings from the same forward),
  once, on rank 0, over every process's candidates, the groups seeded by the images the model
  was trained on (``labelled_embeddings.py``): the file lists the discounted scores.

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
from typing import IO

import numpy as np

from nanodet.config import ConfigError as ModelConfigError
from nanodet.config import NanoDetConfig, load_config
from nanodet.data.inference_dataset import ImageFileDataset, InferenceBatch, inference_batches
from nanodet.deploy.runtimes import RuntimeUnavailable
from nanodet.engine.distributed import DistContext, cleanup_distributed, init_distributed
from nanodet.inference.detections import Detections
from nanodet.inference.predictor import Predictor
from nanodet.mining.diversity import EMBED_DIMS, diverse_order, image_embeddings
from nanodet.mining.uncertainty import uncertainty_scores
from nanodet.utils.io import atomic_write, atomic_write_text
from nanodet.utils.pause_points import pause_point
from nanodet.utils.pipeline import overlapped

from .contact_sheet import SHEET_NAME, write_contact_sheet
from .dataset import MISSING_WARNINGS, is_missing, read_index, warn_capped, warn_missing
from .devices import select_devices, share_cpus
from .errors import ConfigError, DatasetError, ImageFormatError
from .labelled_embeddings import FILE_NAME as LABELLED
from .labelled_embeddings import find_labelled_embeddings, read_labelled_embeddings
from .launch import is_worker, run_workers
from .monitor import Monitor
from .paths import APP_ROOT, PathMapper, model_config_path
from .protocol import EnvConfig, PredictConfig
from .weights import WeightsChoice, choose_inference_weights

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


def build_predictor(hp: PredictConfig, choice: WeightsChoice, device) -> Predictor:
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


def labelled_seeds(weights: Path | None, models_dir: Path) -> np.ndarray | None:
    """The embeddings of the images the model was trained on, which the training task wrote beside
    its ``weights`` (``executor/labelled_embeddings.py``), or None (a model trained elsewhere)."""
    path = find_labelled_embeddings(weights, models_dir) if weights is not None else None
    if path is None:
        log.info("mining diversity: no %s beside %s: the labelled images do not seed the groups", LABELLED, weights)
        return None
    return read_labelled_embeddings(path)


def _model_name(cfg: NanoDetConfig) -> str:
    return f"{cfg.model.arch.name}/{cfg.model.arch.backbone.model_size}"


def warn_unreadable(reason: str, count: int, scope: str = "") -> None:
    """Warn about the ``count``-th candidate (of this process) that cannot be decoded, the first few
    by name only: the summary at the end counts them all."""
    more = (
        f"unreadable candidate: more images cannot be read{scope}; only the first {MISSING_WARNINGS} "
        "are named (the summary at the end counts them all)"
    )
    warn_capped(log, count, f"unreadable candidate: {reason}", more)


def batches(
    predictor: Predictor, paths: list[Path], hp: PredictConfig, scope: str = ""
) -> Iterator[tuple[list[int], InferenceBatch]]:
    """(positions in ``paths`` of the batch's decoded images, batch) in order; unreadable files
    come as the batch's failed items and are warned about (the first few by name)."""
    dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
    pin = hp.pin_memory and predictor.device.type == "cuda"
    offset, unreadable = 0, 0
    for batch in inference_batches(dataset, hp.batch_size_per_gpu, hp.workers_per_gpu, pin_memory=pin):
        for _path, reason in batch.failed:
            unreadable += 1
            warn_unreadable(reason, unreadable, scope)
        size = len(batch.paths) + len(batch.failed)
        yield _decoded_positions(paths, offset, size, batch.paths), batch
        offset += size


def _decoded_positions(paths: list[Path], offset: int, size: int, decoded: list[Path]) -> list[int]:
    """Where the decoded images of the batch ``paths[offset : offset + size]`` are: they come in
    order with the failed ones left out, so walking both in step finds them (a path listed
    twice gets each of its positions, not the last one twice)."""
    found: list[int] = []
    for i in range(offset, offset + size):
        if len(found) < len(decoded) and paths[i] == decoded[len(found)]:
            found.append(i)
    if len(found) != len(decoded):  # the loader does not keep the dataset's order
        raise RuntimeError(f"batch at {offset}: {len(decoded)} decoded images, {len(found)} found in order")
    return found


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
    empty) through ``on_batch`` with global positions; progress after every batch (the monitor
    writes it at most every ``min_interval``)."""
    mine = present[ctx.rank :: ctx.world_size]
    start = time.perf_counter()
    scope = f" on rank {ctx.rank}" if ctx.distributed else ""

    def step(item: tuple[list[int], InferenceBatch]) -> None:
        local, batch = item
        if batch.images is not None:
            on_batch([mine[i] for i in local], batch)

    done = 0
    # the predictor's streams: that many batches in a forward at once (on_batch fills disjoint
    # positions, so calls may overlap)
    for (_, batch), _ in overlapped(step, batches(predictor, [paths[i] for i in mine], hp, scope), predictor.streams):
        done += len(batch.paths) + len(batch.failed)
        monitor.progress(done / max(len(mine), 1))
        pause_point("predict:batch")  # tests only: hold the workers mid-work (tests/test_crash_safety.py)
    elapsed = time.perf_counter() - start
    log.info(
        "rank %d: %d images in %.2f s (%.1f images/s), %d stream(s)",
        ctx.rank,
        len(mine),
        elapsed,
        len(mine) / max(elapsed, 1e-9),
        predictor.streams,
    )


class CandidateResults:
    """What the result files need of each candidate, kept compact as the batches come (memory
    grows with the results, not with the model's outputs): whether it was decoded, its mining
    score (a float of one array), its diversity embedding when the ranking uses one (a float16
    row of ``EMBED_DIMS``, 128 bytes), and the boxes infer reports (one small array per
    candidate that has any; see :func:`compact_boxes`)."""

    def __init__(self, count: int, embeddings: bool = False) -> None:
        self.read = np.zeros(count, dtype=bool)
        self.scores = np.full(count, UNREADABLE_SCORE, dtype=np.float64)
        self.embeddings = np.zeros((count, EMBED_DIMS), dtype=np.float16) if embeddings else None
        self.boxes: dict[int, np.ndarray] = {}
        self.order: np.ndarray | None = None  # the diversity ranking, once made

    def part(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[int, np.ndarray]]:
        """This process's results: (positions decoded, their scores, their embeddings, their boxes)."""
        read = np.flatnonzero(self.read)
        embeddings = None if self.embeddings is None else self.embeddings[read]
        return read, self.scores[read], embeddings, self.boxes

    def merge(self, ctx: DistContext) -> None:
        """Every rank's results on every rank (nothing to do in a world of one)."""
        if not ctx.distributed:
            return
        for read, scores, embeddings, boxes in ctx.gather_objects(self.part()):
            self.read[read] = True
            self.scores[read] = scores
            if embeddings is not None:
                self.embeddings[read] = embeddings
            self.boxes.update(boxes)

    def diversify(self, labelled: np.ndarray | None = None) -> None:
        """Rank the decoded candidates with :func:`nanodet.mining.diversity.diverse_order` (all of
        them at once; groups seeded by the ``labelled`` images' embeddings, if any) and replace
        their scores by the discounted ones; unreadable candidates follow, in index order, with
        the lowest score."""
        read = np.flatnonzero(self.read)
        every = len(read) == len(self.read)  # the usual case: no copy of the embeddings
        embeddings = self.embeddings if every else self.embeddings[read]
        order, ranked = diverse_order(self.scores[read], embeddings, labelled)
        self.scores[read[order]] = ranked
        self.order = np.concatenate([read[order], np.flatnonzero(~self.read)])

    def ranking(self) -> np.ndarray:
        """Candidate positions from first to last: the diversity ranking when one was made, else
        by score, high to low, ties in index order."""
        return self.order if self.order is not None else np.argsort(-self.scores, kind="stable")

    @property
    def decoded(self) -> int:
        return int(self.read.sum())


def compact_boxes(dets: Detections, conf_thres: float) -> np.ndarray | None:
    """The boxes infer reports, as ``[K, 6]`` float64 rows (label, score rounded to 6 places,
    x, y, w, h in integer pixels: all exact in float64), or None when there are none: boxes
    under ``conf_thres`` or empty once rounded to pixels are left out."""
    kept = dets.above(conf_thres)
    rows = []
    for (x1, y1, x2, y2), score, label in zip(kept.boxes, kept.scores, kept.labels):
        x, y = int(round(float(x1))), int(round(float(y1)))
        w, h = int(round(float(x2))) - x, int(round(float(y2))) - y
        if w > 0 and h > 0:
            rows.append((int(label), round(float(score), 6), x, y, w, h))
    return np.array(rows, dtype=np.float64) if rows else None


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
    models_dir = mapper(env.input.models_dir)
    choice = choose_inference_weights(hp.model_params_path, models_dir, mapper)
    predictor = build_predictor(hp, choice, ctx.device)
    if not paths:
        if algorithm:
            write_no_candidates("mining", mapper(env.output.mining_result_file), "", monitor, ctx)
        if env.run_infer:
            write_no_candidates(
                "infer", mapper(env.output.infer_result_file), json.dumps({"detection": {}}), monitor, ctx
            )
        return
    present = present_candidates(written, paths, env, mapper, ctx)
    diversity = bool(hp.mining_diversity) and algorithm in MODEL_BASED
    results = CandidateResults(len(paths), embeddings=diversity)

    def on_batch(positions: list[int], batch: InferenceBatch) -> None:
        levels, dets = forward(predictor, batch, uses_levels=algorithm in MODEL_BASED, detects=env.run_infer)
        results.read[positions] = True
        if algorithm == "random":  # a baseline: a stable pseudo-random score per path
            results.scores[positions] = [zlib.crc32(written[pos].encode("utf-8")) / 2**32 for pos in positions]
        elif algorithm:
            hw = (batch.images.shape[2], batch.images.shape[3])
            results.scores[positions] = uncertainty_scores(algorithm, levels, predictor.num_classes, hw).cpu().tolist()
            if diversity:
                results.embeddings[positions] = image_embeddings(levels, predictor.num_classes)
        for pos, d in zip(positions, dets or ()):
            rows = compact_boxes(d, hp.conf_thres)
            if rows is not None:
                results.boxes[pos] = rows

    _run(predictor, paths, present, hp, monitor, ctx, on_batch)
    results.merge(ctx)
    if not ctx.is_main:
        return
    missing = len(paths) - len(present)
    check_some_readable(len(paths) - results.decoded, len(paths), env, mapper, missing)
    if diversity:
        start = time.perf_counter()
        labelled = labelled_seeds(choice.path, models_dir)
        results.diversify(labelled)
        seeded = f", groups seeded by {len(labelled)} labelled images" if labelled is not None else ""
        elapsed = time.perf_counter() - start
        log.info("mining diversity: %d candidates re-ranked in %.2f s%s", results.decoded, elapsed, seeded)
    if algorithm:
        write_mining_result(env, mapper, algorithm, written, results, missing)
        if hp.mining_contact_sheet:
            write_sheet(env, mapper, hp, predictor, algorithm, written, paths, results)
    if env.run_infer:
        write_infer_result(env, mapper, predictor.class_names, written, results, missing)


def write_sheet(
    env: EnvConfig,
    mapper: PathMapper,
    hp: PredictConfig,
    predictor: Predictor,
    algorithm: str,
    written: list[str],
    paths: list[Path],
    results: CandidateResults,
) -> None:
    """``/out/mining-contact-sheet.png`` (executor/contact_sheet.py). A picture for people, not a
    result: any failure is a warning and the task goes on."""
    out = mapper(env.output.root_dir) / SHEET_NAME
    try:
        label = algorithm if results.order is None else f"{algorithm}, near-duplicates discounted"
        write_contact_sheet(
            out, predictor, written, paths, results.scores, results.read, label, hp.conf_thres, results.ranking()
        )
    except Exception as err:  # noqa: BLE001 - the ranking is written; the sheet is optional
        log.warning("mining contact sheet not written (%s: %s)", type(err).__name__, err)


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


WRITE_CHUNK = 4096  # result lines (or entries) encoded and written at a time


def write_mining_result(
    env: EnvConfig, mapper: PathMapper, algorithm: str, written: list[str], results: CandidateResults, missing: int
) -> None:
    """``result.tsv``: every candidate as written in the index, highest score first (ties in
    index order, or as the diversity ranking orders them; unreadable and missing candidates
    have the lowest score). Streamed to the file a chunk at a time, atomically."""
    order = results.ranking().tolist()
    scores = results.scores.tolist()

    def write(f: IO[bytes]) -> None:
        for start in range(0, len(order), WRITE_CHUNK):
            f.write("".join(f"{written[i]}\t{scores[i]:.8g}\n" for i in order[start : start + WRITE_CHUNK]).encode())

    atomic_write(mapper(env.output.mining_result_file), write)
    log.info(
        "mining (%s): %d images ranked, %d unreadable, %d missing",
        algorithm,
        len(written),
        len(written) - results.decoded - missing,
        missing,
    )


def write_infer_result(
    env: EnvConfig,
    mapper: PathMapper,
    class_names: list[str],
    written: list[str],
    results: CandidateResults,
    missing: int,
) -> None:
    """``infer-result.json``: an entry for every candidate by basename (the first candidate of
    a basename only). The text of ``json.dumps({"detection": {...}})``, streamed to the file an
    entry at a time, atomically."""
    key = "boxes" if env.uses_model_stages else "annotations"
    boxes = 0
    seen: set[str] = set()

    def entries() -> Iterator[str]:
        nonlocal boxes
        shared = 0
        for i, path in enumerate(written):
            name = Path(path).name
            if name in seen:
                shared += 1
                warn_capped(
                    log,
                    shared,
                    f"candidates share the basename {name!r}: {path} is reported under the first one only",
                    f"more candidates share a basename; only the first {MISSING_WARNINGS} are named",
                )
                continue
            seen.add(name)
            rows = results.boxes.get(i)
            listed = [] if rows is None else [_box_entry(row, class_names) for row in rows.tolist()]
            boxes += len(listed)
            yield f"{json.dumps(name)}: {json.dumps({key: listed})}"

    def write(f: IO[bytes]) -> None:
        f.write(b'{"detection": {')
        chunk: list[str] = []
        first = True
        for entry in entries():
            chunk.append(entry)
            if len(chunk) == WRITE_CHUNK:
                f.write(("" if first else ", ").encode() + ", ".join(chunk).encode())
                chunk, first = [], False
        if chunk:
            f.write(("" if first else ", ").encode() + ", ".join(chunk).encode())
        f.write(b"}}")

    atomic_write(mapper(env.output.infer_result_file), write)
    log.info(
        "infer: %d images, %d boxes, %d unreadable, %d missing",
        len(written),
        boxes,
        len(written) - results.decoded - missing,
        missing,
    )


def _box_entry(row: list[float], class_names: list[str]) -> dict:
    """One box of :func:`compact_boxes` as infer-result.json lists it."""
    label, score, x, y, w, h = row
    return {
        "class_name": class_names[int(label)],
        "score": score,
        "box": {"x": int(x), "y": int(y), "w": int(w), "h": int(h)},
    }


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
    hp = hp.model_copy(update={"workers_per_gpu": share_cpus(world, hp.workers_per_gpu)})
    ctx = init_distributed(device)
    try:
        run_candidates(env, hp, mapper, monitor, ctx)
        ctx.barrier()
    finally:
        cleanup_distributed()
