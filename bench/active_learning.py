"""Active-learning benchmark: do ALDD picks make the next NanoDet-Plus model better than random picks?

    .venv/bin/python bench/active_learning.py [--quick] [--seeds 3] [--rounds 3] [--epochs 6] [--round0-epochs 36]
        [--pool 400] [--test 160] [--algorithms aldd,entropy,random] [--out bench/results]
        [--diversity] [--pools plain,bursty] [--bursty-scenes 200]

The pool (``bench._common.PoolRecipe``) is built so that the choice of images matters: 5 shape
classes at 45/30/15/7/3 % of the objects (``diamond`` is the rare one), a quarter of the object
images with only small (10-20 px) objects and a fifth with faint ones, 38 % images with no object,
and 15 % of the pool near-duplicates (shifted, re-noised copies) of other pool images. The pool and
the test set (originals only, no copies of pool images) are fixed by ``--pool-seed``; ``--seeds``
change the initial labelled set and the training seed.

Protocol, per seed: label a random 20 % of the pool and train round 0 from random init (once,
shared by every algorithm, for ``--round0-epochs``: it stands in for the platform's pretrained start,
and from random init the mining-round budget leaves a model that finds nothing, AP_50 0.01 after 8
epochs of 100 images); then for each algorithm, ``--rounds`` times: score the unlabelled rest
with the last model (the inference pre-processing, ``Predictor.forward_levels`` and
``nanodet.mining.uncertainty.uncertainty_scores``; ``random``: a seeded draw), label the top 10 % of the pool,
and fine-tune for the same number of epochs from the last round's ``nanodet_model_best.pth`` (the
whole EMA model, aux branch included), as the platform does. Each round's model is evaluated once,
at its end, on the whole test set (AP_50, the platform's mAP, and COCO mAP).

Trainings use ``nanodet.engine.run.train`` (config/nanodet-plus-m_320.yml re-classed, official
augmentations, input 128, batch 16) with 1 torch thread in each of ``--workers`` (2) spawned
processes; a job is one (seed, algorithm) chain, the round-0 models first. Prints ONE JSON object
on stdout (progress on stderr) and writes it with two plots to ``--out``: ``active_learning.json``,
``active_learning.png`` (AP_50 and mAP vs labelled fraction, mean +- std over seeds) and
``active_learning_picks.png`` (first seed, last round: the first 16 ALDD picks beside 16 random
picks, GT boxes drawn). ``--quick`` runs a small version (2 seeds) and writes ``*_quick.*`` files.

**Diversity** (issue 32; ``--diversity``): the arms random, aldd, ``aldd_diversity`` and
``entropy_diversity`` (the scorer's ranking re-ordered by ``nanodet.mining.diversity``, as the
mining task does with ``mining_diversity: true``) on two pools: the plain one above and a bursty
one (``--bursty-scenes``, 200: scenes drawn like the plain pool's originals, with another seed,
each as 6-10 consecutive jittered frames: shifted up to 6 px, re-brightened, re-noised, like
video). Both start from ``initial`` images and label ``step`` more per round (the plain pool's
20 % and 10 %: the same counts on the bursty pool, whose labelling budget is then well below its
number of scenes, as with real camera pools). The report adds, per round, the distinct scenes the
picks show (``pick_composition``) and the labelled set shows (``labelled_scenes``), and
``diversity_verdict`` (each ``*_diversity`` arm's final AP_50 against its scorer alone). Writes
``active_learning_diversity.json`` (``pools``: one report per pool), ``active_learning_diversity.png``
(per pool: AP_50 and distinct labelled scenes vs labelled images) and
``active_learning_diversity_picks_<pool>.png`` (first seed, last round: aldd beside
aldd_diversity picks).

``aldd_diverse`` (not in the default list) is ALDD with one cheap fix for batch redundancy: walking
the ALDD ranking it skips an image whose blurred 8x8 grey thumbnail is within cosine 0.85 of a
labelled or already picked one. Add it with ``--algorithms aldd,entropy,random,aldd_diverse``; with
the same ``--work-dir`` the rounds already trained are reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PoolRecipe, host_info, log, make_pool, synthetic_config  # noqa: E402

CONFIG = "nanodet-plus-m_320.yml"
ALGORITHMS = ("aldd", "entropy", "random", "aldd_diverse", "aldd_diversity", "entropy_diversity")
DEFAULT_ALGORITHMS = ("aldd", "entropy", "random")
DIVERSITY_ALGORITHMS = ("random", "aldd", "aldd_diversity", "entropy_diversity")  # the arms of issue 32
POOLS = ("plain", "bursty")
DUP_SIMILARITY = 0.85  # thumbnails at least this alike are treated as near-duplicates (aldd_diverse)
KINDS = ("empty", "dup_copy", "redundant", "rare", "small", "low_contrast")
MINING_BATCH = 32
# Defaults from the --quick timing (8 min on 2 shared cores): about 5x its work, 35-45 min.
DEFAULT_EPOCHS, DEFAULT_ROUND0_EPOCHS, DEFAULT_POOL, DEFAULT_TEST = 6, 36, 400, 160
QUICK_EPOCHS, QUICK_ROUND0_EPOCHS, QUICK_POOL, QUICK_TEST = 4, 16, 200, 80
DEFAULT_SCENES, QUICK_SCENES = 200, 100  # scenes of the bursty pool (6-10 frames each)


@dataclass(frozen=True)
class Protocol:
    """What every chain does; the same for every algorithm."""

    seeds: tuple[int, ...]
    algorithms: tuple[str, ...]
    rounds: int
    epochs: int
    round0_epochs: int
    pool: int
    test: int
    pool_seed: int = 2024
    initial_fraction: float = 0.2
    step_fraction: float = 0.1
    input_size: int = 128
    batch: int = 16
    lr: float = 3e-3
    warmup_steps: int = 10
    workers: int = 2
    pools: tuple[str, ...] = ("plain",)
    bursty_scenes: int = DEFAULT_SCENES
    burst_frames: tuple[int, int] = (6, 10)
    recipe: PoolRecipe = field(default_factory=PoolRecipe)

    @property
    def initial(self) -> int:
        """Images labelled at round 0 (a fraction of the plain pool; the same count on the bursty one)."""
        return round(self.pool * self.initial_fraction)

    @property
    def step(self) -> int:
        """Images labelled per round (likewise)."""
        return round(self.pool * self.step_fraction)


# --- data --------------------------------------------------------------------------------------------


def prepare_data(root: Path, proto: Protocol, kind: str = "plain") -> dict:
    """Generate a pool (``plain`` or ``bursty``) and the test set (cached under ``root``); their
    paths, the pool's kind and size. The bursty pool draws its scenes as the plain pool draws
    originals (another seed), each as 6-10 jittered frames; the test set is the same for both."""
    start = time.perf_counter()
    if kind == "bursty":
        scenes, seed = proto.bursty_scenes, proto.pool_seed + 104729
        pool = make_pool(root, f"bursty-{scenes}-s{seed}", proto.recipe, scenes, seed, bursts=tuple(proto.burst_frames))
    else:
        pool = make_pool(root, f"pool-{proto.pool}-s{proto.pool_seed}", proto.recipe, proto.pool, proto.pool_seed)
    test = make_pool(
        root, f"test-{proto.test}-s{proto.pool_seed}", proto.recipe, proto.test, proto.pool_seed + 7919, with_dups=False
    )
    size = len(json.loads(Path(pool["meta_path"]).read_text()))
    log(f"{kind} pool {size} + test {proto.test} images ready in {time.perf_counter() - start:.1f}s under {root}")
    return {"pool": pool, "test": test, "root": str(root), "kind": kind, "size": size}


def load_meta(paths: dict[str, str]) -> dict[int, dict]:
    """Per image id: empty, small, low_contrast, rare, objects, dup_of."""
    return {int(k): v for k, v in json.loads(Path(paths["meta_path"]).read_text()).items()}


def write_subset(ann_path: str, image_ids: list[int], out: Path) -> str:
    """A COCO json holding only ``image_ids`` (with their annotations) of ``ann_path``."""
    coco = json.loads(Path(ann_path).read_text())
    keep = set(image_ids)
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco))
    return str(out)


def pool_partners(meta: dict[int, dict]) -> dict[int, set[int]]:
    """For each pool image, its near-duplicates: the other images of its scene (its source and
    copies; the other frames of its burst)."""
    scenes: dict[int, set[int]] = {}
    for image_id, info in meta.items():
        scenes.setdefault(info["scene"], set()).add(image_id)
    return {image_id: scenes[info["scene"]] - {image_id} for image_id, info in meta.items()}


# --- one round: train, evaluate, mine ----------------------------------------------------------------


def round_config(proto: Protocol, data: dict, train_json: str, work_dir: Path, load_model: str | None, epochs: int):
    """config/nanodet-plus-m_320.yml for the pool classes, training on ``train_json`` for ``epochs``,
    validating (once, at the end) on the test set."""
    overrides = {
        "model": {"arch": {"detach_epoch": epochs // 2, "backbone": {"pretrain": False}}},
        "schedule": {
            "load_model": load_model,
            "optimizer": {"lr": proto.lr},
            "warmup": {"steps": proto.warmup_steps, "ratio": 0.1},
            "total_epochs": epochs,
            "lr_schedule": {"name": "CosineAnnealingLR", "T_max": epochs, "eta_min": proto.lr / 20},
            "val_intervals": epochs,
        },
    }
    train_set = {"img_path": data["pool"]["img_path"], "ann_path": train_json}
    test_set = {"img_path": data["test"]["img_path"], "ann_path": data["test"]["ann_path"]}
    size = (proto.input_size, proto.input_size)
    return synthetic_config(
        CONFIG, train_set, test_set, size, proto.batch, 0, work_dir, overrides, class_names=proto.recipe.classes
    )


def train_round(
    proto: Protocol, data: dict, labelled: list[int], work_dir: Path, seed: int, load_model: str | None, epochs: int
) -> dict:
    """Train one round on the labelled images; the EMA model's test metrics (evaluated at the end)."""
    from nanodet.engine.run import train

    key = {
        "labelled": labelled,
        "seed": seed,
        "load_model": load_model,
        "epochs": epochs,
        "protocol": {k: v for k, v in asdict(proto).items() if k not in ("seeds", "algorithms", "workers", "pools")},
        "pool": data.get("kind", "plain"),
    }
    cached = _cached_round(work_dir, key)
    if cached is not None:
        return cached
    train_json = write_subset(data["pool"]["ann_path"], labelled, work_dir / "labelled.json")
    cfg = round_config(proto, data, train_json, work_dir, load_model, epochs)
    start = time.perf_counter()
    state = train(cfg, work_dir=work_dir, seed=seed, progress=False, device="cpu")
    final = state.evaluations[-1]
    rare = proto.recipe.rare_class
    result = {
        "labelled": len(labelled),
        "AP_50": round(final.metrics["AP_50"], 4),
        "mAP": round(final.metrics["mAP"], 4),
        "AP_small": _rounded(final.metrics.get("AP_small")),
        "AP_rare": _rounded(final.per_class_AP.get(rare)),
        "per_class_AP": {k: round(v, 4) for k, v in final.per_class_AP.items()},
        "steps": state.step,
        "train_s": round(time.perf_counter() - start, 1),
        "weights": str(work_dir / "nanodet_model_best.pth"),
    }
    (work_dir / "round.json").write_text(json.dumps({"key": key, "result": result}))
    return result


