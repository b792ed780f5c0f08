"""Active-learning benchmark: do ALDD picks make the next NanoDet-Plus model better than random picks?

    .venv/bin/python bench/active_learning.py [--quick] [--seeds 3] [--rounds 3] [--epochs 6] [--round0-epochs 36]
        [--pool 400] [--test 160] [--algorithms aldd,entropy,random] [--out bench/results] [--work-dir DIR]
        [--diversity] [--pools plain,bursty] [--bursty-scenes 200]

The pool (``bench._common.PoolRecipe``: 5 shape classes at 45/30/15/7/3 %, empty, small, faint and
near-duplicate images) and the test set are fixed by ``--pool-seed``; ``--seeds`` change the initial
labelled set and the training seed. Per seed: label a random 20 % of the pool and train round 0 from
random init for ``--round0-epochs`` (shared by every algorithm); then per algorithm, ``--rounds`` times:
score the unlabelled rest with the last model (the inference pre-processing, ``Predictor.forward_levels``,
``nanodet.mining.uncertainty``; ``random``: a seeded draw), label the top 10 % of the pool, fine-tune the
last round's ``nanodet_model_best.pth`` for ``--epochs``, and evaluate it on the test set (AP_50, COCO mAP).
Trainings run in ``--workers`` spawned processes with one thread each. Writes ``active_learning.json``,
``active_learning.png`` (AP_50 and mAP against the labelled fraction, mean +- std over seeds) and
``active_learning_picks.png`` (first seed, last round: ALDD's picks beside random's) to ``--out``;
``--quick`` runs a small version into ``*_quick.*``.

``--diversity`` (issue 32): random, aldd, ``aldd_diversity`` and ``entropy_diversity`` (the scorer's ranking
re-ordered by ``nanodet.mining.diversity``, as the mining task's ``mining_diversity: true``) on the plain pool
and a bursty one (``--bursty-scenes`` scenes, each 6-10 jittered frames, like video), with the same labelling
counts; adds the distinct scenes picked and labelled, and ``diversity_verdict``; writes
``active_learning_diversity.json`` (``pools``: one report per pool) and its plots.
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
ALGORITHMS = ("aldd", "entropy", "random", "aldd_diversity", "entropy_diversity")
DEFAULT_ALGORITHMS = "aldd,entropy,random"
DIVERSITY_ALGORITHMS = "random,aldd,aldd_diversity,entropy_diversity"  # the arms of issue 32
POOLS = ("plain", "bursty")
KINDS = ("empty", "dup_copy", "redundant", "rare", "small", "low_contrast")
MINING_BATCH = 32
BURSTY_SEED_OFFSET = 104729
# (default, --quick): epochs, round-0 epochs, pool, test, bursty scenes; the default is ~5x the quick run's work
SIZES = dict(epochs=(6, 4), round0_epochs=(36, 16), pool=(400, 200), test=(160, 80), bursty_scenes=(200, 100))


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
    bursty_scenes: int = 200
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


def prepare_data(root: Path, proto: Protocol, kind: str) -> dict:
    """The pool (``plain``, or ``bursty``: its scenes drawn with another seed, each as jittered frames)
    and the test set (originals only), generated once under ``root``."""
    if kind == "bursty":
        scenes, seed = proto.bursty_scenes, proto.pool_seed + BURSTY_SEED_OFFSET
        pool = make_pool(root, f"bursty-{scenes}-s{seed}", proto.recipe, scenes, seed, bursts=proto.burst_frames)
    else:
        pool = make_pool(root, f"pool-{proto.pool}-s{proto.pool_seed}", proto.recipe, proto.pool, proto.pool_seed)
    name = f"test-{proto.test}-s{proto.pool_seed}"
    test = make_pool(root, name, proto.recipe, proto.test, proto.pool_seed + 7919, with_dups=False)
    return {"pool": pool, "test": test, "root": str(root), "kind": kind, "size": len(load_meta(pool))}


def load_meta(paths: dict[str, str]) -> dict[int, dict]:
    """Per image id: scene, empty, small, low_contrast, rare, objects, dup_of."""
    return {int(k): v for k, v in json.loads(Path(paths["meta_path"]).read_text()).items()}


def pool_partners(meta: dict[int, dict]) -> dict[int, set[int]]:
    """Each pool image's near-duplicates: the other images of its scene."""
    scenes: dict[int, set[int]] = {}
    for image_id, info in meta.items():
        scenes.setdefault(info["scene"], set()).add(image_id)
    return {image_id: scenes[info["scene"]] - {image_id} for image_id, info in meta.items()}


