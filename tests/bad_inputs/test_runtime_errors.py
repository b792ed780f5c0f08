"""Failures while the task runs: no GPU (300102), non-finite loss (300201), out of memory (300103)."""

from __future__ import annotations

import pytest
import torch

from executor.failures import classify

from ..executor_helpers import run_start
from .checks import assert_fails_with
from .corpus import tiny_models, tiny_predict, tiny_training

NO_GPU, OUT_OF_MEMORY, NAN_LOSS = 300102, 300103, 300201


def test_training_gpu_asked_none_visible(tmp_path):
    in_dir = tiny_training(tmp_path / "in", gpu_count=1, gpu_id="0")
    out = tmp_path / "out"
    proc = run_start(in_dir, out, env={"CUDA_VISIBLE_DEVICES": ""})
    assert_fails_with(proc, out, NO_GPU, "config.yaml asks for 1 GPU(s) (gpu_id '0') but no GPU is visible")


def test_infer_gpu_asked_none_visible(tmp_path):
    in_dir = tiny_predict(tmp_path / "in", tiny_models(tmp_path / "models"), gpu_count=1, gpu_id="0")
    out = tmp_path / "out"
    proc = run_start(in_dir, out, env={"CUDA_VISIBLE_DEVICES": ""})
    assert_fails_with(proc, out, NO_GPU, "but no GPU is visible")
    assert not (out / "result.tsv").exists() and not (out / "infer-result.json").exists()


def test_absurd_learning_rate_is_a_nan_loss(tmp_path):
    """lr 1e30: the first update blows the weights up, the second step's loss is not finite.
    Training stops there, before a poisoned checkpoint or stage is written."""
    in_dir = tiny_training(tmp_path / "in", learning_rate=1e30)
    out = tmp_path / "out"
    fields = assert_fails_with(run_start(in_dir, out), out, NAN_LOSS, "(try a lower learning_rate)")
    assert "non-finite loss at epoch 1, step 2" in fields[5]
    assert not (out / "models" / "model_last.ckpt").exists()
    assert not (out / "models" / "result.yaml").exists()


# Out of memory cannot be caused for real on a CPU test machine: the classification of the
# exceptions torch and numpy raise is tested instead (the path start.py takes on any error).
@pytest.mark.parametrize(
    "err",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"),
        RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
        MemoryError("Unable to allocate 7.45 GiB for an array with shape (100000, 100000) and data type uint8"),
        MemoryError(),
    ],
    ids=["torch-cuda-oom", "cuda-runtime-oom", "numpy-host-oom", "bare-memory-error"],
)
def test_out_of_memory_classification(err):
    code, message = classify(err)
    assert code == OUT_OF_MEMORY
    assert message.startswith("out of memory") and message.endswith("(try a smaller batch_size_per_gpu)")
    assert "\n" not in message


def test_real_host_allocation_failure_is_out_of_memory():
    """A real MemoryError from an allocation far beyond any machine's memory."""
    import numpy as np

    with pytest.raises(MemoryError) as info:
        np.empty((1 << 62,), dtype=np.uint8)
    assert classify(info.value)[0] == OUT_OF_MEMORY
