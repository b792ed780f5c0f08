"""One NanoDet-Plus-m-320 training step on CPU, ours against the official implementation (the baseline).

    .venv/bin/python bench/train_vs_official.py [--rounds 3] [--runs 8] [--threads 2]

Batch 8 at 320, 3 classes, aux branch, AdamW and EMA. The official: ``train_step_ref.py`` through
``$NANODET_REF/run.sh`` (../shared/ref; skipped without it). Fresh processes, rounds alternating which side goes
first; ``speedup``: the median over rounds of official / ours. Prints ONE JSON object.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import REF_CODE, REF_HARNESS, CpuNoise, host_info, log, wait_for_quiet  # noqa: E402

CLASSES = ["circle", "square", "triangle"]
BATCH, SIZE, WARMUP = 8, 320, 3
PARTS = ("forward", "loss", "backward", "clip", "optimizer", "ema")
STEP = "NanoDet-Plus-m-320, batch 8, 3 classes, CPU: forward with aux branch, loss, backward, grad clip, AdamW, EMA"


def synthetic_batch(seed: int):
    """A ``TrainBatch`` drawn as the official harness draws its batches (same seed, same values)."""
    import torch

    from nanodet.data.coco_dataset import TrainBatch

    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    images = torch.stack([torch.randn(3, SIZE, SIZE, generator=gen) for _ in range(BATCH)])
    boxes, labels = [], []
    for _ in range(BATCH):
        k = int(rng.integers(1, 7))
        w, h = rng.uniform(0.12, 0.6, k) * SIZE, rng.uniform(0.12, 0.6, k) * SIZE
        x1, y1 = rng.uniform(0, 1, k) * (SIZE - w), rng.uniform(0, 1, k) * (SIZE - h)
        boxes.append(torch.from_numpy(np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)))
        labels.append(torch.from_numpy(rng.integers(0, len(CLASSES), k).astype(np.int64)))
    meta = [np.eye(3)] * BATCH, list(range(BATCH)), [(SIZE, SIZE)] * BATCH, [""] * BATCH
    return TrainBatch(images, boxes, labels, *meta)


def measure_ours(threads: int, runs: int) -> dict:
    """In this (fresh) process: the library's Trainer on the real parts, each part of ``run_step`` timed."""
    import tempfile

    import torch

    from nanodet.config import load_config
    from nanodet.engine.build import TrainingParts, build_criterion, build_optimizer, build_training_model
    from nanodet.engine.distributed import DistContext
    from nanodet.engine.ema import ModelEMA
    from nanodet.engine.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = load_config(REPO / "config" / "nanodet-plus-m_320.yml").with_classes(CLASSES)
    cfg = cfg.merged({"model": {"arch": {"backbone": {"pretrain": False}}}})
    torch.manual_seed(0)
    model = build_training_model(cfg)
    ema = ModelEMA(model, cfg.model.weight_averager.decay)
    parts = TrainingParts(model, build_criterion(cfg), build_optimizer(cfg, model), None, None, None, ema)
    times: dict[str, list[float]] = {k: [] for k in PARTS}

    def timed(name: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            times[name].append(time.perf_counter() - start)
            return out

        return wrapper

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, DistContext(device=torch.device("cpu")), parts)
        for name, owner, attr in (
            ("forward", trainer, "train_module"),
            ("loss", trainer, "criterion"),
            ("backward", torch.autograd, "backward"),
            ("clip", torch.nn.utils, "clip_grad_norm_"),
            ("optimizer", trainer.scaler, "step"),
            ("ema", trainer.ema, "update"),
        ):
            setattr(owner, attr, timed(name, getattr(owner, attr)))
        batches = [synthetic_batch(100 + i) for i in range(4)]
        steps, losses = [], []
        for i in range(WARMUP + runs):
            start = time.perf_counter()
            out = trainer.run_step(batches[i % len(batches)], 0)
            steps.append(time.perf_counter() - start)
            losses.append(round(out["loss"], 4))
    med = lambda xs: round(1e3 * statistics.median(xs[WARMUP:]), 1)  # noqa: E731
    breakdown = {k: med(t) for k, t in times.items()}
    breakdown["rest"] = round(med(steps) - sum(breakdown.values()), 1)
    out = {"ms_per_step_median": med(steps), "ms_per_step_min": round(1e3 * min(steps[WARMUP:]), 1)}
    out |= {"breakdown_ms_median": breakdown, "first_losses": losses[:3], "torch": torch.__version__}
    return out | {"threads": torch.get_num_threads()}


