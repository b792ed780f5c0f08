"""Batched prediction equals one-by-one prediction; boxes map back to the original image."""

import numpy as np
import pytest
import torch

from nanodet.data.image_io import read_image
from nanodet.data.synthetic import synthetic_image
from nanodet.inference.predictor import Predictor


@pytest.fixture(scope="module")
def images(sample_images):
    rng = np.random.default_rng(0)
    synthetic = [synthetic_image(rng, size=size)[0] for size in [(640, 480), (300, 500), (1000, 250)]]
    return [read_image(p) for p in sample_images] + synthetic


@pytest.fixture(scope="module")
def predictor(plus_cfg, plus_weights):
    return Predictor(plus_cfg, plus_weights, optimize=True, backend="torch")


def assert_same_detections(a, b, score_tol=1e-4, box_tol=1e-3):
    """Equal detections up to float noise; near-tied scores may swap order, so match by content."""
    assert len(a) == len(b)
    used = set()
    for box, score, label in zip(a.boxes, a.scores, a.labels):
        cost = np.abs(b.boxes - box).max(axis=1) + np.abs(b.scores - score) + 1e9 * (b.labels != label)
        j = int(np.argmin(cost + 1e9 * np.isin(np.arange(len(b)), list(used))))
        assert b.labels[j] == label and abs(b.scores[j] - score) <= score_tol
        np.testing.assert_allclose(b.boxes[j], box, atol=box_tol)
        used.add(j)


def test_batch_equals_single(predictor, images):
    inputs, _ = zip(*(predictor.preprocess(img) for img in images))
    batch_out = predictor.forward(torch.from_numpy(np.stack(inputs)))
    for i, x in enumerate(inputs):
        single_out = predictor.forward(torch.from_numpy(x)[None])
        assert (single_out[0] - batch_out[i]).abs().max() < 1e-4
    batch = predictor.predict(images)
    assert sum(len(d) for d in batch) > 0, "weights should produce detections to compare"
    for img, dets in zip(images, batch):
        # boxes are in original pixels (up to 4x the input scale): 1e-3 px is float32 noise
        assert_same_detections(predictor.predict([img])[0], dets)


def test_boxes_inside_original_image_and_sorted(predictor, images):
    for img, dets in zip(images, predictor.predict(images)):
        h, w = img.shape[:2]
        assert len(dets) <= 100
        assert (dets.boxes[:, [0, 2]] >= 0).all() and (dets.boxes[:, [0, 2]] <= w).all()
        assert (dets.boxes[:, [1, 3]] >= 0).all() and (dets.boxes[:, [1, 3]] <= h).all()
        assert (np.diff(dets.scores) <= 0).all()
        assert (dets.scores >= 0.05).all()


def test_fused_model_gives_same_detections(plus_cfg, plus_weights, images):
    plain = Predictor(plus_cfg, plus_weights, optimize=False, backend="torch")
    fused = Predictor(plus_cfg, plus_weights, optimize=True, backend="torch")
    x = torch.randn(2, 3, 320, 320)
    assert (plain.forward(x) - fused.forward(x)).abs().max() < 1e-4
    for a, b in zip(plain.predict(images), fused.predict(images)):
        assert_same_detections(a, b)


def test_decoded_box_lands_where_the_distribution_points(plus_cfg):
    """A hand-made head output decodes to a known box in original-image pixels."""
    from nanodet.data.transforms import resize_matrix
    from nanodet.inference.postprocess import postprocess

    head_classes, reg_max = 80, 7
    priors = torch.tensor([[64.0, 96.0, 16.0, 16.0]])
    preds = torch.full((1, 1, head_classes + 4 * (reg_max + 1)), -20.0)
    preds[0, 0, 5] = 5.0  # class 5, score sigmoid(5)
    for side, bin_ in enumerate([2, 1, 3, 4]):  # l, t, r, b in strides → 32, 16, 48, 64 px
        preds[0, 0, head_classes + side * 8 + bin_] = 30.0
    matrix = resize_matrix((640, 640), (320, 320), keep_ratio=False)  # original is 2× the input
    [dets] = postprocess(preds, priors, head_classes, reg_max, (320, 320), [matrix], [(640, 640)])
    assert dets.labels.tolist() == [5]
    np.testing.assert_allclose(dets.boxes[0], [2 * (64 - 32), 2 * (96 - 16), 2 * (64 + 48), 2 * (96 + 64)], atol=1e-3)
    assert abs(dets.scores[0] - torch.sigmoid(torch.tensor(5.0)).item()) < 1e-6


@pytest.mark.parametrize("failing", ["onnx_bytes", "open_runtime"])
def test_auto_backend_falls_back_to_torch_when_the_onnx_path_fails(
    plus_cfg, plus_weights, images, predictor, monkeypatch, caplog, failing, tmp_path
):
    """auto: an export or session failure costs speed, not the task; a named backend still fails."""
    import nanodet.deploy.export as export_module
    import nanodet.inference.predictor as module

    def broken(*args, **kwargs):
        raise RuntimeError(f"{failing} broke\nsecond line")

    monkeypatch.setenv("NANODET_CACHE_DIR", str(tmp_path / "cache"))  # no earlier export of these weights to use
    monkeypatch.setattr(export_module if failing == "onnx_bytes" else module, failing, broken)
    monkeypatch.setattr(module, "choose_backend", lambda requested, device: "onnxruntime")
    fallback = Predictor(plus_cfg, plus_weights, backend="auto")
    assert fallback.backend == "torch"
    assert f"backend auto: onnxruntime could not run this model (RuntimeError: {failing} broke): using torch" in (
        caplog.text
    )
    for a, b in zip(fallback.predict(images[:2]), predictor.predict(images[:2])):
        assert_same_detections(a, b)
    with pytest.raises(RuntimeError, match=f"{failing} broke"):
        Predictor(plus_cfg, plus_weights, backend="onnxruntime")
