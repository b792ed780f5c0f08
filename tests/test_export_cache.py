"""An ONNX export is made once per weights, config and code, and never used for anything else."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import nanodet.deploy.export as export_module
from nanodet.deploy.export import inference_model, write_onnx
from nanodet.deploy.export_cache import KEY, STAGE_GRAPH, key_of
from nanodet.inference.predictor import Predictor
from nanodet.weights.checkpoint import save_pth

from .conftest import randomized_model

pytest.importorskip("onnxruntime")


@pytest.fixture
def exports(monkeypatch) -> list[str]:
    """Counts the exports the predictor makes (each one's export key)."""
    made: list[str] = []
    real = export_module.onnx_bytes

    def counting(model, spec, dynamic_batch=True, extra_metadata=None):
        made.append((extra_metadata or {}).get(KEY, ""))
        return real(model, spec, dynamic_batch, extra_metadata)

    monkeypatch.setattr(export_module, "onnx_bytes", counting)
    return made


def detect(predictor: Predictor, images: list[Path]) -> list[np.ndarray]:
    import cv2

    return [np.c_[d.boxes, d.scores, d.labels] for d in predictor.predict([cv2.imread(str(p)) for p in images])]


def test_the_second_predictor_uses_the_cached_export(
    plus_cfg, plus_weights, sample_images, tmp_path, exports, monkeypatch
):
    monkeypatch.setenv("NANODET_CACHE_DIR", str(tmp_path / "cache"))
    first = Predictor(plus_cfg, plus_weights, backend="onnxruntime")
    second = Predictor(plus_cfg, plus_weights, backend="onnxruntime")
    assert len(exports) == 1 and exports[0]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{exports[0]}.onnx"]
    for a, b in zip(detect(first, sample_images[:2]), detect(second, sample_images[:2])):
        np.testing.assert_array_equal(a, b)


def test_other_weights_or_config_never_use_a_cached_export(plus_cfg, plus_weights, tmp_path, exports, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NANODET_CACHE_DIR", str(cache))
    Predictor(plus_cfg, plus_weights, backend="onnxruntime")
    other = tmp_path / "other.pth"
    save_pth(randomized_model(plus_cfg, seed=1, cls_bias=-7.5), other)
    Predictor(plus_cfg, other, backend="onnxruntime")  # other weights: exported again
    narrower = plus_cfg.merged({"data": {"val": {"keep_ratio": not plus_cfg.data.val.keep_ratio}}})
    Predictor(narrower, plus_weights, backend="onnxruntime")  # another config: exported again
    assert len(set(exports)) == 3
    # a file under the right name whose key differs (copied over, stale) is not used either
    key = exports[0]
    shutil.copy(cache / f"{exports[1]}.onnx", cache / f"{key}.onnx")
    Predictor(plus_cfg, plus_weights, backend="onnxruntime")
    assert exports[-1] == key and len(exports) == 4
    assert key_of(cache / f"{key}.onnx") == key  # and the cache now holds the right one again


def test_a_stage_graph_is_used_for_its_own_weights_only(plus_cfg, tmp_path, exports, monkeypatch):
    """A training stage writes nanodet_model.onnx keyed by its weights: infer on those weights
    runs that file (no export); once the weights change, it exports again."""
    (tmp_path / "a-file").write_text("")  # the cache folder cannot be made (under a file)
    monkeypatch.setenv("NANODET_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    stage = tmp_path / "epoch_3"
    stage.mkdir()
    model = randomized_model(plus_cfg, seed=2, cls_bias=-7.5)
    save_pth(model, stage / "nanodet_model.pth")
    write_onnx(model, plus_cfg, stage / STAGE_GRAPH, dynamic_batch=True, weights_file=stage / "nanodet_model.pth")
    exports.clear()  # the stage's own export, made by training
    image = torch.zeros(1, 3, 320, 320)
    predictor = Predictor(plus_cfg, stage / "nanodet_model.pth", backend="onnxruntime")
    assert exports == []
    reference = inference_model(plus_cfg, stage / "nanodet_model.pth")
    scores = torch.as_tensor(predictor.run(image).scores)
    torch.testing.assert_close(scores, reference_scores(reference, image), atol=1e-4, rtol=0)
    save_pth(randomized_model(plus_cfg, seed=3, cls_bias=-7.5), stage / "nanodet_model.pth")
    Predictor(plus_cfg, stage / "nanodet_model.pth", backend="onnxruntime")
    assert len(exports) == 1  # the stage graph belongs to the old weights: not used
    assert (tmp_path / "a-file").is_file()  # an unwritable cache is no error


def reference_scores(model, image: torch.Tensor) -> torch.Tensor:
    from nanodet.deploy.graph import InferenceGraph

    with torch.no_grad():
        return InferenceGraph(model, (320, 320))(image)[1]


def test_no_home_directory_means_no_cache_not_a_failure(plus_cfg, plus_weights, exports, monkeypatch):
    """docker run --user <uid without a passwd entry>: no HOME, no home directory to find."""
    from pathlib import Path as PathClass

    def no_home() -> PathClass:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("NANODET_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(PathClass, "home", staticmethod(no_home))
    predictor = Predictor(plus_cfg, plus_weights, backend="onnxruntime")
    assert predictor.backend == "onnxruntime" and len(exports) == 1


def damaged_stage_graph(cfg, weights: Path) -> Path:
    """A stage graph beside ``weights`` with their export key and ``cfg``'s spec in its metadata,
    but the graph of a model with one class fewer (as a file overwritten by another export)."""
    from nanodet.deploy.export_cache import export_key, file_digest
    from nanodet.deploy.spec import ModelSpec

    fewer = cfg.with_classes(list(cfg.class_names)[:-1])
    key = export_key(file_digest(weights), cfg, dynamic_batch=True)
    data = export_module.onnx_bytes(inference_model(fewer, None), ModelSpec.from_config(cfg), extra_metadata={KEY: key})
    path = weights.parent / STAGE_GRAPH
    path.write_bytes(data)
    assert key_of(path) == key
    return path


def test_a_stage_graph_that_does_not_fit_its_model_is_not_used(plus_cfg, tmp_path, exports, monkeypatch, caplog):
    """Its key names these weights, its outputs another class count: a warning, then a graph of
    the weights themselves (a named backend included), never the other graph's labels."""
    monkeypatch.setenv("NANODET_CACHE_DIR", str(tmp_path / "cache"))
    model = randomized_model(plus_cfg, seed=2, cls_bias=-7.5)
    save_pth(model, tmp_path / "nanodet_model.pth")
    stage_graph = damaged_stage_graph(plus_cfg, tmp_path / "nanodet_model.pth")
    exports.clear()
    image = torch.zeros(1, 3, 320, 320)
    for backend in ("onnxruntime", "openvino"):
        predictor = Predictor(plus_cfg, tmp_path / "nanodet_model.pth", backend=backend)
        assert predictor.backend == backend
        scores = torch.as_tensor(predictor.run(image).scores)
        reference = inference_model(plus_cfg, tmp_path / "nanodet_model.pth")
        torch.testing.assert_close(scores, reference_scores(reference, image), atol=1e-4, rtol=0)
    assert f"not using the ONNX export {stage_graph} ({stage_graph}: output 'scores' is [" in caplog.text
    assert "79 classes, but the metadata names 80" in caplog.text
    assert len(exports) == 1  # exported once; the second predictor used the cached export


def test_infer_and_mining_run_past_a_stage_graph_that_does_not_fit(tmp_path):
    """The executor's path: /in/models as training left it, its nanodet_model.onnx overwritten by
    a graph of another class count under the right key; a task with ``backend: onnxruntime``
    writes what it writes without that file, and says which file it did not use."""
    from executor.workspace import make_predict_workspace
    from nanodet.config import load_config

    from .executor_helpers import assert_success, edit_yaml, run_start, trained_models

    models = trained_models(tmp_path / "models")
    results = {}
    for damaged in (False, True):
        in_dir = make_predict_workspace(tmp_path / f"in{damaged}", models, candidates=3, workers_per_gpu=0)
        edit_yaml(in_dir / "config.yaml", backend="onnxruntime")
        if damaged:
            damaged_stage_graph(
                load_config(in_dir / "models" / "train_cfg.yml"), in_dir / "models" / "nanodet_model_best.pth"
            )
        out = tmp_path / f"out{damaged}"
        proc = run_start(in_dir, out, env={"NANODET_CACHE_DIR": str(tmp_path / f"cache{damaged}")})
        assert_success(proc, out)
        results[damaged] = [(out / name).read_bytes() for name in ("infer-result.json", "result.tsv")]
        if damaged:
            assert "not using the ONNX export " in proc.stdout + proc.stderr
            assert "nanodet_model.onnx: output 'scores' is [" in proc.stdout + proc.stderr
    assert results[True] == results[False]
    assert b'"class_name"' in results[True][0], "the model should detect something to compare"
