"""Active learning: do ALDD picks train a better next NanoDet-Plus model than random picks (the baseline)?

    .venv/bin/python bench/active_learning.py [--quick] [--diversity] [--seeds 3] [--rounds 3] [--epochs 6]
        [--round0-epochs 36] [--pool 400] [--test 160] [--bursty-scenes 200] [--workers 2] [--out DIR] [--work-dir DIR]
        [--pretrain-images N --pretrain-epochs 24] [--pools plain,bursty] [--algorithms aldd,random]

Round 0 labels a random 20 % of a generated pool (``bench._common.PoolRecipe``); each round labels 10 % more as
each algorithm picks, fine-tunes and tests; ``--diversity`` adds the diversity arms and a bursty pool. Round 0
trains from random init, or with ``--pretrain-images N`` fine-tunes a model trained first on N images of a
disjoint pool (a start that already knows the shapes, as a pretrained checkpoint does). Writes
``active_learning[_diversity][_pretrained][_quick].json``, its plot and the picks (``*_picks*.png``) to ``--out``.
"""

import argparse
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PoolRecipe, host_info, log, make_pool, synthetic_config  # noqa: E402

KINDS = ("empty", "dup_copy", "redundant", "rare", "small", "low_contrast")
BURSTY_SEED_OFFSET = 104729
PRETRAIN_SEED_OFFSET = 15485863
# without and with --diversity: algorithms, pools, the arms pictured, the plot's metrics, x axis and title
MODES = [
    (("aldd", "entropy", "random"), ("plain",), ("aldd", "random"))
    + (("AP_50", "mAP"), "labelled_fraction", "NanoDet-Plus-m active learning"),
    (("random", "aldd", "aldd_diversity", "entropy_diversity"), ("plain", "bursty"), ("aldd", "aldd_diversity"))
    + (("AP_50", "labelled_scenes"), "labelled", "Mining with and without the diversity ranking"),
]
# (default, --quick)
SIZES = dict(epochs=(6, 4), round0_epochs=(36, 16), pool=(400, 200), test=(160, 80), bursty_scenes=(200, 100))


@dataclass(frozen=True)
class Protocol:
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
    pretrain_images: int = 0  # 0: round 0 from random init
    pretrain_epochs: int = 24
    pretrained: str | None = None  # the weights round 0 starts from (set once the pretraining ran)
    recipe: PoolRecipe = field(default_factory=PoolRecipe)

    @property
    def initial(self) -> int:  # the same counts on the bursty pool
        return round(self.pool * self.initial_fraction)

    @property
    def step(self) -> int:
        return round(self.pool * self.step_fraction)


def prepare_data(root: Path, proto: Protocol, kind: str) -> dict:
    seed = proto.pool_seed
    if kind == "bursty":
        name, seed = f"bursty-{proto.bursty_scenes}-s{seed + BURSTY_SEED_OFFSET}", seed + BURSTY_SEED_OFFSET
        pool = make_pool(root, name, proto.recipe, proto.bursty_scenes, seed, bursts=proto.burst_frames)
    else:
        pool = make_pool(root, f"pool-{proto.pool}-s{seed}", proto.recipe, proto.pool, seed)
    name = f"test-{proto.test}-s{proto.pool_seed}"
    test = make_pool(root, name, proto.recipe, proto.test, proto.pool_seed + 7919, with_dups=False)
    meta = [{int(k): v for k, v in json.loads(Path(p["meta_path"]).read_text()).items()} for p in (pool, test)]
    return {"pool": pool, "test": test, "root": str(root), "kind": kind, "meta": meta[0], "test_meta": meta[1]}