def _cached_round(work_dir: Path, key: dict) -> dict | None:
    """The result of a round already trained in ``work_dir`` with the same inputs (``--work-dir`` reuse)."""
    record = work_dir / "round.json"
    if not record.is_file() or not (work_dir / "nanodet_model_best.pth").is_file():
        return None
    saved = json.loads(record.read_text())
    return {**saved["result"], "cached": True} if saved["key"] == json.loads(json.dumps(key)) else None


def _rounded(value: float | None) -> float | None:
    """4 decimals; None stays None (a metric COCO leaves undefined, e.g. a class absent from the test set)."""
    return None if value is None else round(value, 4)


def image_path(data: dict, image_id: int) -> str:
    """The pool image file of an id (``make_pool``: id = index + 1)."""
    return str(Path(data["pool"]["img_path"]) / f"{image_id - 1:05d}.jpg")


def mining_scores(
    proto: Protocol, data: dict, weights: str, image_ids: list[int], algorithm: str
) -> tuple[list[float], np.ndarray]:
    """Uncertainty of each image under ``weights``, with inference pre-processing and batching, and
    the diversity embeddings of the same forward (``nanodet.mining.diversity``), as the task does."""
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches
    from nanodet.inference.predictor import Predictor
    from nanodet.mining.diversity import image_embeddings
    from nanodet.mining.uncertainty import uncertainty_scores

    cfg = round_config(proto, data, data["pool"]["ann_path"], Path(data["root"]), None, proto.epochs)
    predictor = Predictor(cfg, weights)
    paths = [image_path(data, i) for i in image_ids]
    dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
    scores: list[float] = []
    embeddings: list[np.ndarray] = []
    for batch in inference_batches(dataset, MINING_BATCH, workers=0):
        if batch.failed:
            raise RuntimeError(f"unreadable pool images: {batch.failed}")
        levels = predictor.forward_levels(batch.images)
        hw = (batch.images.shape[2], batch.images.shape[3])
        scores += uncertainty_scores(algorithm, levels, predictor.num_classes, hw).tolist()
        embeddings.append(image_embeddings(levels, predictor.num_classes))
    return scores, np.concatenate(embeddings)