def image_path(data: dict, image_id: int) -> str:
    return str(Path(data["pool"]["img_path"]) / f"{image_id - 1:05d}.jpg")  # make_pool: id = index + 1


# --- one round: train, evaluate, mine ----------------------------------------------------------------


def round_config(proto: Protocol, data: dict, train_json: str, work_dir: Path, load_model: str | None, epochs: int):
    """config/nanodet-plus-m_320.yml for the pool classes, training on ``train_json``, evaluated at the end."""
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
    test_set = {k: data["test"][k] for k in ("img_path", "ann_path")}
    size = (proto.input_size, proto.input_size)
    return synthetic_config(
        CONFIG, train_set, test_set, size, proto.batch, 0, work_dir, overrides, class_names=proto.recipe.classes
    )


def train_round(
    proto: Protocol, data: dict, labelled: list[int], work_dir: Path, seed: int, load_model: str | None, epochs: int
) -> dict:
    """Train one round on the labelled images (reused when ``work_dir`` holds the same round); test metrics."""
    from nanodet.engine.run import train

    protocol = {k: v for k, v in asdict(proto).items() if k not in ("seeds", "algorithms", "workers", "pools")}
    key = {"labelled": labelled, "seed": seed, "load_model": load_model, "epochs": epochs, "protocol": protocol}
    key = json.loads(json.dumps(key | {"pool": data["kind"]}))
    record = work_dir / "round.json"
    if record.is_file() and (work_dir / "nanodet_model_best.pth").is_file():
        saved = json.loads(record.read_text())
        if saved["key"] == key:
            return saved["result"] | {"cached": True}
    coco = json.loads(Path(data["pool"]["ann_path"]).read_text())
    keep = set(labelled)
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "labelled.json").write_text(json.dumps(coco))
    cfg = round_config(proto, data, str(work_dir / "labelled.json"), work_dir, load_model, epochs)
    start = time.perf_counter()
    state = train(cfg, work_dir=work_dir, seed=seed, progress=False, device="cpu")
    final = state.evaluations[-1]

    def rounded(value: float | None) -> float | None:  # None: a metric COCO leaves undefined
        return None if value is None else round(value, 4)

    result = {
        "labelled": len(labelled),
        "AP_50": round(final.metrics["AP_50"], 4),
        "mAP": round(final.metrics["mAP"], 4),
        "AP_small": rounded(final.metrics.get("AP_small")),
        "AP_rare": rounded(final.per_class_AP.get(proto.recipe.rare_class)),
        "per_class_AP": {k: round(v, 4) for k, v in final.per_class_AP.items()},
        "steps": state.step,
        "train_s": round(time.perf_counter() - start, 1),
        "weights": str(work_dir / "nanodet_model_best.pth"),
    }
    record.write_text(json.dumps({"key": key, "result": result}))
    return result


def mining_scores(
    proto: Protocol, data: dict, weights: str, image_ids: list[int], scorer: str
) -> tuple[list[float], np.ndarray]:
    """Each image's uncertainty under ``weights`` (inference pre-processing and batching) and the
    diversity embeddings of the same forward, as the mining task computes them."""
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
        scores += uncertainty_scores(scorer, levels, predictor.num_classes, hw).tolist()
        embeddings.append(image_embeddings(levels, predictor.num_classes))
    return scores, np.concatenate(embeddings)


