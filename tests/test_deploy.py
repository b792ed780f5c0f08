"""Export and runtimes: an exported ONNX / OpenVINO model gives what the PyTorch model gives.

The ONNX file is written by ``python -m nanodet export``; its three outputs are compared with
the PyTorch inference graph on the sample pictures (raw outputs within 1e-4), and every
backend of the Predictor must give the same detections and the same mining maps.
"""

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from nanodet.data.image_io import read_image
from nanodet.data.transforms import stack_batch
from nanodet.deploy.export import export_openvino, inference_model, onnx_bytes, with_metadata
from nanodet.deploy.exported import read_metadata, read_spec
from nanodet.deploy.graph import class_level_maps
from nanodet.deploy.runtimes import RuntimeUnavailable, choose_backend, default_streams
from nanodet.deploy.spec import ModelSpec
from nanodet.errors import ExportError
from nanodet.evaluation.confusion import pairwise_iou
from nanodet.inference.predictor import Predictor
from nanodet.mining.uncertainty import aldd_scores, entropy_scores
from nanodet.utils.pipeline import overlapped
from nanodet.weights.checkpoint import save_pth

from .conftest import CONFIG_DIR, ROOT, randomized_model
from .test_predictor import assert_same_detections

ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

CONFIG = CONFIG_DIR / "nanodet-plus-m_320.yml"

# the tests share module fixtures (three CLI exports): one xdist worker runs them all, so they run once
pytestmark = pytest.mark.xdist_group("deploy")


def nanodet_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nanodet", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory, plus_cfg) -> Path:
    """Weights that score like a trained model: plenty of boxes above the thresholds to compare."""
    path = tmp_path_factory.mktemp("weights") / "plus.pth"
    save_pth(randomized_model(plus_cfg, seed=3, cls_bias=-3.0), path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, weights) -> dict[str, Path]:
    """The same weights as ONNX (batch 1), ONNX with a free batch, and OpenVINO IR, by the CLI."""
    out = tmp_path_factory.mktemp("export")
    files = {}
    for name, extra in (("onnx", []), ("dynamic", ["--dynamic-batch"]), ("xml", ["--format", "openvino"])):
        target = out / name / ("model.xml" if name == "xml" else "model.onnx")
        proc = nanodet_cli(
            "export", "--config", str(CONFIG), "--weights", str(weights), "--output", str(target), *extra
        )
        assert proc.returncode == 0, proc.stderr
        files[name] = target
        assert json.loads(proc.stdout.splitlines()[-1])["files"][0] == str(target.with_suffix(".onnx"))
    assert files["xml"].with_suffix(".bin").is_file()
    return files


@pytest.fixture(scope="module")
def batch(sample_images):
    torch_predictor = Predictor(CONFIG, None, backend="torch")
    images = [read_image(p) for p in sample_images]
    inputs, matrices = zip(*(torch_predictor.preprocess(img) for img in images))
    return {
        "images": images,
        "tensor": stack_batch([torch.from_numpy(x) for x in inputs]),
        "matrices": list(matrices),
        "sizes": [(img.shape[1], img.shape[0]) for img in images],
    }


def test_onnx_file_describes_itself(exported, plus_cfg):
    meta = read_metadata(exported["onnx"])
    assert json.loads(meta["class_names"]) == list(plus_cfg.class_names)
    assert json.loads(meta["input_size"]) == [320, 320]
    assert json.loads(meta["mean"]) == [103.53, 116.28, 123.675] and json.loads(meta["std"]) == [57.375, 57.12, 58.395]
    assert json.loads(meta["strides"]) == [8, 16, 32, 64] and meta["reg_max"] == "7"
    spec = read_spec(exported["xml"])  # the IR carries the same spec in its runtime info
    assert spec == read_spec(exported["onnx"]) and spec.num_classes == 80 and spec.graph_hw == (320, 320)
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "cls_logits"]
    assert session.get_inputs()[0].shape == [1, 3, 320, 320]
    dynamic = ort.InferenceSession(str(exported["dynamic"]), providers=["CPUExecutionProvider"])
    assert dynamic.get_inputs()[0].shape[0] == "batch"
    # the outputs declare their sizes (the exporter leaves the class count a symbol): checked before any run
    assert [o.shape for o in session.get_outputs()] == [[1, 2125, 4], [1, 2125, 80], [1, 2125, 80]]
    assert [o.shape for o in dynamic.get_outputs()] == [["batch", 2125, 4], ["batch", 2125, 80], ["batch", 2125, 80]]