def pick(algorithm: str, candidates: list[int], scores: list[float], count: int, rng: np.random.Generator) -> list[int]:
    """The ``count`` images to label next: top scores (ties: lower id first), or a seeded random draw."""
    if algorithm == "random":
        return sorted(int(i) for i in rng.choice(candidates, size=count, replace=False))
    order = sorted(range(len(candidates)), key=lambda k: (-scores[k], candidates[k]))
    return [candidates[k] for k in order[:count]]


def thumbnail(path: str) -> np.ndarray:
    """A cheap image descriptor: blurred 8x8 grey thumbnail, zero mean, unit norm (robust to small shifts)."""
    import cv2

    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE).astype(np.float32)
    small = cv2.resize(cv2.GaussianBlur(grey, (0, 0), 3), (8, 8), interpolation=cv2.INTER_AREA).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-6)


def diverse_top(data: dict, ranked: list[int], labelled: list[int], count: int) -> tuple[list[int], int]:
    """``aldd_diverse``: walk the ALDD ranking, skipping an image whose thumbnail is a near-duplicate
    (cosine >= DUP_SIMILARITY) of a labelled or already picked one; refill from the skipped if short.
    Returns the picks and how many were skipped."""
    chosen: list[int] = []
    seen = np.stack([thumbnail(image_path(data, i)) for i in labelled])
    skipped: list[int] = []
    for image_id in ranked:
        if len(chosen) == count:
            break
        desc = thumbnail(image_path(data, image_id))
        if float((seen @ desc).max()) >= DUP_SIMILARITY:
            skipped.append(image_id)
            continue
        chosen.append(image_id)
        seen = np.vstack([seen, desc])
    return chosen + skipped[: count - len(chosen)], len(skipped)


