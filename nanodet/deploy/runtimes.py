"""Runtimes that execute the inference graph, one interface for all: ``run(images)`` takes a
pre-processed ``[N, 3, H, W]`` float batch and gives :class:`GraphOutputs`.

- ``torch`` (:mod:`.torch_runtime`): the BN-fused PyTorch model, channels-last on the CPU,
  ``inference_mode``; any device, any input size; tensors on its device.
- ``onnxruntime``: an ONNX graph (an exported file, or exported in memory from PyTorch weights).
- ``openvino``: the same ONNX graph (or OpenVINO IR) compiled by OpenVINO for the CPU, one
  compiled model per batch size.

The ONNX runtimes take and give NumPy arrays; this module does not import PyTorch, so a
predictor on an exported graph runs without it. They take the graph's outputs by name and check
their shapes against the spec of the graph's metadata, when opened and on every run
(:mod:`.interface`): a graph of another class count is an error naming the file, never wrong labels.

The ONNX runtimes take batches of the graph's input size, ``N`` free when the graph was
exported with a dynamic batch, else one image at a time. ONNX Runtime runs ``streams`` batches
at once when called from that many threads (each forward on ``threads // streams`` threads): on
these CPUs two one-thread forwards give more images per second than one two-thread forward (a
forward's threads wait on each other at every layer). OpenVINO runs one batch at a time: two
threads each inferring on its own request of one compiled model hung for good in a benchmark
run (both waiting inside OpenVINO's input copy), so it gets no streams.
"""

from __future__ import annotations

import importlib.util
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .interface import OUTPUT_NAMES, check_input, check_outputs, normalise
from .spec import ModelSpec

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
# The CPU default is the first one installed. ONNX Runtime first: with its streams it ran
# `nanodet detect` 14 % faster than OpenVINO's one stream end to end here (AVX2, 2 cores,
# bench/detect.py; 3-4 % faster than OpenVINO with streams, before those were dropped), and it
# is what the image installs. OpenVINO's forward alone was the faster one on an AVX-512
# machine (Plus-m 416, batch 16, 2 threads: 86.0 against 64.7 images/s), one stream each.
CPU_PREFERENCE = ("onnxruntime", "openvino", "torch")
_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}


class RuntimeUnavailable(RuntimeError):
    """A backend that is not installed or cannot run here; names the package to install."""


@dataclass
class GraphOutputs:
    """What the graph gives for a batch: NumPy arrays from the ONNX runtimes, tensors on the
    model's device from the PyTorch one."""

    boxes: Any  # [N, P, 4] in input pixels
    scores: Any  # [N, P, C] class probabilities
    cls_logits: Any  # [N, P, C]


def installed_backends() -> list[str]:
    return [b for b in BACKENDS if importlib.util.find_spec(_MODULES[b]) is not None]


def choose_backend(requested: str, device: str) -> str:
    """``auto`` → torch on CUDA, else the fastest installed CPU backend; a named backend is
    checked: installed, and on the CPU unless it is torch. ``device``: ``cpu``, ``cuda:1``, ..."""
    on_cpu = device_type(device) == "cpu"
    if requested == "auto":
        if not on_cpu:
            return "torch"
        installed = installed_backends()
        return next(b for b in CPU_PREFERENCE if b in installed)
    if requested not in BACKENDS:
        raise RuntimeUnavailable(f"unknown backend {requested!r} (one of: auto, {', '.join(BACKENDS)})")
    if requested not in installed_backends():
        raise RuntimeUnavailable(f"backend {requested!r} is not installed: pip install 'nanodet-ymir[{requested}]'")
    if requested != "torch" and not on_cpu:
        raise RuntimeUnavailable(f"backend {requested!r} runs on the CPU only here; use backend 'torch' on {device}")
    return requested


def device_type(device) -> str:
    """``cpu``, ``cuda``, ... of a device name (``cuda:1``) or ``torch.device``."""
    return str(device).split(":")[0]


