"""What ``mining_diversity`` costs: a 10k-candidate mining task with the switch off and on, the
memory and time of the ranking for 100k candidates, and how well the embedding separates frames
of one scene from other scenes.

    .venv/bin/python bench/mining_diversity.py [--cost] [--memory] [--separation --weights W]
        [--candidates 10000] [--input-size 128] [--repeats 2] [--large 100000]
        [--out bench/results/mining_diversity.json]

``--cost`` (10k): the same workspace (``--candidates`` 96x72 JPEG shapes, a model with fixed
random weights that score like a trained one, ``bench._common.random_detector``) through start.py
as an ALDD mining task, one process, the switch off and on alternately ``--repeats`` times. Per
run: the whole process's wall time, the batch loop's (forward, scores and, when on, the
embeddings) and the re-ranking's (from the task's log); a first run, not counted, exports the
model's graph into the export cache, as a stage's own export would be found. The extra cost is on minus off (best of
the repeats), beside the off task's time. Small images and a small input make the forward cheap,
so the share is the larger it can be.

``--memory`` (100k, each case in a fresh process): ``executor.predict.CandidateResults`` for
``--large`` candidates with their index paths, filled with scores (and, on, embeddings: bursts of
8 near-copies of 12.5k scenes, plus as many distinct candidates as the ranking has room for
leaders), then ranked as the task ranks them. Peak RSS (VmHWM) of each process, and the ranking's
seconds.

``--separation --weights W``: a bursty pool of its own (60 scenes, 6-10 frames each, seed 555:
not the active-learning benchmark's pool) through a model from ``bench/active_learning.py
--work-dir`` (its round-0 ``nanodet_model_best.pth``): the cosine similarity of the centred
embeddings for pairs of frames of one scene and for pairs of different scenes, and the share of
each at the thresholds around ``SIMILAR``.

Prints one JSON object and writes it to ``--out`` (cases not run are kept from the file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import host_info, log  # noqa: E402

RATE = re.compile(r"rank 0: (\d+) images in ([\d.]+) s")
RERANK = re.compile(r"mining diversity: (\d+) candidates re-ranked in ([\d.]+) s")
CLASSES = ["circle", "square", "triangle"]


# --- cost: a 10k mining task, off and on ---------------------------------------------------------


def prepare_task(root: Path, candidates: int, input_size: int, batch: int) -> Path:
    """A mining workspace of ``candidates`` small JPEGs and a random-weight model that scores like a trained one."""
    import cv2
    import numpy as np
    import yaml

    from bench._common import random_detector
    from executor.workspace import write_env
    from nanodet.config import load_config, save_config
    from nanodet.data.synthetic import synthetic_image
    from nanodet.weights.checkpoint import save_pth

    in_dir = root / "in"
    models = in_dir / "models"
    models.mkdir(parents=True)
    cfg = load_config(ROOT / "config" / "nanodet-plus-m_320.yml").with_classes(CLASSES)
    size = [input_size, input_size]
    cfg = cfg.merged({"data": {"train": {"input_size": size}, "val": {"input_size": size}}})
    save_pth(random_detector(cfg, seed=0, candidate_rate=0.01), models / "nanodet_model_best.pth", inference_only=True)
    save_config(cfg, models / "train_cfg.yml")
    rows = []
    for k in range(candidates):
        rng = np.random.default_rng([11, k])
        image, _, _ = synthetic_image(rng, size=(96, 72), class_names=CLASSES, max_objects=3, min_size=16, max_size=48)
        name = in_dir / "assets" / f"{k % 256:02x}" / f"cand-{k:06d}.jpg"
        name.parent.mkdir(parents=True, exist_ok=True)
        name.write_bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        rows.append("/in/" + str(name.relative_to(in_dir)))
    (in_dir / "candidate-index.tsv").write_text("".join(f"{r}\n" for r in rows))
    write_env(in_dir, mining=True, infer=False)
    config = {
        "gpu_count": 0,
        "model_params_path": ["nanodet_model_best.pth", "train_cfg.yml"],
        "mining_algorithm": "aldd",
        "batch_size_per_gpu": batch,
        "workers_per_gpu": 1,
        "mining_contact_sheet": False,
    }
    (in_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return in_dir


def run_mining(in_dir: Path, out: Path, diversity: bool) -> dict:
    """One mining task through start.py: wall, batch loop and re-ranking seconds."""
    import yaml

    cfg = yaml.safe_load((in_dir / "config.yaml").read_text())
    cfg["mining_diversity"] = diversity
    (in_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "start.py"), "--in", str(in_dir), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(text[-3000:])
    loop, rerank = RATE.search(text), RERANK.search(text)
    return {
        "diversity": diversity,
        "wall_s": round(wall, 2),
        "batch_loop_s": float(loop.group(2)) if loop else None,
        "rerank_s": float(rerank.group(2)) if rerank else 0.0,
    }


def measure_cost(candidates: int, input_size: int, batch: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mining-diversity-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        in_dir = prepare_task(root, candidates, input_size, batch)
        log(f"{candidates} candidates ready in {time.perf_counter() - start:.0f} s")
        warm = run_mining(in_dir, root / "warm-up", False)  # exports the model's graph once (the export cache)
        log(f"warm-up {json.dumps(warm)}")
        runs = []
        for r in range(repeats):
            for diversity in (False, True):
                run = run_mining(in_dir, root / f"out-{r}-{int(diversity)}", diversity)
                log(json.dumps(run))
                runs.append(run)
        split = embedding_share(in_dir, batch)
        same = (root / "out-0-0" / "result.tsv").read_text() == (
            root / f"out-{repeats - 1}-0" / "result.tsv"
        ).read_text()
    best = {
        flag: {k: min(r[k] for r in runs if r["diversity"] == flag) for k in ("wall_s", "batch_loop_s")}
        for flag in (False, True)
    }
    rerank = min(r["rerank_s"] for r in runs if r["diversity"])
    extra = best[True]["wall_s"] - best[False]["wall_s"]
    return {
        "task": "ALDD mining through start.py, CPU, 1 process, workers_per_gpu 1",
        "candidates": candidates,
        "images": "96x72 JPEG shapes",
        "input_size": input_size,
        "batch_size_per_gpu": batch,
        "repeats": repeats,
        "runs": runs,
        "best_off": best[False],
        "best_on": best[True],
        "rerank_s_best": rerank,
        "extra_wall_s": round(extra, 2),
        "extra_share_of_off_task": round(extra / best[False]["wall_s"], 4),
        "extra_batch_loop_share": round(
            (best[True]["batch_loop_s"] - best[False]["batch_loop_s"]) / best[False]["wall_s"], 4
        ),
        "rerank_share_of_off_task": round(rerank / best[False]["wall_s"], 4),
        "embeddings_in_process": split
        | {
            "embeddings_s_for_all_candidates": round(split["embeddings_ms_per_image"] * candidates / 1000, 2),
            "embeddings_share_of_off_task": round(
                split["embeddings_ms_per_image"] * candidates / 1000 / best[False]["wall_s"], 4
            ),
        },
        "off_runs_identical": same,
        "note": "best of the repeats; on and off alternate on the same workspace, so load drifts hit both",
    }


def embedding_share(in_dir: Path, batch: int, repeats: int = 20) -> dict:
    """The batch loop's embedding step alone, timed in this process on one batch of the task's
    candidates (its model, its pre-processing, 1 thread): milliseconds per image beside the
    forward's (the task's backend) and the ALDD scores'."""
    import torch

    from nanodet.config import load_config
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches
    from nanodet.inference.predictor import Predictor
    from nanodet.mining.diversity import image_embeddings
    from nanodet.mining.uncertainty import uncertainty_scores

    torch.set_num_threads(1)
    models = in_dir / "models"
    predictor = Predictor(load_config(models / "train_cfg.yml"), models / "nanodet_model_best.pth", threads=1)
    paths = sorted((in_dir / "assets").rglob("*.jpg"))[:batch]
    dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
    images = next(iter(inference_batches(dataset, batch, workers=0))).images
    hw = (images.shape[2], images.shape[3])

    def per_image_ms(step) -> float:
        step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return round(min(times) / len(paths) * 1000, 4)

    levels = predictor.forward_levels(images)
    return {
        "batch": len(paths),
        "backend": predictor.backend,
        "forward_ms_per_image": per_image_ms(lambda: predictor.forward_levels(images)),
        "aldd_ms_per_image": per_image_ms(lambda: uncertainty_scores("aldd", levels, predictor.num_classes, hw)),
        "embeddings_ms_per_image": per_image_ms(lambda: image_embeddings(levels, predictor.num_classes)),
        "timing": f"best of {repeats}, 1 thread",
    }