def pretrain(proto: Protocol, root: Path, test: dict) -> str:
    """Train once on ``proto.pretrain_images`` images of a pool disjoint from the others (no near-duplicates),
    from random init, with this process's threads; the best weights (reused when ``root`` holds the same run)."""
    seed = proto.pool_seed + PRETRAIN_SEED_OFFSET
    pool = make_pool(root / "data", f"pretrain-{proto.pretrain_images}-s{seed}", proto.recipe, proto.pretrain_images,
                     seed, with_dups=False)  # fmt: skip
    data = {"pool": pool, "test": test, "kind": "pretrain"}
    ids = [im["id"] for im in json.loads(Path(pool["ann_path"]).read_text())["images"]]
    result = train_round(proto, data, ids, root / "pretrain", 0, None, proto.pretrain_epochs)
    log(f"pretrained on {len(ids)} images, {proto.pretrain_epochs} epochs: AP50 {result['AP_50']:.3f} "
        f"mAP {result['mAP']:.3f} ({result['train_s']:.0f} s)")  # fmt: skip
    return result["weights"]


def pool_partners(meta: dict[int, dict]) -> dict[int, set[int]]:
    """Each image's near-duplicates: the other images of its scene."""
    scenes: dict[int, set[int]] = {}
    for image_id, info in meta.items():
        scenes.setdefault(info["scene"], set()).add(image_id)
    return {image_id: scenes[info["scene"]] - {image_id} for image_id, info in meta.items()}


def image_path(data: dict, image_id: int) -> str:
    return str(Path(data["pool"]["img_path"]) / f"{image_id - 1:05d}.jpg")  # make_pool: id = index + 1