def mine_round(
    proto: Protocol, data: dict, weights: str, labelled: list[int], algorithm: str, seed: int, round_index: int
) -> dict:
    """Score the unlabelled pool and choose the next ``proto.step`` images."""
    from nanodet.mining.diversity import diverse_order

    start = time.perf_counter()
    candidates = sorted(set(range(1, data["size"] + 1)) - set(labelled))
    scorer = "entropy" if algorithm.startswith("entropy") else "aldd"  # random: ALDD scores kept for the record
    scores, embeddings = mining_scores(proto, data, weights, candidates, scorer)
    rng = np.random.default_rng([seed, round_index, 77])
    skipped, diversity_s = 0, None
    if algorithm == "aldd_diverse":
        ranked = pick("aldd", candidates, scores, len(candidates), rng)
        picks, skipped = diverse_top(data, ranked, labelled, proto.step)
    elif algorithm.endswith("_diversity"):
        ranking_start = time.perf_counter()
        order, _ = diverse_order(np.array(scores), embeddings)
        diversity_s = round(time.perf_counter() - ranking_start, 4)
        picks = [candidates[k] for k in order[: proto.step].tolist()]
    else:
        picks = pick(algorithm, candidates, scores, proto.step, rng)
    by_id = dict(zip(candidates, scores))
    return {
        "picks": picks,
        "pick_scores": [round(by_id[i], 6) for i in picks],
        "score_name": scorer,
        "skipped_as_near_duplicate": skipped,
        "diversity_s": diversity_s,
        "mine_s": round(time.perf_counter() - start, 1),
    }


# --- jobs (run in the worker processes) ---------------------------------------------------------------


def init_worker() -> None:
    """One intra-op thread per process (2 processes share the 2 cores); quiet library logs."""
    import cv2
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def initial_labelled(proto: Protocol, seed: int, size: int) -> list[int]:
    """The seeded random draw every algorithm starts from (20 % of the plain pool; as many
    images of the bursty pool, ``size`` images)."""
    rng = np.random.default_rng([seed, 1000])
    return sorted(int(i) for i in rng.choice(np.arange(1, size + 1), size=proto.initial, replace=False))


def round0_job(proto: Protocol, data: dict, seed: int, work: str) -> dict:
    """Round 0 of a seed: the initial labelled set, trained from random init."""
    labelled = initial_labelled(proto, seed, data["size"])
    result = train_round(proto, data, labelled, Path(work) / f"seed{seed}" / "round0", seed, None, proto.round0_epochs)
    log(
        f"{data['kind']} seed {seed} round 0: {len(labelled)} labelled, AP50 {result['AP_50']:.3f} "
        f"mAP {result['mAP']:.3f} ({result['train_s']:.0f}s{' cached' if result.get('cached') else ''})"
    )
    return {**result, "labelled_ids": labelled}


def chain_job(proto: Protocol, data: dict, seed: int, algorithm: str, round0: dict, work: str) -> list[dict]:
    """Rounds 1..R of one (seed, algorithm): mine with the last model, label, fine-tune from it."""
    labelled, weights, rounds = list(round0["labelled_ids"]), round0["weights"], []
    for r in range(1, proto.rounds + 1):
        mined = mine_round(proto, data, weights, labelled, algorithm, seed, r)
        labelled_before = list(labelled)
        labelled += mined["picks"]
        work_dir = Path(work) / f"seed{seed}" / algorithm / f"round{r}"
        result = train_round(proto, data, labelled, work_dir, seed, weights, proto.epochs)
        weights = result["weights"]
        rounds.append({**result, **mined, "labelled_before": labelled_before})
        log(
            f"{data['kind']} seed {seed} {algorithm} round {r}: {len(labelled)} labelled, AP50 {result['AP_50']:.3f} "
            f"mAP {result['mAP']:.3f} (mine {mined['mine_s']:.0f}s, train {result['train_s']:.0f}s"
            f"{' cached' if result.get('cached') else ''})"
        )
    return rounds


def run_jobs(proto: Protocol, datas: dict[str, dict], work: str) -> tuple[dict, dict, list]:
    """All round-0 jobs first (every pool), each (pool, seed)'s chains as soon as its round 0 is
    done; load samples. Results keyed by pool: ``round0[pool][seed]``, ``chains[pool][(seed, alg)]``."""
    context = multiprocessing.get_context("spawn")
    round0: dict[str, dict[int, dict]] = {kind: {} for kind in datas}
    chains: dict[str, dict[tuple[int, str], list[dict]]] = {kind: {} for kind in datas}
    loads: list[list[float]] = []
    start = time.perf_counter()
    with ProcessPoolExecutor(proto.workers, mp_context=context, initializer=init_worker) as pool:
        pending: dict[Future, tuple[str, int, str | None]] = {
            pool.submit(round0_job, proto, data, s, str(Path(work) / kind)): (kind, s, None)
            for s in proto.seeds
            for kind, data in datas.items()
        }
        while pending:
            done, _ = wait(pending, timeout=60, return_when=FIRST_COMPLETED)
            loads.append([round(time.perf_counter() - start)] + [round(x, 2) for x in os.getloadavg()])
            for future in done:
                kind, seed, algorithm = pending.pop(future)
                if algorithm is not None:
                    chains[kind][(seed, algorithm)] = future.result()
                    continue
                round0[kind][seed] = first = future.result()
                for alg in proto.algorithms:
                    job = pool.submit(chain_job, proto, datas[kind], seed, alg, first, str(Path(work) / kind))
                    pending[job] = (kind, seed, alg)
    return round0, chains, loads


