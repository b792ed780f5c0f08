"""Mining and infer through start.py: every candidate, formats per protocol, order, progress."""

from pathlib import Path

import cv2
import pytest
import torch

from executor.workspace import make_predict_workspace
from nanodet.config import load_config, save_config
from nanodet.weights.checkpoint import save_pth

from .conftest import randomized_model
from .executor_helpers import (
    SAMPLE_CLASSES,
    assert_failure,
    assert_success,
    candidates_of,
    edit_yaml,
    infer_result,
    run_start,
    sample_workspace,
    trained_models,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return trained_models(tmp_path_factory.mktemp("models"))


def test_mining_and_infer_together(models, tmp_path):
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=10, batch_size_per_gpu=4, workers_per_gpu=1)
    out = tmp_path / "out"
    proc = run_start(in_dir, out)
    assert_success(proc, out)
    cands = candidates_of(in_dir)
    # mining: every candidate once, exactly as written, sorted by score descending
    rows = [row.split("\t") for row in (out / "result.tsv").read_text().splitlines()]
    assert sorted(r[0] for r in rows) == sorted(cands) and all(len(r) == 2 for r in rows)
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0
    # infer: every candidate by basename, integer boxes of known classes above conf_thres
    detection = infer_result(out)["detection"]
    assert set(detection) == {Path(c).name for c in cands}
    boxes = [b for v in detection.values() for b in v["boxes"]]
    assert boxes, "the randomized model should detect something"
    for b in boxes:
        assert set(b) == {"class_name", "score", "box"} and b["class_name"] in ("circle", "square", "triangle")
        assert b["score"] >= 0.35 and all(isinstance(b["box"][k], int) for k in "xywh")
        assert b["box"]["w"] > 0 and b["box"]["h"] > 0
    # the contact sheet: 10 candidates = the top 10 (two rows of 6 tiles), no bottom section left
    sheet = cv2.imread(str(out / "mining-contact-sheet.png"))
    assert sheet is not None and sheet.shape[1] == 6 * 246 + 6 and sheet.shape[0] == 30 + 2 * (240 + 20 + 6)
    assert "mining contact sheet: " in proc.stdout + proc.stderr


def test_contact_sheet_top_and_bottom_and_off_switch(models, tmp_path):
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=20, infer=False, workers_per_gpu=0)
    assert_success(run_start(in_dir, tmp_path / "out"), tmp_path / "out")
    sheet = cv2.imread(str(tmp_path / "out" / "mining-contact-sheet.png"))
    assert sheet.shape[0] == 30 + 2 * (240 + 20 + 6) + 30 + (240 + 20 + 6)  # 12 top, then 6 bottom
    edit_yaml(in_dir / "config.yaml", mining_contact_sheet="false")
    assert_success(run_start(in_dir, tmp_path / "off"), tmp_path / "off")
    assert (tmp_path / "off" / "result.tsv").is_file() and not (tmp_path / "off" / "mining-contact-sheet.png").exists()


def test_old_protocol_uses_annotations_key(models, tmp_path):
    in_dir = make_predict_workspace(
        tmp_path / "in", models, candidates=3, mining=False, protocol_version="0.0.1", workers_per_gpu=0
    )
    assert_success(run_start(in_dir, tmp_path / "out"), tmp_path / "out")
    assert all(set(v) == {"annotations"} for v in infer_result(tmp_path / "out")["detection"].values())
    assert not (tmp_path / "out" / "result.tsv").exists()


def test_unreadable_candidate_and_basename_collision(models, tmp_path):
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=4, workers_per_gpu=0)
    cands = candidates_of(in_dir)
    (in_dir / "assets" / "zz").mkdir()
    (in_dir / "assets" / "zz" / "broken.jpg").write_bytes(b"not an image")
    other = in_dir / "assets" / "other"
    other.mkdir()
    first = Path(cands[0])
    (other / first.name).write_bytes((in_dir / first.relative_to("/in")).read_bytes())
    extra = ["/in/assets/zz/broken.jpg", f"/in/assets/other/{first.name}"]
    (in_dir / "candidate-index.tsv").write_text("\n".join(cands + extra) + "\n")
    proc = run_start(in_dir, tmp_path / "out")
    assert_success(proc, tmp_path / "out")
    rows = [row.split("\t") for row in (tmp_path / "out" / "result.tsv").read_text().splitlines()]
    assert len(rows) == 6 and rows[-1] == ["/in/assets/zz/broken.jpg", "-1"]
    detection = infer_result(tmp_path / "out")["detection"]
    assert detection["broken.jpg"] == {"boxes": []}
    assert len(detection) == 5  # the duplicate basename is reported once...
    assert f"candidates share the basename '{first.name}'" in proc.stdout  # ...and the collision logged
    assert "unreadable candidate" in proc.stdout


