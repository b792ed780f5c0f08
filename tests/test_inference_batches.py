"""Images on disk → padded batches, decoded in threads: the order, the arrays and the failures
are those of decoding in the calling thread."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nanodet.data.inference_dataset import ImageFileDataset, inference_batches
from nanodet.data.preprocess import preprocess
from nanodet.data.synthetic import synthetic_image

MEAN, STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    paths = []
    for i in range(11):
        path = folder / f"{i:02d}.jpg"
        if i in (4, 9):
            path.write_bytes(b"\xff\xd8 not a jpeg")  # fails in its batch, the rest of the batch goes on
        else:
            size = (int(rng.integers(200, 700)), int(rng.integers(150, 500)))
            cv2.imwrite(str(path), synthetic_image(rng, size=size)[0])
        paths.append(path)
    return paths


@pytest.mark.parametrize("workers", [1, 3])
def test_thread_workers_give_the_batches_of_the_calling_thread(paths, workers: int) -> None:
    dataset = ImageFileDataset(paths, (320, 320), True, MEAN, STD, keep_original=True)
    inline = list(inference_batches(dataset, 4, 0))
    threaded = list(inference_batches(dataset, 4, workers))
    assert (
        [b.paths for b in threaded]
        == [b.paths for b in inline]
        == [[paths[i] for i in chunk] for chunk in ([0, 1, 2, 3], [5, 6, 7], [8, 10])]
    )
    assert [[p.name for p, _ in b.failed] for b in threaded] == [[], ["04.jpg"], ["09.jpg"]]
    assert all("not a decodable image" in reason for b in threaded for _, reason in b.failed)
    for a, b in zip(threaded, inline):
        assert a.images.dtype == np.float32 and a.images.shape == (len(a.paths), 3, 320, 320)
        assert np.array_equal(a.images, b.images) and a.sizes == b.sizes
        for image, original, matrix, path in zip(a.images, a.originals, a.warp_matrices, a.paths):
            expected, expected_matrix = preprocess(cv2.imread(str(path)), (320, 320), True, MEAN, STD)
            assert np.array_equal(image, expected) and np.array_equal(matrix, expected_matrix)
            assert original.shape[:2] == cv2.imread(str(path)).shape[:2]


def test_a_batch_of_failures_only_has_no_images(tmp_path) -> None:
    bad = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    bad[0].write_bytes(b"junk")
    (batch,) = inference_batches(ImageFileDataset(bad, (64, 64), False, MEAN, STD), 8, 2)
    assert batch.images is None and batch.paths == [] and [p for p, _ in batch.failed] == bad