# --- summary -------------------------------------------------------------------------------------------


def mean_std(values: list[float | None]) -> dict:
    """Mean and sample standard deviation (0 for one value) of the defined values, rounded."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "std": round(std, 4)}


def composition(
    picks: list[int], labelled_before: list[int], meta: dict[int, dict], partners: dict[int, set[int]]
) -> dict:
    """What a round's picks are: empty, copies, redundant (a near-duplicate of one already labelled or
    picked in the same round), with the rare class, small objects, faint objects; objects picked;
    distinct scenes among them, and how many of those no labelled image showed yet."""
    chosen = set(picks)
    known = set(labelled_before)
    scenes = {meta[i]["scene"] for i in picks}
    counts = dict.fromkeys(KINDS, 0) | {"objects": 0}
    counts["scenes"] = len(scenes)
    counts["new_scenes"] = len(scenes - {meta[i]["scene"] for i in known})
    for image_id in picks:
        info = meta[image_id]
        counts["empty"] += info["empty"]
        counts["dup_copy"] += info["dup_of"] is not None
        counts["redundant"] += bool(partners[image_id] & (known | (chosen - {image_id})))
        counts["rare"] += info["rare"]
        counts["small"] += info["small"]
        counts["low_contrast"] += info["low_contrast"]
        counts["objects"] += info["objects"]
    return counts


def labelled_after(round0: dict, chains: dict, seed: int, algorithm: str, r: int) -> list[int]:
    """The labelled ids after round ``r`` of a chain (round 0: the initial draw)."""
    if r == 0:
        return round0[seed]["labelled_ids"]
    step = chains[(seed, algorithm)][r - 1]
    return step["labelled_before"] + step["picks"]


def algorithm_rows(
    proto: Protocol, algorithm: str, round0: dict, chains: dict, meta: dict[int, dict] | None = None
) -> list[dict]:
    """Per round: labelled fraction and AP_50 / mAP / AP_rare per seed with mean and std, and the
    distinct scenes the labelled images show (with ``meta``)."""
    rows = []
    size = len(meta) if meta else proto.pool
    for r in range(proto.rounds + 1):
        per_seed = {s: round0[s] if r == 0 else chains[(s, algorithm)][r - 1] for s in proto.seeds}
        row = {
            "round": r,
            "labelled": proto.initial + r * proto.step,
            "labelled_fraction": round((proto.initial + r * proto.step) / size, 4),
        }
        for metric in ("AP_50", "mAP", "AP_rare", "AP_small"):
            values = {s: per_seed[s][metric] for s in proto.seeds}
            row[metric] = {"per_seed": values, **mean_std(list(values.values()))}
        if meta:
            scenes = {
                s: len({meta[i]["scene"] for i in labelled_after(round0, chains, s, algorithm, r)}) for s in proto.seeds
            }
            row["labelled_scenes"] = {"per_seed": scenes, **mean_std(list(scenes.values()))}
        row["train_s_mean"] = round(statistics.fmean(per_seed[s]["train_s"] for s in proto.seeds), 1)
        rows.append(row)
    return rows


def algorithm_picks(proto: Protocol, algorithm: str, chains: dict, meta: dict[int, dict]) -> dict:
    """Picked ids and scores per seed and round, and their composition (per seed and mean)."""
    partners = pool_partners(meta)
    picks, comp = {}, []
    for r in range(1, proto.rounds + 1):
        per_seed = {}
        for s in proto.seeds:
            step = chains[(s, algorithm)][r - 1]
            picks.setdefault(s, {})[r] = {
                "ids": step["picks"],
                step["score_name"] + "_scores": step["pick_scores"],
                "skipped_as_near_duplicate": step.get("skipped_as_near_duplicate", 0),
            }
            per_seed[s] = composition(step["picks"], step["labelled_before"], meta, partners)
        mean = {k: round(statistics.fmean(c[k] for c in per_seed.values()), 2) for k in per_seed[proto.seeds[0]]}
        comp.append({"round": r, "picked": proto.step, "mean": mean, "per_seed": per_seed})
    return {"picks": picks, "composition": comp}


def pool_stats(meta: dict[int, dict]) -> dict:
    """How many pool images are of each kind (what a random pick reproduces on average)."""
    partners = pool_partners(meta)
    counts = {k: sum(bool(m[k]) for m in meta.values()) for k in ("empty", "rare", "small", "low_contrast")}
    counts["dup_copy"] = sum(m["dup_of"] is not None for m in meta.values())
    counts["in_dup_pair"] = sum(bool(p) for p in partners.values())
    counts["scenes"] = len({m["scene"] for m in meta.values()})
    counts["objects"] = sum(m["objects"] for m in meta.values())
    return {"images": len(meta), **counts}


def verdict(rows: dict[str, list[dict]], proto: Protocol) -> dict:
    """Final-round AP_50 of each algorithm against random: difference of means, spread, paired differences."""
    if "random" not in rows:
        return {}
    base = rows["random"][-1]["AP_50"]
    out = {}
    for alg, alg_rows in rows.items():
        if alg == "random":
            continue
        final = alg_rows[-1]["AP_50"]
        paired = [final["per_seed"][s] - base["per_seed"][s] for s in proto.seeds]
        spread = max(final["std"], base["std"])
        diff = final["mean"] - base["mean"]
        out[alg] = {
            "final_AP50_minus_random": round(diff, 4),
            "larger_seed_std": spread,
            "paired_diff": mean_std(paired),
            "beats_random_beyond_spread": diff > spread,
        }
    return out


def diversity_verdict(rows: dict[str, list[dict]], proto: Protocol) -> dict:
    """Final-round AP_50 of each ``<scorer>_diversity`` arm against its scorer alone (when run):
    difference of means, the larger seed std, paired differences, beyond / within the spread."""
    out = {}
    for alg, alg_rows in rows.items():
        base_name = alg.removesuffix("_diversity")
        if base_name == alg or base_name not in rows:
            continue
        final, base = alg_rows[-1]["AP_50"], rows[base_name][-1]["AP_50"]
        spread = max(final["std"], base["std"])
        diff = final["mean"] - base["mean"]
        out[alg] = {
            f"final_AP50_minus_{base_name}": round(diff, 4),
            "larger_seed_std": spread,
            "paired_diff": mean_std([final["per_seed"][s] - base["per_seed"][s] for s in proto.seeds]),
            "beats_beyond_spread": diff > spread,
            "within_spread": abs(diff) <= spread,
        }
    return out


# --- pictures ----------------------------------------------------------------------------------------


def pyplot():
    """matplotlib's pyplot on the Agg backend (a clear exit when matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise SystemExit(f"plotting needs matplotlib: .venv/bin/pip install -e '.[bench]' ({err})") from None
    return plt