def test_onnx_runtime_matches_pytorch_on_pictures(exported, weights, batch):
    """Raw outputs within 1e-4 (boxes in input pixels: 1e-3), same detections."""
    torch_p = Predictor(CONFIG, weights, backend="torch")
    expected = torch_p.run(batch["tensor"])
    session = ort.InferenceSession(str(exported["dynamic"]), providers=["CPUExecutionProvider"])
    boxes, scores, logits = session.run(None, {"images": batch["tensor"].numpy()})
    assert np.abs(scores - expected.scores.numpy()).max() < 1e-4
    assert np.abs(logits - expected.cls_logits.numpy()).max() < 1e-4
    assert np.abs(boxes - expected.boxes.numpy()).max() < 1e-3
    assert float(expected.scores.max()) > 0.3, "the weights should score something to compare"
    onnx_p = Predictor(None, exported["onnx"], backend="onnxruntime")  # batch-1 file: one image at a time
    ours = onnx_p.predict_batch(batch["tensor"], batch["matrices"], batch["sizes"])
    theirs = torch_p.predict_batch(batch["tensor"], batch["matrices"], batch["sizes"])
    assert sum(len(d) for d in theirs) > 0
    for a, b in zip(theirs, ours):
        assert_same_detections(a, b, score_tol=1e-4, box_tol=0.05)


@pytest.mark.parametrize(
    "source,backend",
    [("pth", "onnxruntime"), ("pth", "openvino"), ("dynamic", "onnxruntime"), ("dynamic", "openvino"), ("xml", "auto")],
)
def test_every_backend_gives_the_same_detections_and_mining_maps(exported, weights, batch, source, backend):
    reference = Predictor(CONFIG, weights, backend="torch")
    if source == "pth":
        other = Predictor(CONFIG, weights, backend=backend)
    else:
        other = Predictor(None, exported[source], backend=backend)
    assert other.backend == ("openvino" if backend == "auto" else backend)
    assert other.class_names == reference.class_names and other.input_wh == reference.input_wh
    ref_levels, ref_dets = reference.predict_batch_with_levels(batch["tensor"], batch["matrices"], batch["sizes"])
    levels, dets = other.predict_batch_with_levels(batch["tensor"], batch["matrices"], batch["sizes"])
    for a, b in zip(ref_dets, dets):
        assert_same_detections(a, b, score_tol=1e-3, box_tol=0.5)
    assert [lvl.shape for lvl in levels] == [lvl.shape for lvl in ref_levels]
    hw = tuple(batch["tensor"].shape[2:])
    for algorithm in (lambda lv: aldd_scores(lv, 80, hw), lambda lv: entropy_scores(lv, 80)):
        assert torch.allclose(algorithm(levels), algorithm(ref_levels), atol=1e-5)


def test_level_maps_are_the_heads_own_maps(plus_cfg, weights):
    """Per-level maps rebuilt from the flat class logits are the head's per-level class channels."""
    predictor = Predictor(plus_cfg, weights, backend="torch")
    x = torch.randn(2, 3, 320, 320)
    with torch.inference_mode():
        raw = predictor.model.forward_levels(x.contiguous(memory_format=torch.channels_last))
    rebuilt = class_level_maps(predictor.run(x).cls_logits, (320, 320), [8, 16, 32, 64])
    assert [r.shape[2:] for r in rebuilt] == [(40, 40), (20, 20), (10, 10), (5, 5)]
    for a, b in zip(raw, rebuilt):
        assert torch.allclose(a[:, :80], b, atol=1e-6)


def test_detect_runs_an_onnx_file_without_its_config(exported, weights, sample_images, tmp_path):
    """`nanodet detect --weights model.onnx` (no --config) reports what the PyTorch weights do."""
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sample_images:
        (folder / p.name).write_bytes(p.read_bytes())
    common = ["--conf", "0.3", "--workers", "0", "--no-progress", str(folder)]
    onnx = nanodet_cli("detect", "--weights", str(exported["dynamic"]), *common)
    pth = nanodet_cli("detect", "--config", str(CONFIG), "--weights", str(weights), "--backend", "torch", *common)
    assert onnx.returncode == 0 and pth.returncode == 0, onnx.stderr + pth.stderr
    assert "backend onnxruntime" in onnx.stderr and "backend torch" in pth.stderr
    a = [json.loads(line) for line in onnx.stdout.splitlines()]
    b = [json.loads(line) for line in pth.stdout.splitlines()]
    assert [r["file"] for r in a] == [r["file"] for r in b] and len(a) == len(sample_images)
    assert sum(len(r["detections"]) for r in a) > 0
    for ra, rb in zip(a, b):
        assert len(ra["detections"]) == len(rb["detections"])
        pairs = pair_by_iou(ra["detections"], rb["detections"])
        assert len(pairs) == len(ra["detections"])  # every detection has its counterpart
        for da, db, iou in pairs:
            assert iou > 0.99 and np.abs(np.subtract(da["bbox"], db["bbox"])).max() <= 0.5
            assert (da["class_id"], da["class_name"]) == (db["class_id"], db["class_name"])
            assert abs(da["score"] - db["score"]) <= 1e-3


