"""One NanoDet-Plus-m-320 training step on CPU: ours against the official implementation, side by side.

    .venv/bin/python bench/train_vs_official.py [--rounds 3] [--runs 8] [--threads 2] [--ref-dir DIR]

The step: forward with the aux branch, loss (label assignment included), backward, grad clip (35), AdamW
and EMA, batch 8 at 320x320, 3 classes, random init. Ours: the library's ``Trainer.run_step(batch,
epoch=0)`` on parts built by ``nanodet.engine.build``; the official (the baseline): ``<ref-dir>/run.sh
<ref-dir>/train_step_ref.py`` (RangiLyu/nanodet's TrainingTask model, optimizer and EMA; it times EMA
apart and adds it). Each side runs in a fresh process per round: 3 warm-up steps, then ``--runs`` timed
ones, on the same batches (N(0, 1) images with 1-6 boxes of 12-60 % of the side, seeds 100-103, drawn as
the official harness draws them). Rounds alternate which side goes first; ``speedup`` is the median over
rounds of official / ours. Our breakdown times the parts of ``run_step`` (medians; ``rest`` is the step
less the parts). ``--ref-dir`` defaults to ``$NANODET_REF``, else ``../shared/ref``; without its
``run.sh`` only ours is timed. Prints ONE JSON object on stdout.
"""

from __future__ import annotations

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

from bench._common import CpuNoise, host_info, log, wait_for_quiet  # noqa: E402

CONFIG = REPO / "config" / "nanodet-plus-m_320.yml"
CLASSES = ["circle", "square", "triangle"]
BATCH, SIZE, WARMUP = 8, 320, 3
PARTS = ("forward", "loss", "backward", "clip", "optimizer", "ema")


def synthetic_batch(seed: int):
    """A ``TrainBatch`` drawn as the official harness draws its batches (same seed, same values)."""
    import torch

    from nanodet.data.coco_dataset import TrainBatch

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    images = torch.stack([torch.randn(3, SIZE, SIZE, generator=gen) for _ in range(BATCH)])
    boxes, labels = [], []
    for _ in range(BATCH):
        k = int(rng.integers(1, 7))
        w, h = rng.uniform(0.12, 0.6, k) * SIZE, rng.uniform(0.12, 0.6, k) * SIZE
        x1, y1 = rng.uniform(0, 1, k) * (SIZE - w), rng.uniform(0, 1, k) * (SIZE - h)
        boxes.append(torch.from_numpy(np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)))
        labels.append(torch.from_numpy(rng.integers(0, len(CLASSES), k).astype(np.int64)))
    ids = list(range(BATCH))
    return TrainBatch(images, boxes, labels, [np.eye(3)] * BATCH, ids, [(SIZE, SIZE)] * BATCH, [""] * BATCH)


def build_trainer(work_dir: str):
    """The library's Trainer on the real parts (no data loaders: the batches are given)."""
    import torch

    from nanodet.config import load_config
    from nanodet.engine.build import TrainingParts, build_criterion, build_optimizer, build_training_model
    from nanodet.engine.distributed import DistContext
    from nanodet.engine.ema import ModelEMA
    from nanodet.engine.trainer import Trainer

    cfg = load_config(CONFIG).with_classes(CLASSES).merged({"model": {"arch": {"backbone": {"pretrain": False}}}})
    torch.manual_seed(0)
    model = build_training_model(cfg)
    ema = ModelEMA(model, cfg.model.weight_averager.decay)
    parts = TrainingParts(model, build_criterion(cfg), build_optimizer(cfg, model), None, None, None, ema)
    return Trainer(cfg, work_dir, DistContext(device=torch.device("cpu")), parts)


class Timed:
    """Wraps a callable and records the wall time of each call."""

    def __init__(self, fn) -> None:
        self.fn, self.times = fn, []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.times.append(time.perf_counter() - start)
        return out


def instrument(trainer) -> dict[str, Timed]:
    """Timing wrappers around the parts of ``run_step`` (backward and clip through torch's functions)."""
    import torch

    timers = {
        "forward": Timed(trainer.train_module),
        "loss": Timed(trainer.criterion),
        "backward": Timed(torch.autograd.backward),
        "clip": Timed(torch.nn.utils.clip_grad_norm_),
        "optimizer": Timed(trainer.scaler.step),
        "ema": Timed(trainer.ema.update),
    }
    trainer.train_module, trainer.criterion = timers["forward"], timers["loss"]
    trainer.scaler.step, trainer.ema.update = timers["optimizer"], timers["ema"]
    torch.autograd.backward, torch.nn.utils.clip_grad_norm_ = timers["backward"], timers["clip"]
    return timers


