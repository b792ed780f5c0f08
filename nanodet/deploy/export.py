"""Export the inference graph (:mod:`.graph`) to ONNX, and from ONNX to OpenVINO IR.

The ONNX file takes ``images`` ``[N, 3, H, W]`` (normalised as :mod:`.spec` describes; ``N``
fixed at 1 unless exported with ``dynamic_batch``) and gives ``boxes``, ``scores`` and
``cls_logits``; BatchNorm is folded into the convolutions first. The model's
:class:`~.spec.ModelSpec` (class names, input size, mean/std, strides, ...) is stored as
ONNX metadata, so the file is usable on its own. Files are written atomically.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

from ..config import NanoDetConfig
from ..model import build_model
from ..model.detector import NanoDet
from ..model.fuse import fuse_model
from ..utils.io import atomic_write
from ..weights.checkpoint import load_weights
from .exported import read_metadata, require
from .graph import InferenceGraph
from .interface import OUTPUT_NAMES
from .spec import ModelSpec

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "images"


def inference_model(cfg: NanoDetConfig, weights: str | Path | None, fuse: bool = True) -> NanoDet:
    """The eval-mode inference model (no aux branch), BN folded into the convolutions unless
    ``fuse`` is False, with ``weights`` loaded strictly: weights that do not fit are an error,
    never a random head."""
    model = build_model(cfg.model.arch, with_aux=False)
    if weights is not None:
        load_weights(model, weights, log, strict=True)
    else:
        log.warning("no weights given: the model has random weights")
    model.eval()
    return fuse_model(model) if fuse else model


def onnx_bytes(
    model: NanoDet, spec: ModelSpec, dynamic_batch: bool = True, extra_metadata: dict[str, str] | None = None
) -> bytes:
    """The serialized ONNX graph of ``model`` (eval mode, on the CPU) with ``spec`` (and
    ``extra_metadata``, e.g. its export key) as metadata."""
    graph = InferenceGraph(model, spec.graph_hw).eval()
    example = torch.zeros(1, 3, *spec.graph_hw)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript-based exporter: ~1 s, no extra packages; the dynamo exporter takes far
        # longer and needs onnxscript. Its deprecation notice is not the user's business.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    # the model's own prior and class counts (not the spec's: a model that differs from its spec
    # must be refused by the runtimes' check, not hidden by its declared shapes)
    priors, classes = graph.priors.shape[0], graph.num_classes
    sizes = {"boxes": (None, priors, 4), "scores": (None, priors, classes), "cls_logits": (None, priors, classes)}
    return with_metadata(buffer.getvalue(), spec.to_metadata() | (extra_metadata or {}), output_sizes=sizes)


def with_metadata(
    model_bytes: bytes, metadata: dict[str, str], output_sizes: dict[str, tuple[int | None, ...]] | None = None
) -> bytes:
    """``model_bytes`` with ``metadata`` in its ``metadata_props`` (needs the ``onnx`` package).
    ``output_sizes``: sizes for the outputs' declared shapes (None: a dimension left as it is).
    The exporter leaves ``scores`` and ``cls_logits`` as ``[batch, symbol, symbol]``, which ONNX
    Runtime can check against the spec only by running the graph."""
    onnx = require("onnx", "writing ONNX metadata")
    proto = onnx.load_from_string(model_bytes)
    for output in proto.graph.output if output_sizes else []:
        dims = output.type.tensor_type.shape.dim
        if output.name in output_sizes and len(dims) == len(output_sizes[output.name]):
            for dim, size in zip(dims, output_sizes[output.name]):
                if size is not None:  # the batch stays as exported
                    dim.dim_value = size
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "nanodet-ymir"
    return proto.SerializeToString()


def export_onnx(
    cfg: NanoDetConfig, weights: str | Path | None, output: str | Path, dynamic_batch: bool = False
) -> Path:
    """Write ``output`` (an ``.onnx`` file) for ``cfg`` with ``weights``."""
    return write_onnx(inference_model(cfg, weights), cfg, output, dynamic_batch)


def write_onnx(
    model: NanoDet,
    cfg: NanoDetConfig,
    output: str | Path,
    dynamic_batch: bool = True,
    weights_file: str | Path | None = None,
) -> Path:
    """Write ``output`` for a model as it is (a training model too: a BN-fused CPU copy without
    its aux branch is exported; ``model`` itself is left untouched). ``weights_file``: the file
    the model's weights were saved to; its export key goes into the metadata, so that a
    predictor given that file uses this graph instead of exporting it again."""
    from .export_cache import KEY, export_key, file_digest

    if model.training or model.has_aux or next(model.parameters()).device.type != "cpu":
        model = fuse_model(copy.deepcopy(model).drop_aux().cpu().eval())
    extra = {KEY: export_key(file_digest(weights_file), cfg, dynamic_batch)} if weights_file else None
    data = onnx_bytes(model, ModelSpec.from_config(cfg), dynamic_batch=dynamic_batch, extra_metadata=extra)
    output = Path(output)
    atomic_write(output, lambda f: f.write(data))
    return output


def export_openvino(onnx_path: str | Path, output: str | Path) -> Path:
    """Convert an exported ONNX file to OpenVINO IR: ``output`` (``.xml``) and its ``.bin``.
    The NanoDet metadata goes along in the IR's runtime info."""
    ov = require("openvino", "OpenVINO export")
    output = Path(output).with_suffix(".xml")
    output.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    for key, value in read_metadata(onnx_path).items():
        model.set_rt_info(value, ["nanodet", key])
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / output.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), output.with_suffix(".bin"))
        os.replace(staged, output)
    return output
