"""The ONNX metadata reader (no ``onnx`` import) against the onnx package's own parse."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from nanodet.deploy.onnx_metadata import NotOnnx, read_onnx_metadata  # noqa: E402


def model_bytes(metadata: dict[str, str], weights: int = 1000) -> bytes:
    """A small real ONNX model with a weight initializer (so the graph field is large and skipped)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weights])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weights])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, weights], [0.5] * weights)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, producer_name="test", doc_string="a model")
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


@pytest.mark.parametrize(
    "metadata",
    [{}, {"a": "1"}, {"format": "nanodet", "class_names": '["ça", "猫"]', "empty": "", "long": "x" * 70000}],
)
def test_metadata_is_what_onnx_reads(metadata):
    data = model_bytes(metadata)
    parsed = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert parsed == metadata
    assert read_onnx_metadata(io.BytesIO(data)) == metadata


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a protobuf at all",
        b"\x0b\x0c",  # group wire types: never in ONNX
        model_bytes({"a": "1"})[:-7],  # truncated inside the last field
        helper.make_model(helper.make_graph([], "g", [], []), producer_name="x").SerializeToString()[:12],
    ],
)
def test_foreign_or_truncated_bytes_are_refused(data):
    with pytest.raises(NotOnnx):
        read_onnx_metadata(io.BytesIO(data))


def test_detect_with_a_cached_export_does_not_import_onnx(tmp_path):
    """Reading an export's metadata was the only use of the onnx package in a run that finds
    its export: it cost ~1.4 s of start-up."""
    code = (
        "import sys, io; from nanodet.deploy.onnx_metadata import read_onnx_metadata; "
        f"print(read_onnx_metadata(io.BytesIO({model_bytes({'k': 'v'})!r}))); "
        "import nanodet.inference.predictor, nanodet.inference.detect, nanodet.cli; print('onnx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["{'k':", "'v'}", "False"]