def pair_by_iou(a: list[dict], b: list[dict]) -> list[tuple[dict, dict, float]]:
    """Detection records of two runs paired one to one by IoU, whatever their order: the most
    overlapping pairs first, those of one class before any of two (the same box may be detected
    as two classes), each detection in one pair at most, pairs of IoU 0 left out."""
    iou = pairwise_iou([d["bbox"] for d in a], [d["bbox"] for d in b])
    same_class = np.equal.outer([d["class_id"] for d in a], [d["class_id"] for d in b])
    order = np.argsort(-(iou + same_class), axis=None, kind="stable")
    pairs, used_a, used_b = [], set(), set()
    for i, j in zip(*np.unravel_index(order, iou.shape)):
        if iou[i, j] > 0 and i not in used_a and j not in used_b:
            pairs.append((a[i], b[j], float(iou[i, j])))
            used_a.add(i)
            used_b.add(j)
    return pairs


def rewrite_outputs(source: Path, target: Path, order=None, rename: dict[str, str] | None = None) -> Path:
    """``source`` with its graph's outputs put in another ``order`` (their names) and/or renamed."""
    import onnx

    proto = onnx.load(str(source))
    graph = proto.graph
    outputs = {o.name: o for o in graph.output}
    reordered = [outputs[name] for name in order or outputs]
    del graph.output[:]
    graph.output.extend(reordered)
    for old, new in (rename or {}).items():
        for node in graph.node:
            node.output[:] = [new if name == old else name for name in node.output]
        for output in graph.output:
            output.name = new if output.name == old else output.name
    target.write_bytes(proto.SerializeToString())
    return target