def timed_round(name: str, cmd: list[str], args, cwd: Path | None = None) -> dict:
    """A measuring subprocess (its last stdout line is its JSON) after waiting for quiet CPUs."""
    quiet, noise = wait_for_quiet(60.0), CpuNoise()  # up to 60 s for idle CPUs
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=1800)
    if proc.returncode != 0:
        res = {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    else:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    res |= {"other_processes_cpu_share": noise.foreign_share(), "waited_for_quiet_s": quiet["waited_s"]}
    log(f"  {name}: {res.get('ms_per_step_median')} ms/step (other processes {res['other_processes_cpu_share']})")
    return res


def compare(ours: list[dict], official: list[dict]) -> dict:
    """Medians over rounds; the speed-up is official / ours within each round, then its median."""
    pairs = [(o, r) for o, r in zip(ours, official) if "error" not in o and "error" not in r]
    good = [o for o in ours if "error" not in o]
    if not good:
        return {"ours_error": ours[0].get("error")}
    out = {"ours_ms_per_step": statistics.median(o["ms_per_step_median"] for o in good)}
    breakdowns = [o["breakdown_ms_median"] for o in good]
    out["ours_breakdown_ms_median"] = {
        k: round(statistics.median(b[k] for b in breakdowns), 1) for k in (*PARTS, "rest")
    }
    if not pairs:
        return out
    with_ema = [r["ms_per_step_with_ema_median"] / o["ms_per_step_median"] for o, r in pairs]
    no_ema = [r["ms_per_step_median"] / (o["ms_per_step_median"] - o["breakdown_ms_median"]["ema"]) for o, r in pairs]
    # best of each side over all rounds: the machine's own speed when nothing slowed it down
    best_ours = min(o["ms_per_step_min"] for o, _ in pairs)
    best_official = min(r["ms_per_step_min"] + r["breakdown_ms_median"]["ema_update_not_in_total"] for _, r in pairs)
    out["official_ms_per_step"] = statistics.median(r["ms_per_step_with_ema_median"] for _, r in pairs)
    out |= {"speedup": round(statistics.median(with_ema), 3), "speedup_per_round": [round(x, 3) for x in with_ema]}
    out |= {"speedup_without_ema": round(statistics.median(no_ema), 3)}
    out["speedup_best_of_all_steps"] = round(best_official / best_ours, 3)
    return out | {"official_breakdown_ms_median": pairs[len(pairs) // 2][1].get("breakdown_ms_median")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="ours/official pairs, interleaved")
    parser.add_argument("--runs", type=int, default=8, help="timed steps per round (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_ours(args.threads, args.runs)))
        return
    ref_dir, counts = REF_HARNESS.resolve(), ["--threads", str(args.threads), "--runs", str(args.runs)]
    ref = ["bash", str(ref_dir / "run.sh"), str(ref_dir / "train_step_ref.py"), *counts]
    ref = ref if (ref_dir / "run.sh").is_file() else None
    ours_cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *counts]
    ours, official = [], []
    for r in range(args.rounds):  # ours, official | official, ours | ...: no side always runs first
        log(f"round {r + 1}/{args.rounds}")
        for side in ("ours", "official")[:: 1 if r % 2 == 0 else -1]:
            if side == "ours":
                ours.append(timed_round("ours", ours_cmd, args))
            elif ref is not None:
                official.append(timed_round("official", ref, args, REF_CODE if REF_CODE.is_dir() else None))
    torch_official = None
    if ref:  # its run.sh runs ``python "$@"``
        version = [*ref[:2], "-c", "import torch; print(torch.__version__)"]
        torch_official = subprocess.run(version, capture_output=True, text=True).stdout.strip() or None
    report = {"benchmark": "train_step_vs_official", "step": STEP, "threads": args.threads}
    report |= {"torch_ours": ours[0].get("torch"), "torch_threads_ours": ours[0].get("threads")}
    report |= {"torch_official": torch_official}
    report["official"] = "measured, interleaved" if ref else f"not measured: no run.sh in {REF_HARNESS}"
    report |= compare(ours, official) | {"rounds": {"ours": ours, "official": official}, "host": host_info()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