def run_in_process(in_dir: Path, out: Path) -> list[float]:
    """The task through executor.app.run in this process; every progress value written."""
    from executor.app import run
    from executor.monitor import Monitor
    from executor.paths import PathMapper
    from executor.protocol import parse_env, read_yaml

    mapper = PathMapper(in_dir, out)
    env = parse_env(read_yaml(in_dir / "env.yaml", "env"))
    seen = []
    monitor = Monitor(out / "monitor.txt", "t", min_interval=0.0)
    original = monitor._write
    monitor._write = lambda line, extra="": (seen.append(float(line.split("\t")[2])), original(line, extra))
    out.mkdir()
    run(env, mapper, monitor)
    return seen


def test_combined_task_is_one_pass_with_monotonic_progress(models, tmp_path, monkeypatch):
    """6 candidates in batches of 2: 3 forwards for mining and infer together (not 6), then one
    for the contact sheet's pictured candidates; progress 0 → 1/3 → 2/3 → 1."""
    from nanodet.deploy.runtimes import OnnxRuntime, OpenVinoRuntime
    from nanodet.deploy.torch_runtime import TorchRuntime

    calls = []
    for runtime in (TorchRuntime, OnnxRuntime, OpenVinoRuntime):
        original = runtime.run
        monkeypatch.setattr(runtime, "run", lambda self, x, _f=original: (calls.append(len(x)), _f(self, x))[1])
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=6, batch_size_per_gpu=2, workers_per_gpu=0)
    seen = run_in_process(in_dir, tmp_path / "out")
    assert calls == [2, 2, 2, 6]  # the sheet pictures all 6 (top 12 + bottom 6 of 6)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert [round(s, 2) for s in seen if 0 < s < 1] == [0.33, 0.67]


@pytest.mark.parametrize("algorithm", ["aldd", "entropy", "random"])
def test_combined_outputs_equal_the_separate_tasks(models, tmp_path, algorithm):
    """The one-pass task writes byte for byte what mining alone and infer alone write."""
    outputs = {}
    for mining, infer in ((True, True), (True, False), (False, True)):
        in_dir = make_predict_workspace(
            tmp_path / f"in{mining}{infer}",
            models,
            candidates=5,
            mining=mining,
            infer=infer,
            batch_size_per_gpu=2,
            workers_per_gpu=0,
            mining_algorithm=algorithm,
        )
        out = tmp_path / f"out{mining}{infer}"
        assert_success(run_start(in_dir, out), out)
        outputs[mining, infer] = {
            name: (out / name).read_bytes() for name in ("result.tsv", "infer-result.json") if (out / name).exists()
        }
    assert outputs[True, True]["result.tsv"] == outputs[True, False]["result.tsv"]
    assert outputs[True, True]["infer-result.json"] == outputs[False, True]["infer-result.json"]
    assert set(outputs[True, False]) == {"result.tsv"} and set(outputs[False, True]) == {"infer-result.json"}
    scores = [float(line.split("\t")[1]) for line in outputs[True, True]["result.tsv"].decode().splitlines()]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and len(set(scores)) > 1


def test_unknown_mining_algorithm_names_the_choices(models, tmp_path):
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=2, mining_algorithm="coreset")
    fields = assert_failure(run_start(in_dir, tmp_path / "out"), tmp_path / "out", 300001)
    assert "key 'mining_algorithm': 'coreset' is not one of 'aldd', 'entropy' or 'random'" in fields[5]


def test_mining_algorithm_is_any_case_and_one_the_library_has():
    from typing import get_args

    from executor.errors import ConfigError
    from executor.protocol import MiningAlgorithm, PredictConfig, parse_task_config
    from nanodet.mining.uncertainty import MINING_ALGORITHMS

    assert get_args(MiningAlgorithm) == MINING_ALGORITHMS
    assert parse_task_config(PredictConfig, {"mining_algorithm": " Entropy "}).mining_algorithm == "entropy"
    assert parse_task_config(PredictConfig, {}).mining_algorithm == "aldd"
    with pytest.raises(ConfigError, match="key 'mining_algorithm': 'CoreSet' is not one of 'aldd', 'entropy' or"):
        parse_task_config(PredictConfig, {"mining_algorithm": "CoreSet"})


