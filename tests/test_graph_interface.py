"""An exported graph's input and outputs against the spec in its metadata: every way they can
differ is one line naming the file and the difference (real exported graphs: tests/test_deploy.py)."""

from __future__ import annotations

import pytest

from nanodet.config import load_config
from nanodet.deploy.interface import check_input, check_outputs, expected_shapes, prior_count
from nanodet.deploy.spec import ModelSpec
from nanodet.errors import ExportError

from .conftest import CONFIG_DIR

SPEC = ModelSpec.from_config(load_config(CONFIG_DIR / "nanodet-plus-m_320.yml"))  # 80 classes, 320x320
GOOD = {"boxes": ("batch", 2125, 4), "scores": ("batch", 2125, 80), "cls_logits": ("batch", 2125, 80)}


def refused(shapes, batch=None) -> str:
    with pytest.raises(ExportError) as err:
        check_outputs("m.onnx", SPEC, shapes, batch)
    message = str(err.value)
    assert "\n" not in message and message.startswith("m.onnx: ")
    return message


def test_the_prior_count_is_every_levels_cells():
    assert prior_count(SPEC) == 40 * 40 + 20 * 20 + 10 * 10 + 5 * 5 == 2125
    odd = ModelSpec(("a",), (100, 70), False, (0.0,) * 3, (1.0,) * 3, (8, 16, 32, 64), 7, 0.0, "")
    assert odd.graph_hw == (96, 128) and prior_count(odd) == 12 * 16 + 6 * 8 + 3 * 4 + 2 * 2
    assert expected_shapes(SPEC, 2)["scores"] == (2, 2125, 80)


def test_declared_shapes_with_free_dimensions_pass_and_order_does_not_matter():
    check_outputs("m.onnx", SPEC, dict(reversed(GOOD.items())))
    check_outputs("m.onnx", SPEC, {"boxes": None, "scores": (None, None, None), "cls_logits": ("b", "p", 80)})
    check_outputs("m.onnx", SPEC, {k: (3, *v[1:]) for k, v in GOOD.items()}, batch=3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"scores": ("batch", 2125, 3)},
            "output 'scores' is [?, 2125, 3], expected [?, 2125, 80]: 3 classes, ",
        ),
        ({"cls_logits": (1, 2125, 81)}, "output 'cls_logits' is [1, 2125, 81], expected [?, 2125, 80]: 81 classes"),
        ({"boxes": (1, 2125, 5)}, "output 'boxes' is [1, 2125, 5], expected [?, 2125, 4]: 5 numbers per box"),
        ({"scores": (1, 3500, 80)}, "3500 prior cells, where a 320x320 input at strides [8, 16, 32, 64] has 2125"),
        ({"scores": (2125, 80)}, "output 'scores' has rank 2 ([2125, 80]), expected [?, 2125, 80]"),
        ({"boxes": (1, 1, 2125, 4)}, "output 'boxes' has rank 4 ([1, 1, 2125, 4]), expected [?, 2125, 4]"),
    ],
)
def test_a_shape_that_differs_names_the_output_and_the_difference(change, message):
    assert message in refused(GOOD | change)


def test_missing_extra_and_renamed_outputs_are_named():
    assert refused({"boxes": GOOD["boxes"], "scores": GOOD["scores"]}) == (
        "m.onnx: no output 'cls_logits' (its outputs: boxes, scores; a NanoDet graph gives boxes, scores, cls_logits)"
    )
    assert refused(GOOD | {"embedding": ("batch", 96)}).startswith("m.onnx: unexpected output 'embedding' (its")
    renamed = {"boxes": GOOD["boxes"], "probs": GOOD["scores"], "cls_logits": GOOD["cls_logits"]}
    assert refused(renamed).startswith("m.onnx: no output 'scores'; unexpected output 'probs' (its outputs: boxes, ")
    assert "no output 'boxes', 'scores', 'cls_logits' (its outputs: none;" in refused({})


def test_a_run_whose_arrays_differ_is_refused():
    """What a graph leaves free is checked on the arrays of each run: the batch too."""
    assert "3 classes" in refused({"boxes": (2, 2125, 4), "scores": (2, 2125, 3), "cls_logits": (2, 2125, 3)}, 2)
    shapes = {k: (4, *v[1:]) for k, v in GOOD.items()}
    assert "output 'boxes' is [4, 2125, 4], expected [2, 2125, 4]: 4 images for a batch of another size" in refused(
        shapes, 2
    )


def test_the_input_is_one_image_batch_of_the_spec_size():
    assert check_input("m.onnx", SPEC, ["images"], ["batch", 3, 320, 320]) == (320, 320)
    assert check_input("m.onnx", SPEC, ["images"], [1, 3, "h", "w"]) == (320, 320)  # free: the spec's size
    assert check_input("m.xml", SPEC, ["images"], None) == (320, 320)
    cases = [
        (
            ["images", "sizes"],
            [1, 3, 320, 320],
            "m.onnx: the graph has 2 inputs (images, sizes); a NanoDet",
        ),
        (["images"], [1, 320, 320], "m.onnx: input 'images' is [1, 320, 320], expected [N, 3, H, W]"),
        (["images"], [1, 1, 320, 320], "m.onnx: input 'images' is [1, 1, 320, 320], expected [N, 3, H, W]"),
        (["images"], [1, 3, 416, 416], "input 'images' is [1, 3, 416, 416], but the metadata's input_size [320, 320]"),
    ]
    for names, shape, message in cases:
        with pytest.raises(ExportError) as err:
            check_input("m.onnx", SPEC, names, shape)
        assert message in str(err.value)