# --- memory: 100k candidates, each case in its own process -------------------------------------------


def memory_case(count: int, diversity: bool) -> dict:
    """(in a fresh process) CandidateResults for ``count`` candidates, filled and ranked: peak RSS and seconds."""
    import numpy as np

    from bench._common import peak_rss_mib
    from executor.predict import CandidateResults
    from nanodet.mining.diversity import EMBED_DIMS, MAX_GROUPS

    before = peak_rss_mib()
    written = [f"/in/assets/{k % 256:02x}/camera-frame-{k:07d}.jpg" for k in range(count)]
    rng = np.random.default_rng(0)
    results = CandidateResults(count, embeddings=diversity)
    results.read[:] = True
    results.scores[:] = rng.random(count)
    if diversity:
        bursts = (count - min(MAX_GROUPS, count // 2)) // 8
        centres = rng.normal(size=(bursts, EMBED_DIMS)).astype(np.float32)
        for start in range(0, bursts * 8, 8192):
            rows = np.arange(start, min(start + 8192, bursts * 8))
            results.embeddings[rows] = centres[rows // 8] + rng.normal(0, 0.1, size=(len(rows), EMBED_DIMS))
        rest = count - bursts * 8
        results.embeddings[bursts * 8 :] = rng.normal(size=(rest, EMBED_DIMS))
    filled = peak_rss_mib()
    start = time.perf_counter()
    if diversity:
        results.diversify()
    order = results.ranking()
    seconds = time.perf_counter() - start
    assert len(order) == count and len(written) == count
    return {
        "candidates": count,
        "diversity": diversity,
        "rank_s": round(seconds, 2),
        "peak_rss_mib_at_start": round(before, 1),
        "peak_rss_mib_filled": round(filled, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "embeddings_mib": round(results.embeddings.nbytes / 2**20, 1) if diversity else 0.0,
    }


def measure_memory(count: int) -> dict:
    cases = {}
    for diversity in (False, True):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-case", str(count), *(["--on"] if diversity else [])],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        cases["on" if diversity else "off"] = json.loads(proc.stdout)
        log(json.dumps(cases["on" if diversity else "off"]))
    return {
        "what": "CandidateResults filled and ranked as the task ranks them, index paths held, each case in a "
        "fresh process (1 thread); on: bursts of 8 near-copies plus distinct candidates",
        "cases": cases,
        "extra_peak_rss_mib": round(cases["on"]["peak_rss_mib"] - cases["off"]["peak_rss_mib"], 1),
        "extra_rank_s": round(cases["on"]["rank_s"] - cases["off"]["rank_s"], 2),
    }


# --- separation: frames of a scene vs other scenes -------------------------------------------------


def measure_separation(weights: Path, thresholds: tuple[float, ...] = (0.8, 0.85, 0.9)) -> dict:
    import numpy as np
    import torch

    from bench._common import PoolRecipe, make_pool
    from bench.active_learning import Protocol, round_config
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches
    from nanodet.inference.predictor import Predictor
    from nanodet.mining.diversity import SIMILAR, _centre, _unit, image_embeddings

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="mining-separation-") as tmp:
        pool = make_pool(Path(tmp), "bursty", PoolRecipe(), 60, 555, bursts=(6, 10))
        meta = {int(k): v for k, v in json.loads(Path(pool["meta_path"]).read_text()).items()}
        proto = Protocol(
            seeds=(0,), algorithms=("aldd", "random"), rounds=1, epochs=6, round0_epochs=36, pool=400, test=1
        )
        data = {"pool": pool, "test": pool, "root": tmp, "kind": "bursty", "size": len(meta)}
        predictor = Predictor(round_config(proto, data, pool["ann_path"], Path(tmp), None, 6), weights)
        ids = sorted(meta)
        paths = [str(Path(pool["img_path"]) / f"{i - 1:05d}.jpg") for i in ids]
        dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
        embeddings = np.concatenate(
            [
                image_embeddings(predictor.forward_levels(b.images), predictor.num_classes)
                for b in inference_batches(dataset, 32, workers=0)
            ]
        )
    vectors = _unit(embeddings, _centre(embeddings))
    sims = vectors @ vectors.T
    scene = np.array([meta[i]["scene"] for i in ids])
    upper = np.triu_indices(len(ids), 1)
    same = (scene[:, None] == scene[None, :])[upper]
    within, between = sims[upper][same], sims[upper][~same]
    return {
        "weights": str(weights),
        "pool": f"60 scenes x 6-10 jittered frames (seed 555), {len(ids)} frames",
        "pairs_within_scenes": int(len(within)),
        "pairs_between_scenes": int(len(between)),
        "within_percentiles_5_25_50": [round(float(v), 3) for v in np.percentile(within, [5, 25, 50])],
        "between_percentiles_50_99_99.9": [round(float(v), 3) for v in np.percentile(between, [50, 99, 99.9])],
        "share_at_or_above": {
            str(t): {"within": round(float((within >= t).mean()), 4), "between": round(float((between >= t).mean()), 4)}
            for t in sorted({*thresholds, SIMILAR})
        },
        "threshold_used": SIMILAR,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cost", action="store_true", help="the 10k mining task off and on")
    parser.add_argument("--memory", action="store_true", help="100k candidates ranked, peak RSS")
    parser.add_argument("--separation", action="store_true", help="needs --weights")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mining_diversity.json")
    parser.add_argument("--memory-case", type=int, help=argparse.SUPPRESS)  # internal: one memory case
    parser.add_argument("--on", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, args.on)))
        return
    if args.separation and not args.weights:
        parser.error("--separation needs --weights (a round-0 model of bench/active_learning.py --work-dir)")
    if not (args.cost or args.memory or args.separation):
        args.cost = args.memory = True
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report["benchmark"] = "mining_diversity"
    load_before = list(os.getloadavg())
    if args.memory:
        report["memory_100k"] = measure_memory(args.large) | {"loadavg_before": load_before}
    if args.cost:
        report["cost_10k"] = measure_cost(args.candidates, args.input_size, args.batch, args.repeats) | {
            "loadavg_before": load_before,
            "loadavg_after": list(os.getloadavg()),
        }
    if args.separation:
        report["separation"] = measure_separation(args.weights)
    report["host"] = host_info() | {"note": "2-core machine shared with other work (see loadavg)"}
    text = json.dumps(report, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