def plot_curves(report: dict, path: Path) -> None:
    """AP_50 and COCO mAP vs labelled fraction, one line per algorithm with a mean +- std band."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in zip(axes, ("AP_50", "mAP"), ("AP_50 (platform mAP)", "COCO mAP@[.5:.95]")):
        for alg, rows in report["results"].items():
            x = [r["labelled_fraction"] for r in rows]
            mean = np.array([r[metric]["mean"] for r in rows])
            std = np.array([r[metric]["std"] for r in rows])
            ax.plot(x, mean, marker="o", label=alg)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ax.set_xlabel("labelled fraction of the pool")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    seeds = len(report["protocol"]["seeds"])
    fig.suptitle(f"NanoDet-Plus-m active learning on the synthetic pool (mean +- std over {seeds} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pools(reports: dict[str, dict], path: Path) -> None:
    """One row per pool: AP_50 and the distinct scenes labelled against the labelled images, one
    line per algorithm with a mean +- std band."""
    plt = pyplot()
    fig, axes = plt.subplots(len(reports), 2, figsize=(11, 4 * len(reports)), squeeze=False)
    for (kind, report), row in zip(reports.items(), axes):
        stats = report["pool_stats"]
        for ax, metric, title in zip(
            row,
            ("AP_50", "labelled_scenes"),
            ("AP_50 (platform mAP)", "distinct scenes among the labelled images"),
        ):
            for alg, rows in report["results"].items():
                x = [r["labelled"] for r in rows]
                mean = np.array([r[metric]["mean"] for r in rows])
                std = np.array([r[metric]["std"] for r in rows])
                ax.plot(x, mean, marker="o", label=alg)
                ax.fill_between(x, mean - std, mean + std, alpha=0.2)
            ax.set_xlabel("labelled images")
            ax.set_title(f"{kind} pool ({stats['images']} images, {stats['scenes']} scenes): {title}", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    seeds = len(next(iter(reports.values()))["protocol"]["seeds"])
    fig.suptitle(f"Mining with and without the diversity ranking (mean +- std over {seeds} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tile_kind(info: dict, partners: set[int], known: set[int]) -> str:
    """A short tag of what an image is: empty/dup/rare/small/faint (or obj)."""
    tags = [
        name
        for name, flag in (
            ("empty", info["empty"]),
            ("dup", bool(partners & known)),
            ("rare", info["rare"]),
            ("small", info["small"]),
            ("faint", info["low_contrast"]),
        )
        if flag
    ]
    return "+".join(tags) or "obj"


def draw_tile(data: dict, image_id: int, score: float, kind: str, boxes: list[list[float]], scale: float):
    """One pool image, upscaled, with its GT boxes and a label line of score and kind."""
    import cv2

    image = cv2.imread(image_path(data, image_id))
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    for x, y, w, h in boxes:
        cv2.rectangle(
            image,
            (round(x * scale), round(y * scale)),
            (round((x + w) * scale), round((y + h) * scale)),
            (0, 255, 0),
            1,
        )
    band = np.full((18, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, f"#{image_id} {score:.3f} {kind}", (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return np.vstack([band, image])


def grid_rows(tiles: list[np.ndarray], columns: int) -> list[np.ndarray]:
    """Rows of ``columns`` equal-sized tiles, the last one padded with white tiles."""
    blank = np.full_like(tiles[0], 255)
    tiles = tiles + [blank] * (-len(tiles) % columns)
    return [np.hstack(tiles[k : k + columns]) for k in range(0, len(tiles), columns)]


def contact_sheet(
    proto: Protocol,
    chains: dict,
    data: dict,
    meta: dict[int, dict],
    path: Path,
    per_side: int = 16,
    arms: tuple[str, str] = ("aldd", "random"),
) -> None:
    """First seed, last round: the first picks of ``arms[0]`` (in its order) beside those of ``arms[1]``,
    GT boxes drawn."""
    import cv2

    coco = json.loads(Path(data["pool"]["ann_path"]).read_text())
    boxes: dict[int, list] = {}
    for ann in coco["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    seed, partners = proto.seeds[0], pool_partners(meta)
    panels = []
    for alg in arms:
        step = chains[(seed, alg)][-1]
        known = set(step["labelled_before"]) | set(step["picks"])
        tiles = [
            draw_tile(data, i, s, tile_kind(meta[i], partners[i], known), boxes.get(i, []), 1.25)
            for i, s in list(zip(step["picks"], step["pick_scores"]))[:per_side]
        ]
        rows = grid_rows(tiles, 4)
        title = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
        cv2.putText(
            title,
            f"{alg} picks, seed {seed}, round {proto.rounds} (score: ALDD of its model)",
            (4, 19),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 0),
            1,
        )
        panels.append(np.vstack([title, *rows]))
    height = max(p.shape[0] for p in panels)
    panels = [np.vstack([p, np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)]) for p in panels]
    gap = np.full((height, 12, 3), 128, np.uint8)
    cv2.imwrite(str(path), np.hstack([panels[0], gap, panels[1]]))


# --- main --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (2 seeds, smaller pool, fewer epochs)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3; quick 2)")
    parser.add_argument("--rounds", type=int, default=3, help="mining rounds after round 0")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs of every mining round (default {DEFAULT_EPOCHS}; quick {QUICK_EPOCHS})",
    )
    parser.add_argument(
        "--round0-epochs",
        type=int,
        default=None,
        help=f"epochs of the shared round 0 from random init (default {DEFAULT_ROUND0_EPOCHS}; "
        f"quick {QUICK_ROUND0_EPOCHS})",
    )
    parser.add_argument(
        "--pool", type=int, default=None, help=f"pool images (default {DEFAULT_POOL}; quick {QUICK_POOL})"
    )
    parser.add_argument(
        "--test", type=int, default=None, help=f"test images (default {DEFAULT_TEST}; quick {QUICK_TEST})"
    )
    parser.add_argument(
        "--algorithms",
        default=",".join(DEFAULT_ALGORITHMS),
        help=f"comma list of {', '.join(ALGORITHMS)} (default {','.join(DEFAULT_ALGORITHMS)})",
    )
    parser.add_argument("--pool-seed", type=int, default=2024, help="seed of the pool and test images")
    parser.add_argument("--workers", type=int, default=2, help="training processes in parallel (1 thread each)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep data and models here (default: temp dir); a round trained there before with "
        "the same inputs is reused, not retrained",
    )
    parser.add_argument(
        "--diversity",
        action="store_true",
        help="issue 32's comparison: --pools plain,bursty --algorithms "
        f"{','.join(DIVERSITY_ALGORITHMS)}, results named active_learning_diversity*",
    )
    parser.add_argument("--pools", default=None, help="comma list of plain, bursty (default plain)")
    parser.add_argument(
        "--bursty-scenes",
        type=int,
        default=None,
        help=f"scenes of the bursty pool, 6-10 frames each (default {DEFAULT_SCENES}; quick {QUICK_SCENES})",
    )
    args = parser.parse_args()
    if args.diversity:
        args.pools = args.pools or "plain,bursty"
        if args.algorithms == ",".join(DEFAULT_ALGORITHMS):
            args.algorithms = ",".join(DIVERSITY_ALGORITHMS)
    args.pools = args.pools or "plain"
    problem = algorithms_problem(args.algorithms.split(",")) or pools_problem(args.pools.split(","))
    if problem:
        parser.error(problem)
    return args


def pools_problem(names: list[str]) -> str | None:
    """What is wrong with a ``--pools`` list, or None."""
    unknown = set(names) - set(POOLS)
    if unknown or len(set(names)) != len(names) or not names:
        return f"--pools: a comma list of distinct names from {', '.join(POOLS)}, not {','.join(names)!r}"
    return None


def algorithms_problem(names: list[str]) -> str | None:
    """What is wrong with an ``--algorithms`` list, or None."""
    unknown = set(names) - set(ALGORITHMS)
    if unknown:
        return f"unknown algorithms {sorted(unknown)}; choose from {', '.join(ALGORITHMS)}"
    if "random" not in names or "aldd" not in names:
        return "--algorithms needs aldd and random (the comparison and the contact sheet)"
    return None


def make_protocol(args: argparse.Namespace) -> Protocol:
    """The run's protocol from the command line (``--quick`` lowers the defaults)."""
    quick = args.quick
    epochs = args.epochs or (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)
    return Protocol(
        seeds=tuple(range(args.seeds or (2 if quick else 3))),
        algorithms=tuple(args.algorithms.split(",")),
        rounds=args.rounds,
        epochs=epochs,
        round0_epochs=args.round0_epochs or (QUICK_ROUND0_EPOCHS if quick else DEFAULT_ROUND0_EPOCHS),
        pool=args.pool or (QUICK_POOL if quick else DEFAULT_POOL),
        test=args.test or (QUICK_TEST if quick else DEFAULT_TEST),
        pool_seed=args.pool_seed,
        workers=args.workers,
        pools=tuple(args.pools.split(",")),
        bursty_scenes=args.bursty_scenes or (QUICK_SCENES if quick else DEFAULT_SCENES),
    )


