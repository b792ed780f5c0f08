"""Training with ``data.train.multi_scale``: batches of varying size go through the whole loop."""

from pathlib import Path

import torch

from nanodet.engine.run import train

from .conftest import synthetic_training_config


def test_training_with_multi_scale_runs_on_varying_batch_sizes(tmp_path: Path, monkeypatch):
    cfg = synthetic_training_config(
        tmp_path / "data",
        train_images=16,
        val_images=4,
        input_size=(96, 96),
        epochs=1,
        batch_size=4,
        data={"train": {"multi_scale": [0.6, 1.4]}},
    )
    assert cfg.data.train.multi_scale == (0.6, 1.4)
    seen: list[tuple[int, int]] = []
    from nanodet.model.detector import NanoDet

    forward_train = NanoDet.forward_train

    def recording(self, images: torch.Tensor, epoch: int):
        seen.append(tuple(images.shape[2:]))
        return forward_train(self, images, epoch)

    monkeypatch.setattr(NanoDet, "forward_train", recording)
    state = train(cfg, work_dir=tmp_path / "work", progress=False, device="cpu")
    assert state.epoch == 1 and len(state.evaluations) == 1
    assert len(seen) == 4 and len(set(seen)) > 1  # four batches, not all of one size
    assert all(h % 32 == 0 and w % 32 == 0 and 64 <= h <= 160 and 64 <= w <= 160 for h, w in seen)