def test_outputs_are_taken_by_name_whatever_their_order(exported, batch, tmp_path):
    """A graph whose outputs come in another order (as another exporter may write them) gives the
    same detections and mining maps in ONNX Runtime and OpenVINO (the ONNX file and its IR)."""
    order = ["cls_logits", "boxes", "scores"]  # the scores where the boxes were: positions would mix them up
    reordered = rewrite_outputs(exported["dynamic"], tmp_path / "reordered.onnx", order)
    xml = export_openvino(reordered, tmp_path / "reordered.xml")
    session = ort.InferenceSession(str(reordered), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == order
    assert [o.get_any_name() for o in ov.Core().read_model(str(xml)).outputs] == order
    reference = Predictor(None, exported["dynamic"], backend="onnxruntime")
    args = (batch["tensor"], batch["matrices"], batch["sizes"])
    ref_levels, ref_dets = reference.predict_batch_with_levels(*args)
    assert sum(len(d) for d in ref_dets) > 0
    for path, backend in ((reordered, "onnxruntime"), (reordered, "openvino"), (xml, "openvino")):
        levels, dets = Predictor(None, path, backend=backend).predict_batch_with_levels(*args)
        for a, b in zip(ref_dets, dets, strict=True):
            assert_same_detections(a, b, score_tol=1e-4, box_tol=0.05)
        for a, b in zip(ref_levels, levels, strict=True):
            assert torch.allclose(a, b, atol=1e-4)


@pytest.fixture(scope="module")
def other_class_counts(tmp_path_factory, exported, plus_cfg) -> dict[str, Path]:
    """Graphs whose class count is not their metadata's: a real export of a 3-class model under
    the 80-class spec of CONFIG (ONNX and its IR), and the 80-class export under a 3-class spec."""
    import onnx

    out = tmp_path_factory.mktemp("other-classes")
    three = plus_cfg.with_classes(["circle", "square", "triangle"])
    fewer = out / "three-classes.onnx"
    exported_three = onnx_bytes(inference_model(three, None), ModelSpec.from_config(three))
    fewer.write_bytes(with_metadata(exported_three, ModelSpec.from_config(plus_cfg).to_metadata()))
    more = out / "eighty-classes.onnx"
    more.write_bytes(with_metadata(exported["dynamic"].read_bytes(), ModelSpec.from_config(three).to_metadata()))
    # as exports made before the outputs declared their sizes: the class count a symbol, known by a run
    symbolic = out / "three-classes-symbolic.onnx"
    proto = onnx.load_from_string(fewer.read_bytes())
    for output in proto.graph.output[1:]:
        for dim in output.type.tensor_type.shape.dim[1:]:
            dim.dim_param = "size"
    symbolic.write_bytes(proto.SerializeToString())
    session = ort.InferenceSession(str(symbolic), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[1].shape == ["batch", "size", "size"]
    xml = export_openvino(fewer, out / "three-classes.xml")
    return {"fewer": fewer, "fewer-xml": xml, "fewer-symbolic": symbolic, "more": more}


@pytest.mark.parametrize(
    ("graph", "backend", "classes"),
    [
        ("fewer", "onnxruntime", (3, 80)),
        ("fewer-symbolic", "onnxruntime", (3, 80)),
        ("fewer", "openvino", (3, 80)),
        ("fewer-xml", "openvino", (3, 80)),
        ("more", "onnxruntime", (80, 3)),
        ("more", "openvino", (80, 3)),
    ],
)
def test_a_graph_with_another_class_count_than_its_metadata_is_refused(other_class_counts, graph, backend, classes):
    path = other_class_counts[graph]
    has, named = classes
    with pytest.raises(ExportError) as err:
        Predictor(None, path, backend=backend)
    message = str(err.value)
    assert "\n" not in message
    # the declared shape, or where the graph declares no class count that of a run on a blank image
    batch = "1" if graph.endswith("symbolic") else r"\?"
    shapes = rf"output 'scores' is \[{batch}, (2125|\?), {has}\], expected \[{batch}, 2125, {named}\]: "
    assert re.match(re.escape(str(path)) + ": " + shapes, message), message
    assert f"{has} classes, but the metadata names {named} (class_names" in message


def test_detect_refuses_a_graph_with_another_class_count_in_one_line(other_class_counts, sample_images):
    path = other_class_counts["fewer"]
    proc = nanodet_cli("detect", "--weights", str(path), "--no-progress", str(sample_images[0]))
    assert proc.returncode == 2 and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {path}: output 'scores' is [?, 2125, 3], expected [?, 2125, 80]: 3 classes, "
        "but the metadata names 80 (class_names; export it again with its config)"
    ]
    assert "Traceback" not in proc.stderr


def test_a_graph_with_renamed_outputs_is_refused_naming_them(exported, tmp_path):
    renamed = rewrite_outputs(exported["dynamic"], tmp_path / "renamed.onnx", rename={"scores": "probabilities"})
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(ExportError) as err:
            Predictor(None, renamed, backend=backend)
        assert str(err.value) == (
            f"{renamed}: no output 'scores'; unexpected output 'probabilities' (its outputs: boxes, probabilities, "
            "cls_logits; a NanoDet graph gives boxes, scores, cls_logits)"
        )


def test_unusable_exports_and_backends_are_refused_clearly(exported, weights, tmp_path):
    with pytest.raises(RuntimeUnavailable, match="backend 'torch' needs PyTorch weights"):
        Predictor(None, exported["onnx"], backend="torch")
    with pytest.raises(RuntimeUnavailable, match="runs with backend 'openvino' only"):
        Predictor(None, exported["xml"], backend="onnxruntime")
    with pytest.raises(RuntimeUnavailable, match="unknown backend 'tensorrt'"):
        Predictor(CONFIG, weights, backend="tensorrt")
    foreign = tmp_path / "foreign.onnx"  # an ONNX file, but not one of ours: no NanoDet metadata
    foreign.write_bytes(with_metadata(exported["onnx"].read_bytes(), {"author": "someone"}))
    with pytest.raises(ExportError, match=r"foreign.onnx: not a NanoDet export \(metadata 'format' is None"):
        Predictor(None, foreign)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    proc = nanodet_cli("detect", "--weights", str(junk), str(tmp_path))
    assert proc.returncode == 2 and f"error: {junk}: not an ONNX model" in proc.stderr
    proc = nanodet_cli("detect", "--weights", str(weights), str(tmp_path))
    assert proc.returncode == 2 and "--config is needed with PyTorch weights" in proc.stderr


def test_int8_export_is_refused_with_its_reason(weights, tmp_path):
    out = tmp_path / "int8.onnx"
    proc = nanodet_cli("export", "--config", str(CONFIG), "--weights", str(weights), "--output", str(out), "--int8")
    assert proc.returncode == 2, proc.stderr
    assert "error: int8 export is not offered" in proc.stderr and "bench/results/HISTORY.md" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_auto_backend_is_torch_on_cuda_and_the_fastest_installed_on_cpu():
    assert choose_backend("auto", torch.device("cuda", 0)) == "torch"
    assert choose_backend("auto", torch.device("cpu")) == "onnxruntime"  # both installed here: the faster
    with pytest.raises(RuntimeUnavailable, match="runs on the CPU only here"):
        choose_backend("openvino", torch.device("cuda", 0))


class Rendezvous:
    """Wraps a runtime's graph call: each call waits inside until ``width`` calls are in at once,
    which lets every call through from then on. Calls that never meet wait ``timeout`` seconds
    once, then go on alone; ``met`` tells which happened. No clock decides the outcome: calls
    made one after the other can never meet, calls made at once always do."""

    def __init__(self, call, width: int, timeout: float) -> None:
        self.call, self.width, self.timeout = call, width, timeout
        self.cond = threading.Condition()
        self.inside = self.most = self.calls = 0
        self.met = self.gave_up = False

    def __call__(self, *args):
        with self.cond:
            self.calls += 1
            self.inside += 1
            self.most = max(self.most, self.inside)
            if self.inside >= self.width:
                self.met = True
                self.cond.notify_all()
            if not self.cond.wait_for(lambda: self.met or self.gave_up, timeout=self.timeout):
                self.gave_up = True
        try:
            return self.call(*args)
        finally:
            with self.cond:
                self.inside -= 1


def test_streams_run_batches_at_once_with_the_same_detections(weights, batch):
    """Two streams (one thread each): two batches are inside one ONNX Runtime session at once
    (each graph call waits until the other is in), and every batch gives what one stream gives,
    in order, whatever the batch size. One stream never has two in (the control)."""
    single = Predictor(CONFIG, weights, backend="onnxruntime", threads=2, streams=1)
    double = Predictor(CONFIG, weights, backend="onnxruntime", threads=2, streams=2)
    assert (single.streams, double.streams) == (1, 2)
    assert double.runtime.session.get_session_options().intra_op_num_threads == 1
    n = len(batch["sizes"])
    pieces = [slice(i, min(i + k, n)) for k in (1, 2) for i in range(0, n, k)] * 2  # batch sizes 1 and 2, twice

    def predict(p: Predictor, piece: slice):
        return p.predict_batch(batch["tensor"][piece], batch["matrices"][piece], batch["sizes"][piece])

    alone = single.runtime._infer = Rendezvous(single.runtime._infer, width=2, timeout=0.5)
    expected = [dets for _, dets in overlapped(lambda piece: predict(single, piece), pieces, single.streams)]
    assert alone.gave_up and not alone.met and alone.most == 1 and alone.calls == len(pieces)
    together = double.runtime._infer = Rendezvous(double.runtime._infer, width=2, timeout=120)
    got = [dets for _, dets in overlapped(lambda piece: predict(double, piece), pieces, double.streams)]
    assert together.met and not together.gave_up and together.most == 2 and together.calls == len(pieces)
    for want, have in zip(expected, got, strict=True):
        for a, b in zip(want, have, strict=True):
            assert_same_detections(a, b, score_tol=1e-4, box_tol=0.05)
    assert sum(len(d) for dets in got for d in dets) > 0


def test_openvino_runs_one_stream_and_says_so(weights, caplog):
    """OpenVINO with two threads on two requests of one compiled model hung in a benchmark run:
    it runs one batch at a time, and a requested stream count is reported as ignored."""
    with caplog.at_level("WARNING", logger="nanodet.inference.predictor"):
        predictor = Predictor(CONFIG, weights, backend="openvino", threads=2, streams=2)
    assert predictor.streams == 1
    assert "backend openvino runs one batch at a time: streams=2 ignored" in caplog.text


def test_default_streams_one_per_thread_for_onnxruntime_on_cpu_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [default_streams("onnxruntime", cpu, t) for t in (1, 2, 3, 8, 64)] == [1, 2, 3, 4, 4]
    assert default_streams("openvino", cpu, 2) == 1
    assert default_streams("torch", cpu, 8) == 1 and default_streams("torch", cuda, 8) == 1