def mine_round(
    proto: Protocol, data: dict, weights: str, labelled: list[int], algorithm: str, seed: int, round_index: int
) -> dict:
    """Score the unlabelled pool and choose the next ``proto.step`` images."""
    from nanodet.mining.diversity import diverse_order

    start = time.perf_counter()
    candidates = sorted(set(range(1, data["size"] + 1)) - set(labelled))
    scorer = "entropy" if algorithm.startswith("entropy") else "aldd"  # random: ALDD scores kept for the record
    scores, embeddings = mining_scores(proto, data, weights, candidates, scorer)
    ranked = [candidates[k] for k in sorted(range(len(candidates)), key=lambda k: (-scores[k], candidates[k]))]
    diversity_s = None
    if algorithm == "random":
        rng = np.random.default_rng([seed, round_index, 77])
        picks = sorted(int(i) for i in rng.choice(candidates, size=proto.step, replace=False))
    elif algorithm.endswith("_diversity"):
        ranking_start = time.perf_counter()
        order, _ = diverse_order(np.array(scores), embeddings)
        diversity_s = round(time.perf_counter() - ranking_start, 4)
        picks = [candidates[k] for k in order[: proto.step].tolist()]
    else:
        picks = ranked[: proto.step]  # top scores, ties: lower id first
    by_id = dict(zip(candidates, scores))
    return {
        "picks": picks,
        "pick_scores": [round(by_id[i], 6) for i in picks],
        "score_name": scorer,
        "diversity_s": diversity_s,
        "mine_s": round(time.perf_counter() - start, 1),
    }


# --- jobs (run in the worker processes) ---------------------------------------------------------------


def init_worker() -> None:
    """One intra-op thread per process (the processes share the cores); quiet library logs."""
    import cv2
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def round0_job(proto: Protocol, data: dict, seed: int, work: str) -> dict:
    """Round 0 of a seed: a seeded random draw of ``proto.initial`` images, trained from random init."""
    rng = np.random.default_rng([seed, 1000])
    labelled = sorted(int(i) for i in rng.choice(np.arange(1, data["size"] + 1), size=proto.initial, replace=False))
    result = train_round(proto, data, labelled, Path(work) / f"seed{seed}" / "round0", seed, None, proto.round0_epochs)
    log(
        f"{data['kind']} seed {seed} round 0: AP50 {result['AP_50']:.3f} mAP {result['mAP']:.3f} ({result['train_s']}s)"
    )
    return result | {"labelled_ids": labelled}


def chain_job(proto: Protocol, data: dict, seed: int, algorithm: str, round0: dict, work: str) -> list[dict]:
    """Rounds 1..R of one (seed, algorithm): mine with the last model, label, fine-tune from it."""
    labelled, weights, rounds = list(round0["labelled_ids"]), round0["weights"], []
    for r in range(1, proto.rounds + 1):
        mined = mine_round(proto, data, weights, labelled, algorithm, seed, r)
        before, labelled = labelled, labelled + mined["picks"]
        work_dir = Path(work) / f"seed{seed}" / algorithm / f"round{r}"
        result = train_round(proto, data, labelled, work_dir, seed, weights, proto.epochs)
        weights = result["weights"]
        rounds.append(result | mined | {"labelled_before": before})
        log(
            f"{data['kind']} seed {seed} {algorithm} round {r}: {len(labelled)} labelled, AP50 {result['AP_50']:.3f} "
            f"mAP {result['mAP']:.3f} (mine {mined['mine_s']:.0f}s, train {result['train_s']:.0f}s)"
        )
    return rounds


