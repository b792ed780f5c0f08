"""What ``mining_diversity`` costs and how well its embedding tells bursts apart: one mining task
through start.py with it on and off (the baseline), alternately on one workspace after an uncounted
run that fills the export cache.

    .venv/bin/python bench/mining_diversity.py [--cost] [--memory] [--separation --weights W]

``--cost``: 10k 96x72 JPEGs, input 128, ``random_detector`` weights: extra wall, batch-loop and
re-ranking seconds (best of the repeats), the embedding step alone; ``--memory``: ``CandidateResults`` of
``--large`` candidates ranked in a fresh process per case (peak RSS, seconds); ``--separation --weights
W`` (a round-0 model of ``bench/active_learning.py``): cosine similarities within and between scenes of
a bursty pool (60 scenes, seed 555). Default ``--cost --memory``; cases not run are kept from ``--out``.
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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _common as c  # noqa: E402

RERANK_LOG = re.compile(r"mining diversity: (\d+) candidates re-ranked in ([\d.]+) s")


def mining_run(in_dir: Path, out: Path, key: str, on: bool, env: dict | None = None) -> dict:
    import yaml

    config = yaml.safe_load((in_dir / "config.yaml").read_text())
    (in_dir / "config.yaml").write_text(yaml.safe_dump(config | {key: on}, sort_keys=False))
    return c.run_start_py(in_dir, out, env)


def diversity_workspace(in_dir: Path, candidates: int, input_size: int, batch: int) -> Path:
    import numpy as np
    import yaml

    from executor.workspace import write_env
    from nanodet.mining.diversity import EMBED_DIMS

    c.models_folder(in_dir / "models", input_size)
    labelled = np.random.default_rng(12).normal(size=(candidates, EMBED_DIMS)).astype(np.float16)  # one per candidate
    np.save(in_dir / "models" / "labelled_embeddings.npy", labelled)  # distinct: each seeds a group (the worst)
    rows = c.small_candidates(in_dir, candidates, seed=11)
    (in_dir / "candidate-index.tsv").write_text("".join(f"{r}\n" for r in rows))
    write_env(in_dir, mining=True, infer=False)
    config = {"gpu_count": 0, "model_params_path": ["nanodet_model_best.pth", "train_cfg.yml"]}
    config |= {"mining_algorithm": "aldd", "batch_size_per_gpu": batch, "workers_per_gpu": 1}
    config |= {"mining_contact_sheet": False}
    (in_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return in_dir


def diversity_run(in_dir: Path, out: Path, on: bool) -> dict:
    run = mining_run(in_dir, out, "mining_diversity", on)
    rerank = RERANK_LOG.search(run["log"])
    rerank_s = float(rerank.group(2)) if rerank else 0.0
    out = {"diversity": on, "seeded": on and "groups seeded by" in run["log"], "rerank_s": rerank_s}
    return out | {"wall_s": run["wall_s"], "batch_loop_s": run["batch_loop_s"]}


def embedding_share(in_dir: Path, batch: int, repeats: int = 20) -> dict:
    """The batch loop's embedding step alone, in this process on one batch of the task's candidates
    (its model and pre-processing, 1 thread), beside the forward (the task's backend) and ALDD."""
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
    return {"batch": len(paths), "backend": predictor.backend} | {
        "forward_ms_per_image": per_image_ms(lambda: predictor.forward_levels(images)),
        "aldd_ms_per_image": per_image_ms(lambda: uncertainty_scores("aldd", levels, predictor.num_classes, hw)),
        "embeddings_ms_per_image": per_image_ms(lambda: image_embeddings(levels, predictor.num_classes)),
        "timing": f"best of {repeats}, 1 thread",
    }


def measure_cost(candidates: int, input_size: int, batch: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mining-diversity-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        in_dir = diversity_workspace(root / "in", candidates, input_size, batch)
        c.log(f"{candidates} candidates ready in {time.perf_counter() - start:.0f} s")
        c.log(f"warm-up {diversity_run(in_dir, root / 'warm-up', False)}")  # exports the graph into the cache
        runs = []
        for r in range(repeats):
            for on in (False, True):
                runs.append(diversity_run(in_dir, root / f"out-{r}-{int(on)}", on))
                c.log(json.dumps(runs[-1]))
        split = embedding_share(in_dir, batch)
        first, last = (root / f"out-{r}-0" / "result.tsv" for r in (0, repeats - 1))
        same = first.read_text() == last.read_text()
    best = {
        on: {k: min(r[k] for r in runs if r["diversity"] == on) for k in ("wall_s", "batch_loop_s")} for on in (0, 1)
    }
    off_wall, rerank = best[0]["wall_s"], min(r["rerank_s"] for r in runs if r["diversity"])
    extra, embeddings_s = best[1]["wall_s"] - off_wall, split["embeddings_ms_per_image"] * candidates / 1000
    report = {"task": "ALDD mining through start.py, CPU, 1 process, workers_per_gpu 1", "candidates": candidates}
    report |= {"images": "96x72 JPEG shapes", "input_size": input_size, "batch_size_per_gpu": batch}
    return report | {
        "repeats": repeats,
        "runs": runs,
        "best_off": best[0],
        "best_on": best[1],
        "rerank_s_best": rerank,
        "extra_wall_s": round(extra, 2),
        "extra_share_of_off_task": round(extra / off_wall, 4),
        "extra_batch_loop_share": round((best[1]["batch_loop_s"] - best[0]["batch_loop_s"]) / off_wall, 4),
        "rerank_share_of_off_task": round(rerank / off_wall, 4),
        "embeddings_in_process": split
        | {
            "embeddings_s_for_all_candidates": round(embeddings_s, 2),
            "embeddings_share_of_off_task": round(embeddings_s / off_wall, 4),
        },
        "off_runs_identical": same,
        "note": "best of the repeats; on and off alternate on the same workspace, so load drifts hit both",
    }


def memory_case(count: int, on: bool) -> dict:
    """(in a fresh process) CandidateResults for ``count`` candidates, filled and ranked."""
    import numpy as np

    from executor.labelled_embeddings import MAX_ROWS
    from executor.predict import CandidateResults
    from nanodet.mining.diversity import EMBED_DIMS, MAX_GROUPS

    before = c.peak_rss_mib()
    written = [f"/in/assets/{k % 256:02x}/camera-frame-{k:07d}.jpg" for k in range(count)]
    rng = np.random.default_rng(0)
    results = CandidateResults(count, embeddings=on)
    results.read[:] = True
    results.scores[:] = rng.random(count)
    if on:
        bursts = (count - min(MAX_GROUPS, count // 2)) // 8
        centres = rng.normal(size=(bursts, EMBED_DIMS)).astype(np.float32)
        for start in range(0, bursts * 8, 8192):
            rows = np.arange(start, min(start + 8192, bursts * 8))
            results.embeddings[rows] = centres[rows // 8] + rng.normal(0, 0.1, size=(len(rows), EMBED_DIMS))
        results.embeddings[bursts * 8 :] = rng.normal(size=(count - bursts * 8, EMBED_DIMS))
    labelled = np.zeros((MAX_ROWS if on else 0, EMBED_DIMS), np.float16)  # the most a training task keeps
    for start in range(0, len(labelled), 8192):  # in chunks: no float64 copy of the whole set in the peak
        block = labelled[start : start + 8192]
        block[:] = rng.normal(size=block.shape)
    filled = c.peak_rss_mib()
    start = time.perf_counter()
    if on:
        results.diversify(labelled)
    order = results.ranking()
    seconds = time.perf_counter() - start
    assert len(order) == count and len(written) == count
    report = {"candidates": count, "diversity": on, "rank_s": round(seconds, 2)}
    report |= {"peak_rss_mib_at_start": round(before, 1), "peak_rss_mib_filled": round(filled, 1)}
    embeddings = round(results.embeddings.nbytes / 2**20, 1) if on else 0.0
    return report | {"peak_rss_mib": round(c.peak_rss_mib(), 1), "embeddings_mib": embeddings}


def measure_memory(count: int) -> dict:
    cases = {}
    for on in (False, True):
        command = [sys.executable, __file__, "--memory-case", str(count)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(command + (["--on"] if on else []), capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        cases["on" if on else "off"] = json.loads(proc.stdout)
        c.log(proc.stdout.strip())
    return {
        "what": "CandidateResults filled and ranked as the task ranks them, index paths held, each case in a "
        "fresh process (1 thread); on: bursts of 8 near-copies plus distinct candidates, groups seeded by "
        "100k distinct labelled images (the most a training task keeps)",
        "cases": cases,
        "extra_peak_rss_mib": round(cases["on"]["peak_rss_mib"] - cases["off"]["peak_rss_mib"], 1),
        "extra_rank_s": round(cases["on"]["rank_s"] - cases["off"]["rank_s"], 2),
    }


def measure_separation(weights: Path, thresholds: tuple[float, ...] = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)) -> dict:
    import numpy as np
    import torch

    from bench._common import PoolRecipe, make_pool, synthetic_config
    from nanodet.data.inference_dataset import ImageFileDataset, inference_batches
    from nanodet.inference.predictor import Predictor
    from nanodet.mining.diversity import SIMILAR, _centre, _unit, image_embeddings

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="mining-separation-") as tmp:
        recipe = PoolRecipe()
        pool = make_pool(Path(tmp), "bursty", recipe, 60, 555, bursts=(6, 10))
        meta = {int(k): v for k, v in json.loads(Path(pool["meta_path"]).read_text()).items()}
        images = {k: pool[k] for k in ("img_path", "ann_path")}
        overrides = {"model": {"arch": {"backbone": {"pretrain": False}}}}  # active_learning.py's model, input 128
        cfg = synthetic_config(
            "nanodet-plus-m_320.yml", images, images, (128, 128), 16, 0, Path(tmp), overrides, recipe.classes
        )
        predictor = Predictor(cfg, weights)
        ids = sorted(meta)
        paths = [str(Path(pool["img_path"]) / f"{i - 1:05d}.jpg") for i in ids]
        dataset = ImageFileDataset(paths, predictor.input_wh, predictor.keep_ratio, predictor.mean, predictor.std)
        batches = inference_batches(dataset, 32, workers=0)
        embeddings = np.concatenate(
            [image_embeddings(predictor.forward_levels(b.images), predictor.num_classes) for b in batches]
        )
    vectors = _unit(embeddings, _centre(embeddings))
    sims = vectors @ vectors.T
    scene = np.array([meta[i]["scene"] for i in ids])
    upper = np.triu_indices(len(ids), 1)
    same = (scene[:, None] == scene[None, :])[upper]
    within, between = sims[upper][same], sims[upper][~same]
    report = {"weights": str(weights), "pool": f"60 scenes x 6-10 jittered frames (seed 555), {len(ids)} frames"}
    return report | {
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


def measure_diversity(args: argparse.Namespace) -> dict:
    if not (args.cost or args.memory or args.separation):
        args.cost = args.memory = True
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report["benchmark"] = "mining_diversity"
    load_before = list(os.getloadavg())
    if args.memory:
        report["memory_100k"] = measure_memory(args.large) | {"loadavg_before": load_before}
    if args.cost:
        cost = measure_cost(args.candidates, args.input_size, 32, args.repeats)
        report["cost_10k"] = cost | {"loadavg_before": load_before, "loadavg_after": list(os.getloadavg())}
    if args.separation:
        report["separation"] = measure_separation(args.weights)
    report["host"] = c.host_info() | {"note": "2-core machine shared with other work (see loadavg)"}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=10_000, help="of --cost")
    parser.add_argument("--input-size", type=int, default=128, help="of --cost")
    parser.add_argument("--repeats", type=int, default=2, help="--cost runs of each kind, interleaved")
    parser.add_argument("--out", type=Path, default=c.RESULTS / "mining_diversity.json")
    parser.add_argument("--cost", action="store_true", help="the mining task off and on")
    parser.add_argument("--memory", action="store_true", help="--large candidates ranked, peak RSS")
    parser.add_argument("--separation", action="store_true", help="needs --weights")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--large", type=int, default=100_000, help="candidates of --memory")
    parser.add_argument("--memory-case", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--on", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, args.on)))
        return
    if args.separation and not args.weights:
        parser.error("--separation needs --weights (a round-0 model of bench/active_learning.py --work-dir)")
    c.print_report(measure_diversity(args), args.out, indent=1)


if __name__ == "__main__":
    main()