def default_streams(backend: str, device: str, threads: int) -> int:
    """Forwards run at once: for ONNX Runtime on the CPU one per thread, at most 4 (each of
    ``threads // streams`` threads); one for torch (its ops share one intra-op pool) and OpenVINO."""
    if backend != "onnxruntime" or device_type(device) != "cpu":
        return 1
    return max(1, min(threads, 4))


class ExportedRuntime:
    """What the ONNX runtimes share: the graph's interface checked against the spec of its
    metadata when opened (:mod:`.interface`), outputs taken by name, each run's arrays checked
    again, and batches fitted to the graph."""

    name: str
    streams: int
    spec: ModelSpec
    source: str  # names the graph in errors
    input_hw: tuple[int, int]
    fixed_batch: int | None

    def run(self, images: np.ndarray | torch.Tensor) -> GraphOutputs:
        return run_exported(self._infer, fit_to_graph(images, self.input_hw), self.fixed_batch, self._checked)

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        """One call of the graph: its outputs in the order of :data:`OUTPUT_NAMES`."""
        raise NotImplementedError

    def _check_interface(self, input_names: list[str], input_shape, outputs: dict) -> None:
        """The declared input and outputs against the spec (sets ``input_hw``); when the graph
        leaves an output's size free (the exporter writes the class count as a symbol; exports made
        here declare it since), one run of a blank image settles it now rather than on the user's
        first batch."""
        self.input_hw = check_input(self.source, self.spec, input_names, input_shape)
        check_outputs(self.source, self.spec, outputs)
        declared = [normalise(shape) for shape in outputs.values()]
        if any(shape is None or None in shape[1:] for shape in declared):
            run_exported(self._infer, np.zeros((1, 3, *self.input_hw), np.float32), self.fixed_batch, self._checked)

    def _checked(self, arrays: dict[str, np.ndarray], batch: int) -> GraphOutputs:
        check_outputs(self.source, self.spec, {k: a.shape for k, a in arrays.items()}, batch)
        return GraphOutputs(**arrays)


class OnnxRuntime(ExportedRuntime):
    name = "onnxruntime"

    def __init__(
        self, model: bytes | str | Path, threads: int, streams: int = 1, *, spec: ModelSpec, source: str | None = None
    ) -> None:
        import onnxruntime as ort

        self.streams, self.spec, self.source = streams, spec, source or describe(model)
        options = ort.SessionOptions()
        # a session runs concurrent calls, each on its calling thread plus the intra-op pool
        options.intra_op_num_threads = max(1, threads // streams)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        # idle intra-op threads sleep instead of spinning: a spinning pool takes the cores the
        # image-decoding workers need (measured end to end with bench/detect.py)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        graph = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if inputs else None
        self.input_name = inputs[0].name if inputs else ""
        self.fixed_batch = shape[0] if shape and isinstance(shape[0], int) else None
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        self._check_interface([i.name for i in inputs], shape, outputs)

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(OUTPUT_NAMES), {self.input_name: x})


class OpenVinoRuntime(ExportedRuntime):
    name = "openvino"
    streams = 1  # one batch at a time: see the module's docstring

    def __init__(self, model: bytes | str | Path, threads: int, *, spec: ModelSpec, source: str | None = None) -> None:
        import openvino as ov

        self.spec, self.source = spec, source or describe(model)
        self.core = ov.Core()
        if isinstance(model, bytes):
            self.model = ov.convert_model(io.BytesIO(model))
        else:
            self.model = self.core.read_model(str(model))
        # f32: on CPUs with bf16 units OpenVINO would otherwise compute in bf16 (scores off by ~3e-3)
        self.config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self._compiled: dict[int, object] = {}
        inputs = self.model.inputs
        first = _ov_shape(inputs[0].get_partial_shape()) if inputs else None
        self.fixed_batch = first[0] if first else None
        outputs = {_ov_name(p, i): _ov_shape(p.get_partial_shape()) for i, p in enumerate(self.model.outputs)}
        self._check_interface([_ov_name(p, i) for i, p in enumerate(inputs)], first, outputs)

    def compiled(self, batch: int):
        """The model compiled for a static batch size (faster than a dynamic shape on the CPU)."""
        if batch not in self._compiled:
            model = self.model.clone()
            model.reshape({0: [batch, 3, *self.input_hw]})
            self._compiled[batch] = self.core.compile_model(model, "CPU", self.config)
        return self._compiled[batch]

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        result = self.compiled(len(x))(x)
        return [result[name] for name in OUTPUT_NAMES]