def run_jobs(proto: Protocol, datas: dict[str, dict], work: str) -> tuple[dict, dict, list]:
    """Every round 0 first, each (pool, seed)'s chains as soon as its round 0 is done; load samples.
    Results by pool: ``round0[pool][seed]``, ``chains[pool][(seed, algorithm)]``."""
    round0: dict[str, dict[int, dict]] = {kind: {} for kind in datas}
    chains: dict[str, dict[tuple[int, str], list[dict]]] = {kind: {} for kind in datas}
    loads: list[list[float]] = []
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
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
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if values[1:] else 0.0,
    }


def composition(picks: list[int], before: list[int], meta: dict[int, dict], partners: dict[int, set[int]]) -> dict:
    """A round's picks: empty, copies, redundant (a near-duplicate of one labelled or picked in the same
    round), rare class, small, faint; objects; distinct scenes, and those no labelled image showed yet."""
    chosen, known = set(picks), set(before)
    scenes = {meta[i]["scene"] for i in picks}
    counts = dict.fromkeys(KINDS, 0) | {"objects": 0, "scenes": len(scenes)}
    counts["new_scenes"] = len(scenes - {meta[i]["scene"] for i in known})
    for image_id in picks:
        info = meta[image_id]
        counts["empty"] += info["empty"]
        counts["dup_copy"] += info["dup_of"] is not None
        counts["redundant"] += bool(partners[image_id] & (known | (chosen - {image_id})))
        for kind in ("rare", "small", "low_contrast", "objects"):
            counts[kind] += info[kind]
    return counts


def algorithm_rows(proto: Protocol, algorithm: str, round0: dict, chains: dict, meta: dict[int, dict]) -> list[dict]:
    """Per round: labelled count and fraction, AP_50 / mAP / AP_rare / AP_small per seed with mean and std,
    and the distinct scenes the labelled images show."""
    rows = []
    for r in range(proto.rounds + 1):
        per_seed = {s: round0[s] if r == 0 else chains[(s, algorithm)][r - 1] for s in proto.seeds}
        labelled = proto.initial + r * proto.step
        row = {"round": r, "labelled": labelled, "labelled_fraction": round(labelled / len(meta), 4)}
        for metric in ("AP_50", "mAP", "AP_rare", "AP_small"):
            values = {s: per_seed[s][metric] for s in proto.seeds}
            row[metric] = {"per_seed": values} | mean_std(list(values.values()))
        ids = {
            s: step["labelled_ids"] if r == 0 else step["labelled_before"] + step["picks"]
            for s, step in per_seed.items()
        }
        scenes = {s: len({meta[i]["scene"] for i in ids[s]}) for s in proto.seeds}
        row["labelled_scenes"] = {"per_seed": scenes} | mean_std(list(scenes.values()))
        row["train_s_mean"] = round(statistics.fmean(per_seed[s]["train_s"] for s in proto.seeds), 1)
        rows.append(row)
    return rows


def algorithm_picks(proto: Protocol, algorithm: str, chains: dict, meta: dict[int, dict]) -> dict:
    """Picked ids and scores per seed and round, and their composition (per seed and mean)."""
    partners = pool_partners(meta)
    picks: dict[int, dict] = {}
    comp = []
    for r in range(1, proto.rounds + 1):
        per_seed = {}
        for s in proto.seeds:
            step = chains[(s, algorithm)][r - 1]
            picks.setdefault(s, {})[r] = {"ids": step["picks"], step["score_name"] + "_scores": step["pick_scores"]}
            per_seed[s] = composition(step["picks"], step["labelled_before"], meta, partners)
        mean = {k: round(statistics.fmean(c[k] for c in per_seed.values()), 2) for k in per_seed[proto.seeds[0]]}
        comp.append({"round": r, "picked": proto.step, "mean": mean, "per_seed": per_seed})
    return {"picks": picks, "composition": comp}