def measure_ours(threads: int, runs: int) -> dict:
    """In this (fresh) process: warm-up, then ``runs`` timed ``run_step`` calls."""
    import tempfile

    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(tmp)
        timers = instrument(trainer)
        batches = [synthetic_batch(100 + i) for i in range(4)]
        steps, losses = [], []
        for i in range(WARMUP + runs):
            start = time.perf_counter()
            out = trainer.run_step(batches[i % len(batches)], 0)
            steps.append(time.perf_counter() - start)
            losses.append(round(out["loss"], 4))
    med = lambda xs: round(1e3 * statistics.median(xs[WARMUP:]), 1)  # noqa: E731
    parts = {k: med(t.times) for k, t in timers.items()}
    parts["rest"] = round(med(steps) - sum(parts.values()), 1)
    return {
        "ms_per_step_median": med(steps),
        "ms_per_step_min": round(1e3 * min(steps[WARMUP:]), 1),
        "breakdown_ms_median": parts,
        "first_losses": losses[:3],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def run_json(cmd: list[str], threads: int, cwd: Path | None = None) -> dict:
    """Run a measuring subprocess; its last stdout line is its JSON."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=1800)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed_round(name: str, cmd: list[str], args, cwd: Path | None = None) -> dict:
    quiet = wait_for_quiet(args.quiet_wait)
    noise = CpuNoise()
    res = run_json(cmd, args.threads, cwd)
    res["other_processes_cpu_share"] = noise.foreign_share()
    res["waited_for_quiet_s"] = quiet["waited_s"]
    log(f"  {name}: {res.get('ms_per_step_median')} ms/step (other processes {res['other_processes_cpu_share']})")
    return res


def ref_command(ref_dir: Path, args) -> list[str] | None:
    """The official harness's step command, or None when ``ref_dir`` has no ``run.sh``."""
    if not (ref_dir / "run.sh").is_file():
        return None
    step = ref_dir / "train_step_ref.py"
    return ["bash", str(ref_dir / "run.sh"), str(step), "--threads", str(args.threads), "--runs", str(args.runs)]


def ref_torch_version(ref_cmd: list[str]) -> str | None:
    """torch's version in the official harness's environment (its ``run.sh`` runs ``python "$@"``)."""
    proc = subprocess.run(
        [*ref_cmd[:2], "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    )
    return proc.stdout.strip() or None


def compare(ours: list[dict], official: list[dict]) -> dict:
    """Medians over rounds; the speed-up is official / ours within each round, then its median."""
    pairs = [(o, r) for o, r in zip(ours, official) if "error" not in o and "error" not in r]
    good = [o for o in ours if "error" not in o]
    if not good:
        return {"ours_error": ours[0].get("error")}
    out: dict = {
        "ours_ms_per_step": statistics.median(o["ms_per_step_median"] for o in good),
        "ours_breakdown_ms_median": {
            k: round(statistics.median(o["breakdown_ms_median"][k] for o in good), 1) for k in (*PARTS, "rest")
        },
    }
    if not pairs:
        return out
    with_ema = [r["ms_per_step_with_ema_median"] / o["ms_per_step_median"] for o, r in pairs]
    no_ema = [r["ms_per_step_median"] / (o["ms_per_step_median"] - o["breakdown_ms_median"]["ema"]) for o, r in pairs]
    # best of each side over all rounds: the machine's own speed when nothing slowed it down
    best_ours = min(o["ms_per_step_min"] for o, _ in pairs)
    best_official = min(r["ms_per_step_min"] + r["breakdown_ms_median"]["ema_update_not_in_total"] for _, r in pairs)
    return out | {
        "official_ms_per_step": statistics.median(r["ms_per_step_with_ema_median"] for _, r in pairs),
        "speedup": round(statistics.median(with_ema), 3),
        "speedup_per_round": [round(x, 3) for x in with_ema],
        "speedup_without_ema": round(statistics.median(no_ema), 3),
        "speedup_best_of_all_steps": round(best_official / best_ours, 3),
        "official_breakdown_ms_median": pairs[len(pairs) // 2][1].get("breakdown_ms_median"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="ours/official pairs, interleaved")
    parser.add_argument("--runs", type=int, default=8, help="timed steps per round (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=2)
    default_ref = Path(os.environ.get("NANODET_REF", REPO.parent / "shared" / "ref"))
    parser.add_argument("--ref-dir", type=Path, default=default_ref, help="the official harness (run.sh)")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="wait up to N s for idle CPUs before each run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_ours(args.threads, args.runs)))
        return
    ref = ref_command(args.ref_dir.resolve(), args)
    ours_cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(args.threads)]
    ours_cmd += ["--runs", str(args.runs)]
    ref_cwd = Path(os.environ.get("REF_DIR", "/tmp/nanodet-ref"))
    ours, official = [], []
    for r in range(args.rounds):  # ours, official | official, ours | ...: no side always runs first
        log(f"round {r + 1}/{args.rounds}")
        for side in ("ours", "official")[:: 1 if r % 2 == 0 else -1]:
            if side == "ours":
                ours.append(timed_round("ours", ours_cmd, args))
            elif ref is not None:
                official.append(timed_round("official", ref, args, ref_cwd if ref_cwd.is_dir() else None))
    report = {
        "benchmark": "train_step_vs_official",
        "step": f"NanoDet-Plus-m-320, batch {BATCH}, {len(CLASSES)} classes, CPU: forward with aux branch, loss, "
        "backward, grad clip, AdamW, EMA",
        "threads": args.threads,
        "torch_ours": ours[0].get("torch"),
        "torch_threads_ours": ours[0].get("threads"),
        "torch_official": ref_torch_version(ref) if ref else None,
        "official": "measured, interleaved" if ref else f"not measured: no run.sh in {args.ref_dir}",
        **compare(ours, official),
        "rounds": {"ours": ours, "official": official},
        "host": host_info(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