def test_backends_give_the_same_results_through_start_py(models, tmp_path):
    """`backend` in config.yaml: torch, onnxruntime and openvino rank the candidates the same
    and report the same boxes (integer pixels, scores to 1e-3)."""
    results = {}
    for backend in ("torch", "onnxruntime", "openvino"):
        in_dir = make_predict_workspace(
            tmp_path / backend / "in", models, candidates=8, batch_size_per_gpu=4, workers_per_gpu=0, backend=backend
        )
        out = tmp_path / backend / "out"
        proc = run_start(in_dir, out)
        assert_success(proc, out)
        assert f"backend {backend}" in proc.stdout + proc.stderr
        rows = [r.split("\t") for r in (out / "result.tsv").read_text().splitlines()]
        results[backend] = ({p: float(s) for p, s in rows}, [p for p, _ in rows], infer_result(out)["detection"])
    scores, order, detection = results["torch"]
    assert sum(len(v["boxes"]) for v in detection.values()) > 0
    for backend in ("onnxruntime", "openvino"):
        other_scores, other_order, other_detection = results[backend]
        assert max(abs(other_scores[p] - scores[p]) for p in scores) < 1e-5
        assert other_order == order
        for name, entry in detection.items():
            theirs = other_detection[name]["boxes"]
            assert [b["class_name"] for b in theirs] == [b["class_name"] for b in entry["boxes"]]
            for a, b in zip(entry["boxes"], theirs):
                assert abs(a["score"] - b["score"]) < 1e-3
                assert max(abs(a["box"][k] - b["box"][k]) for k in "xywh") <= 1


def test_an_unknown_or_unusable_backend_is_a_config_error(models, tmp_path):
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=2, workers_per_gpu=0, backend="tensorrt")
    proc = run_start(in_dir, tmp_path / "out")
    assert_failure(proc, tmp_path / "out", 300001)
    assert "config.yaml: key 'backend': 'tensorrt' is not one of 'auto', 'torch', 'onnxruntime'" in proc.stderr


def test_mining_scores_batch_invariant(models):
    from nanodet.inference.predictor import Predictor
    from nanodet.mining.uncertainty import aldd_scores

    p = Predictor(load_config(models / "train_cfg.yml"), models / "nanodet_model_best.pth")
    x = torch.randn(5, 3, 128, 128)
    together = aldd_scores(p.forward_levels(x), 3, (128, 128))
    alone = torch.cat([aldd_scores(p.forward_levels(x[i : i + 1]), 3, (128, 128)) for i in range(5)])
    assert (together - alone).abs().max() < 1e-5
    assert (together >= 0).all() and together.std() > 0


def test_aldd_on_a_known_map():
    """Uniform probabilities have no disagreement; a checkerboard has a lot."""
    from nanodet.mining.uncertainty import aldd_scores

    flat = [torch.zeros(1, 3, 40, 40)]
    board = torch.zeros(1, 3, 40, 40)
    board[:, :, ::2, ::2] = 6.0
    board[:, :, 1::2, 1::2] = 6.0
    board[:, :, ::2, 1::2] = -6.0
    board[:, :, 1::2, ::2] = -6.0
    assert aldd_scores(flat, 3, (320, 320)).item() == pytest.approx(0.0, abs=1e-6)
    assert aldd_scores([board], 3, (320, 320)).item() > 1.0


def test_sample_data_infer(models, tmp_path):
    """The platform-format sample (tests/sample_data.py) as candidates, with a model of its 5 classes."""
    cfg = load_config(models / "train_cfg.yml").with_classes(SAMPLE_CLASSES)
    in_dir = sample_workspace(tmp_path, training=False, workers_per_gpu=0, model_params_path=["nanodet_model_best.pth"])
    (in_dir / "models").mkdir()
    save_pth(randomized_model(cfg, cls_bias=-6.0), in_dir / "models" / "nanodet_model_best.pth", inference_only=True)
    save_config(cfg, in_dir / "models" / "train_cfg.yml")
    assert_success(run_start(in_dir, tmp_path / "out"), tmp_path / "out")
    assert set(infer_result(tmp_path / "out")["detection"]) == {"bowl.jpg", "cat.jpg", "cup.jpg", "spoon.jpg"}
    assert len((tmp_path / "out" / "result.tsv").read_text().splitlines()) == 4


def test_no_model_is_a_model_error(models, tmp_path):
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=2)
    edit_yaml(in_dir / "config.yaml", model_params_path=[])
    assert_failure(run_start(in_dir, tmp_path / "out"), tmp_path / "out", 300004)