def pool_stats(meta: dict[int, dict]) -> dict:
    """How many pool images are of each kind (what a random pick reproduces on average)."""
    counts = {k: sum(bool(m[k]) for m in meta.values()) for k in ("empty", "rare", "small", "low_contrast")}
    counts["dup_copy"] = sum(m["dup_of"] is not None for m in meta.values())
    counts["in_dup_pair"] = sum(bool(p) for p in pool_partners(meta).values())
    counts["scenes"] = len({m["scene"] for m in meta.values()})
    counts["objects"] = sum(m["objects"] for m in meta.values())
    return {"images": len(meta)} | counts


def final_against(
    rows: dict[str, list[dict]], alg: str, base: str, seeds: tuple[int, ...]
) -> tuple[dict, float, float]:
    """Final-round AP_50 of ``alg`` against ``base``: difference of means, the larger seed std, paired
    differences; and the difference and spread themselves."""
    final, other = rows[alg][-1]["AP_50"], rows[base][-1]["AP_50"]
    spread, diff = max(final["std"], other["std"]), final["mean"] - other["mean"]
    paired = mean_std([final["per_seed"][s] - other["per_seed"][s] for s in seeds])
    return {f"final_AP50_minus_{base}": round(diff, 4), "larger_seed_std": spread, "paired_diff": paired}, diff, spread


def verdict(rows: dict[str, list[dict]], proto: Protocol) -> dict:
    """Every algorithm against random."""
    out = {}
    for alg in [a for a in rows if a != "random"] if "random" in rows else []:
        numbers, diff, spread = final_against(rows, alg, "random", proto.seeds)
        out[alg] = numbers | {"beats_random_beyond_spread": diff > spread}
    return out


def diversity_verdict(rows: dict[str, list[dict]], proto: Protocol) -> dict:
    """Each ``<scorer>_diversity`` arm against its scorer alone (when both ran)."""
    out = {}
    for alg in rows:
        base = alg.removesuffix("_diversity")
        if base != alg and base in rows:
            numbers, diff, spread = final_against(rows, alg, base, proto.seeds)
            out[alg] = numbers | {"beats_beyond_spread": diff > spread, "within_spread": abs(diff) <= spread}
    return out


# --- pictures ----------------------------------------------------------------------------------------