def build_report(proto: Protocol, data: dict, round0: dict, chains: dict, wall: dict) -> dict:
    """The JSON result: recipe, protocol, metrics per algorithm/round/seed, picks and their composition."""
    meta = load_meta(data["pool"])
    rows = {alg: algorithm_rows(proto, alg, round0, chains, meta) for alg in proto.algorithms}
    picks = {alg: algorithm_picks(proto, alg, chains, meta) for alg in proto.algorithms}
    protocol = {k: v for k, v in asdict(proto).items() if k != "recipe"}
    kind = data.get("kind", "plain")
    bursty = (
        {"bursts_of_frames": list(proto.burst_frames), "scenes": proto.bursty_scenes, "scene_seed_offset": 104729}
        if kind == "bursty"
        else {}
    )
    return {
        "benchmark": "active_learning_synthetic_pool",
        "pool": kind,
        "model": "nanodet-plus-m (config/nanodet-plus-m_320.yml re-classed), random init at round 0",
        "pool_recipe": proto.recipe.as_dict()
        | {"pool_seed": proto.pool_seed, "pool_fixed_across_seeds": True, "test_has_duplicates": False}
        | bursty,
        "pool_stats": pool_stats(meta),
        "test_stats": pool_stats(load_meta(data["test"])),
        "protocol": protocol
        | {
            "initial_labelled": proto.initial,
            "added_per_round": proto.step,
            "detach_epoch": "epochs // 2",
            "eta_min": proto.lr / 20,
            "evaluation": "EMA model at the end of each round on the whole test set",
        },
        "results": rows,
        "verdict": verdict(rows, proto),
        "diversity_verdict": diversity_verdict(rows, proto),
        "round0": {
            s: {"labelled_ids": round0[s]["labelled_ids"], "per_class_AP": round0[s]["per_class_AP"]}
            for s in proto.seeds
        },
        "picks": {alg: p["picks"] for alg, p in picks.items()},
        "pick_composition": {alg: p["composition"] for alg, p in picks.items()},
        "final_per_class_AP": {
            alg: {s: chains[(s, alg)][-1]["per_class_AP"] for s in proto.seeds} for alg in proto.algorithms
        },
        "wall_s": wall,
    }