def test_two_process_shard_equals_one_process(models, tmp_path):
    """cpu_processes: 2 runs the task under torchrun (gloo): nothing lost or doubled."""
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=7, batch_size_per_gpu=2, workers_per_gpu=0)
    assert_success(run_start(in_dir, tmp_path / "one"), tmp_path / "one")
    edit_yaml(in_dir / "config.yaml", cpu_processes=2)
    proc = run_start(in_dir, tmp_path / "two")
    assert_success(proc, tmp_path / "two")
    assert "launching 2 processes with torchrun" in proc.stdout + proc.stderr
    one = [row.split("\t") for row in (tmp_path / "one" / "result.tsv").read_text().splitlines()]
    two = [row.split("\t") for row in (tmp_path / "two" / "result.tsv").read_text().splitlines()]
    assert len(two) == 7 and len({r[0] for r in two}) == 7
    a, b = dict(one), dict(two)
    assert a.keys() == b.keys() and all(abs(float(a[k]) - float(b[k])) < 1e-5 for k in a)
    d1, d2 = infer_result(tmp_path / "one")["detection"], infer_result(tmp_path / "two")["detection"]
    assert d1.keys() == d2.keys()
    for k in d1:
        assert [(x["class_name"], x["box"]) for x in d1[k]["boxes"]] == [
            (x["class_name"], x["box"]) for x in d2[k]["boxes"]
        ]


def _only_lines(in_dir: Path, lines: list[str]) -> None:
    (in_dir / "candidate-index.tsv").write_text("".join(f"{line}\n" for line in lines))


@pytest.mark.parametrize("index_text", ["", "\n  \r\n\t\n"], ids=["empty", "blank-lines"])
def test_empty_candidate_index_gives_empty_results(models, tmp_path, index_text):
    """No candidate is not an error: an empty result.tsv, an empty detection dict, monitor 1.0."""
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=1, workers_per_gpu=0)
    (in_dir / "candidate-index.tsv").write_text(index_text)
    out = tmp_path / "out"
    proc = run_start(in_dir, out)
    assert_success(proc, out)
    assert (out / "result.tsv").read_bytes() == b""
    assert infer_result(out) == {"detection": {}}
    assert "mining: the candidate index lists no image" in proc.stdout
    assert "infer: the candidate index lists no image" in proc.stdout
    assert not list(out.glob("*.tmp"))


def test_empty_candidate_index_under_two_processes(models, tmp_path):
    """Sharded over torchrun workers, every rank gets an empty shard: the same empty results."""
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=1, workers_per_gpu=0, cpu_processes=2)
    (in_dir / "candidate-index.tsv").write_text("\n")
    out = tmp_path / "out"
    proc = run_start(in_dir, out, timeout=120)
    assert_success(proc, out)
    assert "launching 2 processes with torchrun" in proc.stdout + proc.stderr
    assert (out / "result.tsv").read_bytes() == b""
    assert infer_result(out) == {"detection": {}}


def test_empty_candidate_index_still_needs_a_model(models, tmp_path):
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=1, workers_per_gpu=0)
    (in_dir / "candidate-index.tsv").write_text("")
    edit_yaml(in_dir / "config.yaml", model_params_path=["gone.pth"])
    fields = assert_failure(run_start(in_dir, tmp_path / "out"), tmp_path / "out", 300004)
    assert "model_params_path" in fields[5]
    assert not (tmp_path / "out" / "result.tsv").exists() and not (tmp_path / "out" / "infer-result.json").exists()


def test_missing_candidate_index_is_a_dataset_error(models, tmp_path):
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=1, workers_per_gpu=0)
    (in_dir / "candidate-index.tsv").unlink()
    fields = assert_failure(run_start(in_dir, tmp_path / "out"), tmp_path / "out", 300002)
    assert "candidate-index.tsv: index file not found" in fields[5]


def test_missing_candidates_with_an_empty_shard(models, tmp_path):
    """One present candidate among missing ones, two processes: the missing files are left out of
    the shards (rank 1 gets none), warned about, and still listed with no boxes / the lowest score."""
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=1, workers_per_gpu=0, cpu_processes=2)
    [present] = candidates_of(in_dir)
    gone = ["/in/assets/zz/gone-1.jpg", "/in/assets/zz/gone-2.jpg"]
    _only_lines(in_dir, gone[:1] + [present] + gone[1:])
    out = tmp_path / "out"
    proc = run_start(in_dir, out, timeout=120)
    assert_success(proc, out)
    rows = [line.split("\t") for line in (out / "result.tsv").read_text().splitlines()]
    assert rows[0][0] == present and float(rows[0][1]) >= 0
    assert sorted(r[0] for r in rows[1:]) == sorted(gone) and all(float(r[1]) == -1 for r in rows[1:])
    detection = infer_result(out)["detection"]
    assert set(detection) == {Path(c).name for c in gone + [present]}
    assert all(detection[Path(c).name] == {"boxes": []} for c in gone)
    for path in gone:  # rank 0 warns once (mining and infer are one pass)
        assert sum(f"candidates: {path}: image file not found" in line for line in proc.stdout.splitlines()) == 1
    assert "unreadable candidate" not in proc.stdout
    assert "2 missing" in proc.stdout