def round_config(proto: Protocol, data: dict, train_json: str, work_dir: Path, load_model: str | None, epochs: int):
    schedule = {"load_model": load_model, "optimizer": {"lr": proto.lr}, "total_epochs": epochs}
    schedule |= {"warmup": {"steps": proto.warmup_steps, "ratio": 0.1}, "val_intervals": epochs}
    schedule["lr_schedule"] = {"name": "CosineAnnealingLR", "T_max": epochs, "eta_min": proto.lr / 20}
    overrides = {"model": {"arch": {"detach_epoch": epochs // 2, "backbone": {"pretrain": False}}}}
    train_set, test = {"img_path": data["pool"]["img_path"], "ann_path": train_json}, data["test"]
    sets, size = (train_set, {k: test[k] for k in train_set}), (proto.input_size, proto.input_size)
    args = (size, proto.batch, 0, work_dir, overrides | {"schedule": schedule}, proto.recipe.classes)
    return synthetic_config("nanodet-plus-m_320.yml", *sets, *args)


def train_round(proto: Protocol, data: dict, labelled: list[int], work_dir: Path, seed: int, load_model, epochs: int):
    """Train one round on the labelled images (reused when ``work_dir`` holds the same round); test metrics."""
    from nanodet.engine.run import train

    skip = ("seeds", "algorithms", "workers", "pools", "pretrained")  # what does not change a round's training
    protocol = {k: v for k, v in asdict(proto).items() if k not in skip}
    key = {"labelled": labelled, "seed": seed, "load_model": load_model, "epochs": epochs, "protocol": protocol}
    key, record = json.loads(json.dumps(key | {"pool": data["kind"]})), work_dir / "round.json"
    if record.is_file() and (work_dir / "nanodet_model_best.pth").is_file():
        saved = json.loads(record.read_text())
        if saved["key"] == key:
            return saved["result"] | {"cached": True}
    coco, keep = json.loads(Path(data["pool"]["ann_path"]).read_text()), set(labelled)
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "labelled.json").write_text(json.dumps(coco))
    cfg = round_config(proto, data, str(work_dir / "labelled.json"), work_dir, load_model, epochs)
    start = time.perf_counter()
    state = train(cfg, work_dir=work_dir, seed=seed, progress=False, device="cpu")
    metrics, per_class = state.evaluations[-1].metrics, state.evaluations[-1].per_class_AP
    rounded = lambda v: None if v is None else round(v, 4)  # noqa: E731 - None: a metric COCO leaves undefined
    result = {"labelled": len(labelled), "AP_50": round(metrics["AP_50"], 4), "mAP": round(metrics["mAP"], 4)}
    result |= {"AP_small": rounded(metrics.get("AP_small")), "AP_rare": rounded(per_class.get(proto.recipe.rare_class))}
    result |= {"per_class_AP": {k: round(v, 4) for k, v in per_class.items()}, "steps": state.step}
    result |= {"train_s": round(time.perf_counter() - start, 1), "weights": str(work_dir / "nanodet_model_best.pth")}
    record.write_text(json.dumps({"key": key, "result": result}))
    return result


def mine_round(proto: Protocol, data: dict, weights: str, labelled: list[int], algorithm: str, seed: int, r: int):
    """Score the unlabelled pool as the mining task does and choose the next ``proto.step`` images."""
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches
    from nanodet.inference.predictor import Predictor
    from nanodet.mining.diversity import diverse_order, image_embeddings
    from nanodet.mining.uncertainty import uncertainty_scores

    start = time.perf_counter()
    candidates = sorted(set(data["meta"]) - set(labelled))
    scorer = "entropy" if algorithm.startswith("entropy") else "aldd"  # random: ALDD scores kept for the record
    cfg = round_config(proto, data, data["pool"]["ann_path"], Path(data["root"]), None, proto.epochs)
    predictor = Predictor(cfg, weights)
    diverse = algorithm.endswith("_diversity")
    paths = [image_path(data, i) for i in candidates + (labelled if diverse else [])]  # labelled: seed the groups
    dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
    scores, embeddings, diversity_s = [], [], None
    for batch in inference_batches(dataset, 32, workers=0):
        if batch.failed:
            raise RuntimeError(f"unreadable pool images: {batch.failed}")
        levels = predictor.forward_levels(batch.images)
        hw = (batch.images.shape[2], batch.images.shape[3])
        scores += uncertainty_scores(scorer, levels, predictor.num_classes, hw).tolist()
        embeddings.append(image_embeddings(levels, predictor.num_classes))
    scores, embeddings = scores[: len(candidates)], np.concatenate(embeddings)
    if algorithm == "random":
        rng = np.random.default_rng([seed, r, 77])
        picks = sorted(int(i) for i in rng.choice(candidates, size=proto.step, replace=False))
    elif diverse:  # as the mining task ranks with the labelled_embeddings file its model's training wrote
        ranking_start = time.perf_counter()
        order, _ = diverse_order(np.array(scores), embeddings[: len(candidates)], embeddings[len(candidates) :])
        diversity_s = round(time.perf_counter() - ranking_start, 4)
        picks = [candidates[k] for k in order[: proto.step].tolist()]
    else:  # top scores, ties: lower id first
        picks = [candidates[k] for k in sorted(range(len(candidates)), key=lambda k: (-scores[k], candidates[k]))]
        picks = picks[: proto.step]
    by_id = dict(zip(candidates, scores))
    out = {"picks": picks, "pick_scores": [round(by_id[i], 6) for i in picks], "score_name": scorer}
    return out | {"diversity_s": diversity_s, "mine_s": round(time.perf_counter() - start, 1)}


def init_worker() -> None:
    import cv2
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def chain_job(proto: Protocol, data: dict, seed: int, algorithm: str | None, round0: dict | None, work: str):
    """Round 0 of a seed (``algorithm`` None: a seeded random draw, trained from ``proto.pretrained`` or random
    init), or rounds 1..R of one (seed, algorithm): mine with the last model, label, fine-tune from it."""
    if algorithm is None:
        rng = np.random.default_rng([seed, 1000])
        labelled = sorted(int(i) for i in rng.choice(np.arange(1, len(data["meta"]) + 1), proto.initial, replace=False))
        work_dir, start = Path(work) / f"seed{seed}/round0", proto.pretrained
        result = train_round(proto, data, labelled, work_dir, seed, start, proto.round0_epochs)
        log(f"{data['kind']} seed {seed} round 0: AP50 {result['AP_50']:.3f} mAP {result['mAP']:.3f}")
        return result | {"labelled_ids": labelled}
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
    """Every round 0 first, each (pool, seed)'s chains once its round 0 is done: ``round0[pool][seed]``,
    ``chains[pool][(seed, algorithm)]`` and load average samples."""
    round0, chains, loads = {kind: {} for kind in datas}, {kind: {} for kind in datas}, []
    start, context = time.perf_counter(), multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(proto.workers, mp_context=context, initializer=init_worker) as pool:
        pending = {
            pool.submit(chain_job, proto, data, s, None, None, str(Path(work) / kind)): (kind, s, None)
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


def mean_std(values: list[float | None]) -> dict:
    v = [x for x in values if x is not None]
    std = (round(statistics.stdev(v), 4) if v[1:] else 0.0) if v else None
    return {"mean": round(statistics.fmean(v), 4) if v else None, "std": std}


def summarize(proto: Protocol, alg: str, round0: dict, chains: dict, meta: dict[int, dict]) -> tuple[list, dict, list]:
    """Per round: each metric and the scenes labelled (per seed, mean, std); the picks and their composition
    (redundant: a near-duplicate of one labelled or picked in the same round)."""
    partners, rows, picks, comp = pool_partners(meta), [], {}, []
    for r in range(proto.rounds + 1):
        per_seed = {s: round0[s] if r == 0 else chains[(s, alg)][r - 1] for s in proto.seeds}
        labelled = proto.initial + r * proto.step
        row = {"round": r, "labelled": labelled, "labelled_fraction": round(labelled / len(meta), 4)}
        for metric in ("AP_50", "mAP", "AP_rare", "AP_small"):
            values = {s: per_seed[s][metric] for s in proto.seeds}
            row[metric] = {"per_seed": values} | mean_std(list(values.values()))
        ids = {s: step.get("labelled_ids") or step["labelled_before"] + step["picks"] for s, step in per_seed.items()}
        scenes = {s: len({meta[i]["scene"] for i in ids[s]}) for s in proto.seeds}
        row["labelled_scenes"] = {"per_seed": scenes} | mean_std(list(scenes.values()))
        rows.append(row | {"train_s_mean": round(statistics.fmean(p["train_s"] for p in per_seed.values()), 1)})
        if r == 0:
            continue
        counts = {}
        for s, step in per_seed.items():
            picks.setdefault(s, {})[r] = {"ids": step["picks"], step["score_name"] + "_scores": step["pick_scores"]}
            chosen, known = set(step["picks"]), set(step["labelled_before"])
            picked_scenes = {meta[i]["scene"] for i in chosen}
            c = counts[s] = dict.fromkeys(KINDS, 0) | {"objects": 0, "scenes": len(picked_scenes)}
            c["new_scenes"] = len(picked_scenes - {meta[i]["scene"] for i in known})
            for i in step["picks"]:
                c["empty"] += meta[i]["empty"]
                c["dup_copy"] += meta[i]["dup_of"] is not None
                c["redundant"] += bool(partners[i] & (known | (chosen - {i})))
                for kind in ("rare", "small", "low_contrast", "objects"):
                    c[kind] += meta[i][kind]
        mean = {k: round(statistics.fmean(c[k] for c in counts.values()), 2) for k in counts[proto.seeds[0]]}
        comp.append({"round": r, "picked": proto.step, "mean": mean, "per_seed": counts})
    return rows, picks, comp


def pool_stats(meta: dict[int, dict]) -> dict:
    counts = {k: sum(bool(m[k]) for m in meta.values()) for k in ("empty", "rare", "small", "low_contrast")}
    counts["dup_copy"] = sum(m["dup_of"] is not None for m in meta.values())
    counts["in_dup_pair"] = sum(bool(p) for p in pool_partners(meta).values())
    counts["scenes"] = len({m["scene"] for m in meta.values()})
    return {"images": len(meta)} | counts | {"objects": sum(m["objects"] for m in meta.values())}


def verdicts(rows: dict[str, list[dict]], seeds: tuple[int, ...]) -> tuple[dict, dict]:
    """Final AP_50 of every algorithm against random (``verdict``), of each ``<scorer>_diversity`` against its
    scorer alone (``diversity_verdict``)."""
    out: tuple[dict, dict] = ({}, {})
    pairs = [(0, a, "random") for a in rows if a != "random" and "random" in rows]
    pairs += [(1, a, a.removesuffix("_diversity")) for a in rows if a.endswith("_diversity")]
    for which, alg, base in [p for p in pairs if p[2] in rows]:
        final, other = rows[alg][-1]["AP_50"], rows[base][-1]["AP_50"]
        spread, diff = max(final["std"], other["std"]), final["mean"] - other["mean"]
        paired = mean_std([final["per_seed"][s] - other["per_seed"][s] for s in seeds])
        numbers = {f"final_AP50_minus_{base}": round(diff, 4), "larger_seed_std": spread, "paired_diff": paired}
        flags = [{"beats_random_beyond_spread": diff > spread}]
        flags.append({"beats_beyond_spread": diff > spread, "within_spread": abs(diff) <= spread})
        out[which][alg] = numbers | flags[which]
    return out


def build_report(proto: Protocol, data: dict, round0: dict, chains: dict, wall: dict) -> dict:
    summaries = {alg: summarize(proto, alg, round0, chains, data["meta"]) for alg in proto.algorithms}
    rows = {alg: summary[0] for alg, summary in summaries.items()}
    recipe = proto.recipe.as_dict() | {"pool_seed": proto.pool_seed, "pool_fixed_across_seeds": True}
    recipe["test_has_duplicates"] = False
    if data["kind"] == "bursty":
        recipe |= {"bursts_of_frames": list(proto.burst_frames), "scenes": proto.bursty_scenes}
        recipe["scene_seed_offset"] = BURSTY_SEED_OFFSET
    protocol = {k: v for k, v in asdict(proto).items() if k not in ("recipe", "pretrained")}
    protocol |= {"initial_labelled": proto.initial, "added_per_round": proto.step, "detach_epoch": "epochs // 2"}
    protocol |= {"eta_min": proto.lr / 20, "evaluation": "EMA model at the end of each round on the whole test set"}
    verdict, diversity_verdict = verdicts(rows, proto.seeds)
    report = {"benchmark": "active_learning_synthetic_pool", "pool": data["kind"]}
    start = "random init" if proto.pretrained is None else f"pretrained on {proto.pretrain_images} disjoint images"
    report["model"] = f"nanodet-plus-m (config/nanodet-plus-m_320.yml re-classed), {start} at round 0"
    report |= {
        "pool_recipe": recipe,
        "pool_stats": pool_stats(data["meta"]),
        "test_stats": pool_stats(data["test_meta"]),
    }
    report |= {"protocol": protocol, "results": rows, "verdict": verdict, "diversity_verdict": diversity_verdict}
    report["round0"] = {s: {k: round0[s][k] for k in ("labelled_ids", "per_class_AP")} for s in proto.seeds}
    report["picks"] = {alg: summary[1] for alg, summary in summaries.items()}
    report["pick_composition"] = {alg: summary[2] for alg, summary in summaries.items()}
    finals = {alg: {s: chains[(s, alg)][-1]["per_class_AP"] for s in proto.seeds} for alg in proto.algorithms}
    return report | {"final_per_class_AP": finals, "wall_s": wall}


def plot(reports: dict[str, dict], metrics: tuple[str, str], x_key: str, title: str, path: Path) -> None:
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
    """First seed, last round: the first 16 picks of each arm side by side."""
    import cv2

    from nanodet.pictures.charts import contact_sheet, letterbox, side_by_side

    boxes: dict[int, list] = {}
    for ann in json.loads(Path(data["pool"]["ann_path"]).read_text())["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    seed, meta, sheets = proto.seeds[0], data["meta"], []
    partners = pool_partners(meta)
    for alg in arms:
        step, tiles = chains[(seed, alg)][-1], []
        known = set(step["labelled_before"]) | set(step["picks"])
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
    titles = tuple(f"{alg}, seed {seed}, round {proto.rounds} (score of its model)" for alg in arms)
    cv2.imwrite(str(path), side_by_side(*sheets, titles=titles))


def subset(chosen: str | None, offered: tuple[str, ...]) -> tuple[str, ...]:
    """The names of a comma-separated ``--pools`` / ``--algorithms`` value, in ``offered``'s order (None: all)."""
    names = offered if chosen is None else [name.strip() for name in chosen.split(",") if name.strip()]
    if unknown := sorted(set(names) - set(offered)):
        raise SystemExit(f"unknown {unknown}: choose from {', '.join(offered)}")
    return tuple(name for name in offered if name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (2 seeds, smaller pool, fewer epochs)")
    parser.add_argument("--diversity", action="store_true", help="the arms of issue 32 on a plain and a bursty pool")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3; quick 2)")
    parser.add_argument("--rounds", type=int, default=3, help="mining rounds after round 0")
    for name, (full, quick) in SIZES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {full}; quick {quick}")
    parser.add_argument("--pretrain-images", type=int, default=0, help="round 0 starts from a model trained on "
                        "this many images of a disjoint pool (default 0: from random init)")  # fmt: skip
    parser.add_argument("--pretrain-epochs", type=int, default=24, help="epochs of that pretraining")
    parser.add_argument("--pools", help="comma-separated subset of the mode's pools")
    parser.add_argument("--algorithms", help="comma-separated subset of the mode's algorithms")
    parser.add_argument("--workers", type=int, default=2, help="training processes in parallel (1 thread each)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work-dir", type=Path, help="keep data and models here; rounds trained there are reused")
    args = parser.parse_args()
    algorithms, pools, arms, *how = MODES[args.diversity]
    algorithms, pools = subset(args.algorithms, algorithms), subset(args.pools, pools)
    arms = tuple(a for a in arms if a in algorithms)
    seeds = tuple(range(args.seeds or (2 if args.quick else 3)))
    sizes = {name: getattr(args, name) or pair[args.quick] for name, pair in SIZES.items()}
    pretraining = {"pretrain_images": args.pretrain_images, "pretrain_epochs": args.pretrain_epochs}
    proto = Protocol(seeds, algorithms, args.rounds, workers=args.workers, pools=pools, **sizes, **pretraining)
    started = time.perf_counter()
    suffix = ("_pretrained" if args.pretrain_images else "") + ("_quick" if args.quick else "")
    host = host_info() | {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "active_learning_diversity" if args.diversity else "active_learning"
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-al-") as tmp:
        root = args.work_dir or Path(tmp)
        datas = {kind: prepare_data(root / "data", proto, kind) for kind in proto.pools}
        wall = {"data": round(time.perf_counter() - started, 1)}
        if proto.pretrain_images:
            proto = replace(proto, pretrained=pretrain(proto, root, next(iter(datas.values()))["test"]))
            wall["pretrain"] = round(time.perf_counter() - started - wall["data"], 1)
        round0, chains, loads = run_jobs(proto, datas, str(root / "runs"))
        wall["jobs"] = round(time.perf_counter() - started - sum(wall.values()), 1)
        reports = {kind: build_report(proto, datas[kind], round0[kind], chains[kind], wall) for kind in proto.pools}
        for kind, data in datas.items() if arms else ():  # arms: the pictured algorithms that ran
            picks_name = f"{name}_picks{'_' + kind if args.diversity else ''}{suffix}.png"
            picks_sheet(proto, chains[kind], data, arms, args.out / picks_name)
    host |= {"loadavg_s_1_5_15": loads, "note": "2-core machine shared with other work; timings are contended"}
    wall["total"] = round(time.perf_counter() - started, 1)
    report = {"benchmark": "active_learning_diversity", "pools": reports, "wall_s": wall} if args.diversity else {}
    report = (report or next(iter(reports.values()))) | {"host": host}
    text = json.dumps(report, indent=1)
    (args.out / f"{name}{suffix}.json").write_text(text + "\n")
    plot(reports, *how, args.out / f"{name}{suffix}.png")
    print(text)


if __name__ == "__main__":
    main()