def main() -> None:
    args = parse_args()
    proto = make_protocol(args)
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    name = "active_learning_diversity" if args.diversity else "active_learning"
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-al-") as tmp:
        root = args.work_dir or Path(tmp)
        datas = {kind: prepare_data(root / "data", proto, kind) for kind in proto.pools}
        data_s = time.perf_counter() - started
        round0, chains, loads = run_jobs(proto, datas, str(root / "runs"))
        jobs_s = time.perf_counter() - started - data_s
        wall = {"data": round(data_s, 1), "jobs": round(jobs_s, 1)}
        reports = {kind: build_report(proto, datas[kind], round0[kind], chains[kind], wall) for kind in proto.pools}
        for kind, data in datas.items():
            arms = ("aldd", "aldd_diversity") if "aldd_diversity" in proto.algorithms else ("aldd", "random")
            picks_name = f"{name}_picks{'' if len(datas) == 1 else '_' + kind}{suffix}.png"
            contact_sheet(proto, chains[kind], data, load_meta(data["pool"]), args.out / picks_name, arms=arms)
    host = {
        **host_info(),
        "loadavg_before": load_before,
        "loadavg_s_1_5_15": loads,
        "note": "2-core machine shared with other engineers' work; timings are contended",
    }
    wall["total"] = round(time.perf_counter() - started, 1)
    if len(reports) == 1:
        report = next(iter(reports.values())) | {"host": host}
    else:
        report = {"benchmark": "active_learning_diversity", "pools": reports, "wall_s": wall, "host": host}
    text = json.dumps(report, indent=1)
    (args.out / f"{name}{suffix}.json").write_text(text + "\n")
    if len(reports) == 1 and not args.diversity:
        plot_curves(report, args.out / f"{name}{suffix}.png")
    else:
        plot_pools(reports, args.out / f"{name}{suffix}.png")
    print(text)


if __name__ == "__main__":
    main()