def describe(model: bytes | str | Path) -> str:
    """How errors name a graph: its file, or what an in-memory one is."""
    return "the ONNX export made in memory" if isinstance(model, bytes) else str(model)


def _ov_name(port, index: int) -> str:
    """An OpenVINO port's name: the one of :data:`OUTPUT_NAMES` among its tensor names, else any."""
    names = port.get_names()
    known = [n for n in OUTPUT_NAMES if n in names]
    return known[0] if known else (sorted(names)[0] if names else f"#{index}")


def _ov_shape(partial) -> tuple[int | None, ...] | None:
    if partial.rank.is_dynamic:
        return None
    return tuple(d.get_length() if d.is_static else None for d in partial)


def fit_to_graph(images: np.ndarray | torch.Tensor, graph_hw: tuple[int, int]) -> np.ndarray:
    """A batch (array, or CPU tensor) as the graph's contiguous float32 input: padded
    (right/bottom, zeros) up to the graph's size; a batch larger than the graph cannot run on it."""
    if not isinstance(images, np.ndarray):
        images = images.detach().cpu().numpy()  # a tensor
    images = np.ascontiguousarray(images, dtype=np.float32)
    n, channels, h, w = images.shape
    if h > graph_hw[0] or w > graph_hw[1]:
        raise ValueError(f"a {h}x{w} batch does not fit this exported graph ({graph_hw[0]}x{graph_hw[1]} input)")
    if (h, w) != graph_hw:
        padded = np.zeros((n, channels, *graph_hw), dtype=np.float32)
        padded[:, :, :h, :w] = images
        images = padded
    return images


def run_exported(infer, x: np.ndarray, fixed_batch: int | None, checked) -> GraphOutputs:
    """``infer`` (one call of an exported graph, its outputs in the order of :data:`OUTPUT_NAMES`)
    over a batch: whole when the graph's batch is free, else one image at a time, the pieces
    joined; ``checked(arrays by name, batch)`` makes the outputs of the arrays it accepts."""
    if fixed_batch is None:
        arrays = [np.asarray(a) for a in infer(x)]
    else:
        pieces = [[np.asarray(a) for a in infer(x[i : i + 1])] for i in range(len(x))]
        for piece in pieces[:1]:  # a piece that is not [1, ...] must not be joined into a batch that looks right
            checked(dict(zip(OUTPUT_NAMES, piece)), 1)
        arrays = [np.concatenate(parts) for parts in zip(*pieces)]
    return checked(dict(zip(OUTPUT_NAMES, arrays)), len(x))


def open_runtime(
    name: str,
    onnx_model: bytes | str | Path,
    threads: int,
    streams: int = 1,
    *,
    spec: ModelSpec,
    source: str | None = None,
) -> OnnxRuntime | OpenVinoRuntime:
    """An ONNX runtime by name over an exported graph (bytes, an ``.onnx`` file, or IR ``.xml``)
    whose interface fits ``spec`` (else :class:`~nanodet.errors.ExportError`, naming ``source``:
    by default the file)."""
    if name == "onnxruntime":
        return OnnxRuntime(onnx_model, threads, streams, spec=spec, source=source)
    if name == "openvino":
        return OpenVinoRuntime(onnx_model, threads, spec=spec, source=source)
    raise RuntimeUnavailable(f"{name!r} does not run exported graphs")
