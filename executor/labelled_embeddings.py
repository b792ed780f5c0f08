"""What a training task leaves for the next mining task's diversity ranking: the diversity
embedding (``nanodet/mining/diversity.py``) of every image it was given (training and
validation sets: all labelled), through the best stage's weights, the ones mining runs.

Mining with ``mining_diversity`` seeds its groups with them: a candidate like ``k`` labelled
images starts at ``k`` copies, so the other frames of a scene labelled in an earlier round do not
lead the ranking again. The file (``labelled_embeddings.npy``, float16 ``[M, 64]``, 128 bytes an
image, at most :data:`MAX_ROWS` rows) sits in the best stage's folder and, like its other files,
at the top of ``/out/models``, which the platform hands to mining as ``/in/models``. A file that
is missing, unreadable or of another shape costs the seeding (a warning), never the task.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from nanodet.config import NanoDetConfig
from nanodet.data.inference_dataset import ImageFileDataset, inference_batches
from nanodet.inference.predictor import Predictor
from nanodet.mining.diversity import EMBED_DIMS, image_embeddings
from nanodet.utils.io import atomic_write

log = logging.getLogger("executor.labelled_embeddings")

FILE_NAME = "labelled_embeddings.npy"
MAX_ROWS = 100_000  # 12.8 MB; a larger labelled set keeps an evenly spaced subset of its images
BATCH = 32


def labelled_images(cfg: NanoDetConfig) -> list[Path]:
    """The images of the training and validation sets (COCO files written by the conversion),
    evenly thinned to :data:`MAX_ROWS`."""
    paths: list[Path] = []
    for split in (cfg.data.train, cfg.data.val):
        coco = json.loads(Path(split.ann_path).read_text(encoding="utf-8"))
        paths += [Path(split.img_path) / image["file_name"] for image in coco["images"]]
    if len(paths) > MAX_ROWS:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, MAX_ROWS).round().astype(int)]
    return paths


def write_labelled_embeddings(cfg: NanoDetConfig, weights: Path, out: Path, device: str = "cpu") -> int:
    """The embeddings of :func:`labelled_images` through ``weights``, written atomically to
    ``out``: the number of rows (images that cannot be read are left out)."""
    predictor = Predictor(cfg, weights, device=device)
    dataset = ImageFileDataset(
        labelled_images(cfg), predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std
    )
    rows = [np.zeros((0, EMBED_DIMS), np.float16)]
    for batch in inference_batches(dataset, BATCH, workers=max(cfg.device.workers_per_gpu, 0)):
        if batch.images is not None:
            rows.append(image_embeddings(predictor.forward_levels(batch.images), predictor.num_classes))
    embeddings = np.concatenate(rows)
    atomic_write(out, lambda f: np.save(f, embeddings, allow_pickle=False))
    return len(embeddings)


def find_labelled_embeddings(weights: Path, models_dir: Path) -> Path | None:
    """The file beside the weights mining runs (their stage's folder), else at the top of the
    models folder."""
    for candidate in (weights.parent / FILE_NAME, models_dir / FILE_NAME):
        if candidate.is_file():
            return candidate
    return None


def read_labelled_embeddings(path: Path) -> np.ndarray | None:
    """The ``[M, EMBED_DIMS]`` float16 array in ``path``, or None (with a warning naming the file)
    when it is not one. The header is checked before any data is read (a crafted shape allocates
    nothing), no pickled object is ever loaded."""
    try:
        return _read_checked(path)
    except Exception as err:  # numpy's header parser alone raises ValueError, SyntaxError, TokenError...
        reason = str(err).splitlines()[0][:300] if str(err).strip() else type(err).__name__
        log.warning("%s: not read (%s); mining diversity without the labelled images", path, reason)
        return None


def _read_checked(path: Path) -> np.ndarray:
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"npy format version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        if len(shape) != 2 or shape[1] != EMBED_DIMS or dtype != np.dtype("<f2") or fortran_order:
            raise ValueError(f"float16 [M, {EMBED_DIMS}] expected, found {dtype} {shape}")
        if shape[0] > MAX_ROWS:
            raise ValueError(f"{shape[0]} rows, more than {MAX_ROWS}")
        data = f.read(shape[0] * EMBED_DIMS * 2 + 1)
    if len(data) != shape[0] * EMBED_DIMS * 2:
        raise ValueError(f"{len(data)} bytes of data for {shape[0]} rows")
    array = np.frombuffer(data, dtype="<f2").reshape(shape).astype(np.float16)
    if not np.isfinite(array).all():
        raise ValueError("embeddings that are not finite")
    return array