def plot(reports: dict[str, dict], metrics: tuple[str, str], x_key: str, title: str, path: Path) -> None:
    """One row of two panels per pool: ``metrics`` against ``x_key``, one line per algorithm with a
    mean +- std band."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise SystemExit(f"plotting needs matplotlib: .venv/bin/pip install -e '.[bench]' ({err})") from None
    fig, axes = plt.subplots(len(reports), 2, figsize=(11, 4.2 * len(reports)), squeeze=False)
    for (kind, report), row in zip(reports.items(), axes):
        stats = report["pool_stats"]
        for ax, metric in zip(row, metrics):
            for alg, rows in report["results"].items():
                x = [r[x_key] for r in rows]
                mean, std = (np.array([r[metric][k] for r in rows]) for k in ("mean", "std"))
                ax.plot(x, mean, marker="o", label=alg)
                ax.fill_between(x, mean - std, mean + std, alpha=0.2)
            ax.set_xlabel(x_key.replace("_", " "))
            ax.set_title(f"{kind} pool ({stats['images']} images, {stats['scenes']} scenes): {metric}", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    seeds = len(next(iter(reports.values()))["protocol"]["seeds"])
    fig.suptitle(f"{title} (mean +- std over {seeds} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def picks_sheet(proto: Protocol, chains: dict, data: dict, arms: tuple[str, str], path: Path) -> None:
    """First seed, last round: the first 16 picks of each arm (in its order), GT boxes drawn, side by side."""
    import cv2

    from nanodet.pictures.charts import contact_sheet, letterbox, side_by_side

    boxes: dict[int, list] = {}
    for ann in json.loads(Path(data["pool"]["ann_path"]).read_text())["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    meta = load_meta(data["pool"])
    seed, partners = proto.seeds[0], pool_partners(meta)
    sheets = []
    for alg in arms:
        step = chains[(seed, alg)][-1]
        known = set(step["labelled_before"]) | set(step["picks"])
        tiles = []
        for image_id, score in list(zip(step["picks"], step["pick_scores"]))[:16]:
            image = cv2.imread(image_path(data, image_id))
            for x, y, w, h in boxes.get(image_id, []):
                cv2.rectangle(image, (round(x), round(y)), (round(x + w), round(y + h)), (0, 255, 0), 1)
            info = meta[image_id]
            flags = {"empty": info["empty"], "dup": partners[image_id] & known, "rare": info["rare"]}
            flags |= {"small": info["small"], "faint": info["low_contrast"]}
            kind = "+".join(name for name, flag in flags.items() if flag) or "obj"
            tiles.append((letterbox(image, 160, 160)[0], f"#{image_id} {score:.3f} {kind}"))
        sheets.append(contact_sheet([(f"{alg} picks", tiles)], columns=4, tile=160))
    height = max(s.shape[0] for s in sheets)
    sheets = [np.vstack([s, np.full((height - s.shape[0], s.shape[1], 3), 255, np.uint8)]) for s in sheets]
    titles = tuple(f"{alg}, seed {seed}, round {proto.rounds} (score of its model)" for alg in arms)
    cv2.imwrite(str(path), side_by_side(*sheets, titles=titles))


# --- main --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (2 seeds, smaller pool, fewer epochs)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3; quick 2)")
    parser.add_argument("--rounds", type=int, default=3, help="mining rounds after round 0")
    for name, (full, quick) in SIZES.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {full}; quick {quick}"
        )
    parser.add_argument("--algorithms", default=DEFAULT_ALGORITHMS, help=f"comma list of {', '.join(ALGORITHMS)}")
    parser.add_argument("--pool-seed", type=int, default=2024, help="seed of the pool and test images")
    parser.add_argument("--workers", type=int, default=2, help="training processes in parallel (1 thread each)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work-dir", type=Path, help="keep data and models here; rounds trained there are reused")
    parser.add_argument(
        "--diversity", action="store_true", help=f"--pools plain,bursty --algorithms {DIVERSITY_ALGORITHMS}"
    )
    parser.add_argument("--pools", default=None, help="comma list of plain, bursty (default plain)")
    args = parser.parse_args()
    if args.diversity:
        args.pools = args.pools or "plain,bursty"
        if args.algorithms == DEFAULT_ALGORITHMS:
            args.algorithms = DIVERSITY_ALGORITHMS
    args.pools = args.pools or "plain"
    algorithms, pools = args.algorithms.split(","), args.pools.split(",")
    if set(algorithms) - set(ALGORITHMS):
        parser.error(f"unknown algorithms {sorted(set(algorithms) - set(ALGORITHMS))}; choose from {ALGORITHMS}")
    if "random" not in algorithms or "aldd" not in algorithms:
        parser.error("--algorithms needs aldd and random (the comparison and the picture)")
    if set(pools) - set(POOLS) or len(set(pools)) != len(pools):
        parser.error(f"--pools: a comma list of distinct names from {', '.join(POOLS)}, not {args.pools!r}")
    sizes = {name: getattr(args, name) or pair[args.quick] for name, pair in SIZES.items()}
    args.protocol = Protocol(
        seeds=tuple(range(args.seeds or (2 if args.quick else 3))),
        algorithms=tuple(algorithms),
        rounds=args.rounds,
        pool_seed=args.pool_seed,
        workers=args.workers,
        pools=tuple(pools),
        **sizes,
    )
    return args


def build_report(proto: Protocol, data: dict, round0: dict, chains: dict, wall: dict) -> dict:
    """The JSON result: recipe, protocol, metrics per algorithm/round/seed, picks and their composition."""
    meta = load_meta(data["pool"])
    rows = {alg: algorithm_rows(proto, alg, round0, chains, meta) for alg in proto.algorithms}
    picks = {alg: algorithm_picks(proto, alg, chains, meta) for alg in proto.algorithms}
    recipe = proto.recipe.as_dict() | {"pool_seed": proto.pool_seed, "pool_fixed_across_seeds": True}
    recipe["test_has_duplicates"] = False
    if data["kind"] == "bursty":
        recipe |= {"bursts_of_frames": list(proto.burst_frames), "scenes": proto.bursty_scenes}
        recipe["scene_seed_offset"] = BURSTY_SEED_OFFSET
    protocol = {k: v for k, v in asdict(proto).items() if k != "recipe"} | {
        "initial_labelled": proto.initial,
        "added_per_round": proto.step,
        "detach_epoch": "epochs // 2",
        "eta_min": proto.lr / 20,
        "evaluation": "EMA model at the end of each round on the whole test set",
    }
    return {
        "benchmark": "active_learning_synthetic_pool",
        "pool": data["kind"],
        "model": "nanodet-plus-m (config/nanodet-plus-m_320.yml re-classed), random init at round 0",
        "pool_recipe": recipe,
        "pool_stats": pool_stats(meta),
        "test_stats": pool_stats(load_meta(data["test"])),
        "protocol": protocol,
        "results": rows,
        "verdict": verdict(rows, proto),
        "diversity_verdict": diversity_verdict(rows, proto),
        "round0": {s: {k: round0[s][k] for k in ("labelled_ids", "per_class_AP")} for s in proto.seeds},
        "picks": {alg: p["picks"] for alg, p in picks.items()},
        "pick_composition": {alg: p["composition"] for alg, p in picks.items()},
        "final_per_class_AP": {
            alg: {s: chains[(s, alg)][-1]["per_class_AP"] for s in proto.seeds} for alg in proto.algorithms
        },
        "wall_s": wall,
    }


def main() -> None:
    args = parse_args()
    proto = args.protocol
    started = time.perf_counter()
    host = host_info() | {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    name = "active_learning_diversity" if args.diversity else "active_learning"
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-al-") as tmp:
        root = args.work_dir or Path(tmp)
        datas = {kind: prepare_data(root / "data", proto, kind) for kind in proto.pools}
        wall = {"data": round(time.perf_counter() - started, 1)}
        round0, chains, loads = run_jobs(proto, datas, str(root / "runs"))
        wall["jobs"] = round(time.perf_counter() - started - wall["data"], 1)
        reports = {kind: build_report(proto, datas[kind], round0[kind], chains[kind], wall) for kind in proto.pools}
        arms = ("aldd", "aldd_diversity") if "aldd_diversity" in proto.algorithms else ("aldd", "random")
        for kind, data in datas.items():
            picks_name = f"{name}_picks{'' if len(datas) == 1 else '_' + kind}{suffix}.png"
            picks_sheet(proto, chains[kind], data, arms, args.out / picks_name)
    host |= {"loadavg_s_1_5_15": loads, "note": "2-core machine shared with other work; timings are contended"}
    wall["total"] = round(time.perf_counter() - started, 1)
    if len(reports) == 1:
        report = next(iter(reports.values())) | {"host": host}
    else:
        report = {"benchmark": "active_learning_diversity", "pools": reports, "wall_s": wall, "host": host}
    text = json.dumps(report, indent=1)
    (args.out / f"{name}{suffix}.json").write_text(text + "\n")
    if len(reports) == 1 and not args.diversity:
        how = (("AP_50", "mAP"), "labelled_fraction", "NanoDet-Plus-m active learning")
    else:
        how = (("AP_50", "labelled_scenes"), "labelled", "Mining with and without the diversity ranking")
    plot(reports, *how, args.out / f"{name}{suffix}.png")
    print(text)


if __name__ == "__main__":
    main()
