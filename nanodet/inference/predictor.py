"""Batch inference: a model (config + weights, or an exported ``.onnx`` / OpenVINO ``.xml``) on a
device → detections for images of any size.

Images are pre-processed exactly as official (warp to the input size, normalise) and batched
with padding to a multiple of 32. The batch runs through one of the runtimes of
:mod:`nanodet.deploy.runtimes`, which all give the decoded boxes and class scores of every prior
cell (the box decode is part of the graph); NMS and the inverse warp to original pixels follow.

- ``torch``: BatchNorm folded into the convolutions, channels-last on the CPU, ``inference_mode``;
- ``onnxruntime`` / ``openvino``: the same graph exported to ONNX (in memory when given PyTorch
  weights, or the exported file itself);
- ``auto`` (default): torch on CUDA; on the CPU the fastest backend installed, and torch (with a
  warning) when exporting to it or opening its session fails.

PyTorch is imported only when it is needed: for the torch backend, or to export PyTorch
weights that have no export yet. With an exported graph, or weights whose export is cached
(:mod:`.deploy.export_cache`), an ONNX runtime predicts on NumPy arrays and the process never
imports it (2 s of a command's start on the CPUs measured).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import NanoDetConfig, load_config
from ..data.preprocess import pad_batch, preprocess
from ..deploy.export_cache import KEY, export_key, file_digest, find_exports, store_export
from ..deploy.exported import is_exported, read_spec
from ..deploy.runtimes import (
    GraphOutputs,
    OnnxRuntime,
    OpenVinoRuntime,
    RuntimeUnavailable,
    choose_backend,
    default_streams,
    open_runtime,
)
from ..deploy.spec import ModelSpec
from ..utils.cpus import inference_threads, limit_threads
from .detections import Detections, detections_per_image

if TYPE_CHECKING:
    import torch

    from ..deploy.torch_runtime import TorchRuntime
    from ..model.detector import NanoDet

log = logging.getLogger(__name__)


class Predictor:
    def __init__(
        self,
        config: NanoDetConfig | str | Path | None,
        weights: str | Path | None,
        device: str | torch.device = "cpu",
        *,
        backend: str = "auto",
        threads: int | None = None,
        streams: int | None = None,
        optimize: bool = True,
        channels_last: bool | None = None,
        score_thr: float = 0.05,
        iou_thr: float = 0.6,
        max_det: int = 100,
    ) -> None:
        """``config`` may be None when ``weights`` is an exported file (its metadata has the spec).
        ``threads``: threads of an ONNX runtime (default :func:`~.utils.cpus.inference_threads`: the
        CPUs allowed, cgroup quota included), shared by its ``streams`` (default
        :func:`~.deploy.runtimes.default_streams`): how many batches may run at once, called from
        as many threads (:func:`~.utils.pipeline.overlapped`). PyTorch's threads (torch backend) and
        OpenCV's above the CPUs allowed are lowered to them (:func:`~.utils.cpus.limit_threads`)."""
        self.device_name = str(device)
        self.score_thr, self.iou_thr, self.max_det = score_thr, iou_thr, max_det
        threads = threads or inference_threads()
        if is_exported(weights):
            self.cfg = None
            self.spec = read_spec(weights)
            self.backend = _exported_backend(backend, weights, self.device_name)
            self.runtime = open_runtime(
                self.backend, weights, threads, self._stream_count(streams, threads), spec=self.spec
            )
        else:
            self.cfg = config if isinstance(config, NanoDetConfig) else load_config(config)
            self.spec = ModelSpec.from_config(self.cfg)
            self.backend = choose_backend(backend, self.device_name)
            model = None
            if self.backend != "torch":
                try:
                    self.runtime, model = self._exported_runtime(weights, optimize, threads, streams)
                except Exception as err:  # noqa: BLE001 - export or session: any failure of the ONNX path
                    if backend != "auto":
                        raise  # a backend the user named fails as such
                    reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
                    log.warning(
                        "backend auto: %s could not run this model (%s: %s): using torch instead",
                        self.backend,
                        type(err).__name__,
                        reason,
                    )
                    self.backend = "torch"
            if self.backend == "torch":
                from ..deploy.export import inference_model
                from ..deploy.torch_runtime import TorchRuntime

                model = model or inference_model(self.cfg, weights, optimize)
                # measured on CPU: 1.6x at batch 16 (bench/results/HISTORY.md); CUDA unmeasured
                if channels_last is None:
                    channels_last = optimize and self.device.type == "cpu"
                self.runtime = TorchRuntime(model, self.device, channels_last)
        # the CPUs allowed (cgroup quota, affinity) bound OpenCV's threads (pre-processing) and, on
        # the torch backend, PyTorch's: counts above them are lowered, counts the user chose kept
        limit_threads(torch_threads=self.backend == "torch")
        log.info("predictor: %s, backend %s, %d stream(s)", self.spec.arch, self.backend, self.streams)

    @property
    def device(self) -> torch.device:
        """The device as a ``torch.device`` (imports PyTorch)."""
        import torch

        return torch.device(self.device_name)

    @property
    def streams(self) -> int:
        """Batches that may run at once, from as many threads (the runtime's)."""
        return self.runtime.streams

    def _stream_count(self, requested: int | None, threads: int) -> int:
        """The requested count where the backend runs streams (ONNX Runtime), else its default."""
        default = default_streams(self.backend, self.device_name, threads)
        if requested and self.backend == "onnxruntime":
            return requested
        if requested and requested != default:
            log.warning("backend %s runs one batch at a time: streams=%d ignored", self.backend, requested)
        return default

    def _exported_runtime(
        self, weights: str | Path | None, optimize: bool, threads: int, streams: int | None
    ) -> tuple[OnnxRuntime | OpenVinoRuntime, NanoDet | None]:
        """The ONNX runtime over the model's graph: an earlier export of the same weights, config
        and code when one exists (the stage's own graph, or the export cache) and fits the model,
        else a new export (kept in the cache when it is writable). Returns (runtime, the torch
        model if one was built)."""
        streams = self._stream_count(streams, threads)
        cacheable = weights is not None and optimize  # random or unfused weights are not kept
        key = export_key(file_digest(weights), self.cfg, dynamic_batch=True) if cacheable else None
        for found in find_exports(Path(weights), key) if key else []:
            try:
                runtime = open_runtime(self.backend, found, threads, streams, spec=self.spec)
                log.info("using the ONNX export %s (made from these weights, this config and code)", found)
                return runtime, None
            except Exception as err:  # noqa: BLE001 - its key says this model, its graph does not: damaged
                reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
                log.warning("not using the ONNX export %s (%s)", found, reason)
        from ..deploy.export import inference_model, onnx_bytes  # PyTorch: only when exporting

        model = inference_model(self.cfg, weights, optimize)
        data = onnx_bytes(model, self.spec, extra_metadata={KEY: key} if key else None)
        if key:
            store_export(data, key)
        source = f"the ONNX export of {weights or 'random weights'}"
        return open_runtime(self.backend, data, threads, streams, spec=self.spec, source=source), model

    # --- what the model expects -------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.spec.class_names)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def input_wh(self) -> tuple[int, int]:
        return self.spec.input_wh

    @property
    def keep_ratio(self) -> bool:
        return self.spec.keep_ratio

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.spec.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.spec.std

    # --- the PyTorch model, for code that needs the raw head (torch backend only) ---------
    @property
    def model(self) -> torch.nn.Module:
        return self._torch_runtime().model

    @property
    def head(self):
        return self.model.head

    def priors(self, input_hw: tuple[int, int]) -> torch.Tensor:
        return self._torch_runtime().graph(input_hw).priors

    def forward(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The raw head output ``[N, P, C + 4(R+1)]`` of a batch (torch backend)."""
        import torch

        runtime = self._torch_runtime()
        with torch.inference_mode():
            return runtime.model(runtime.prepare(batch))

    def _torch_runtime(self) -> TorchRuntime:
        if self.backend != "torch":
            raise AttributeError(f"the raw PyTorch model exists with backend 'torch' only (this is {self.backend!r})")
        return self.runtime

    # --- inference --------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BGR uint8 image → (CHW float32 input, 3×3 warp matrix original → input)."""
        return preprocess(image, self.input_wh, self.keep_ratio, self.mean, self.std)

    def run(self, batch: np.ndarray | torch.Tensor) -> GraphOutputs:
        """A pre-processed, padded batch ``[N, 3, H, W]`` → boxes, scores and class logits of every
        prior (NumPy arrays from the ONNX runtimes, tensors on the device from torch)."""
        return self.runtime.run(batch)

    def forward_levels(self, batch: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
        """Per-level class-logit maps ``[N, C, H_l, W_l]`` (for uncertainty mining)."""
        return self.level_maps(self.run(batch), batch)

    def level_maps(self, outputs: GraphOutputs, batch: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
        """The class logits of every prior as per-level tensors (imports PyTorch: mining runs on it)."""
        import torch

        from ..deploy.graph import class_level_maps

        logits = torch.as_tensor(outputs.cls_logits)
        return class_level_maps(logits, (batch.shape[2], batch.shape[3]), self.spec.strides)

    def predict_batch(
        self, batch: np.ndarray | torch.Tensor, warp_matrices: list[np.ndarray], image_sizes: list[tuple[int, int]]
    ) -> list[Detections]:
        """A pre-processed, padded batch ``[N, 3, H, W]`` → detections per image."""
        return self.detections(self.run(batch), warp_matrices, image_sizes)

    def predict_batch_with_levels(
        self, batch: np.ndarray | torch.Tensor, warp_matrices: list[np.ndarray], image_sizes: list[tuple[int, int]]
    ) -> tuple[list[torch.Tensor], list[Detections]]:
        """One forward for both uses: the per-level class maps (uncertainty mining) and the
        detections per image (the same as :meth:`predict_batch` gives)."""
        outputs = self.run(batch)
        return self.level_maps(outputs, batch), self.detections(outputs, warp_matrices, image_sizes)

    def detections(
        self, outputs: GraphOutputs, warp_matrices: list[np.ndarray], image_sizes: list[tuple[int, int]]
    ) -> list[Detections]:
        """Graph outputs → NMS per image, boxes in original pixels (on the device for device
        tensors, else in NumPy)."""
        if self.backend == "torch":
            from .postprocess import detections_per_image as tensor_detections

            return tensor_detections(
                outputs.boxes, outputs.scores, warp_matrices, image_sizes, self.score_thr, self.iou_thr, self.max_det
            )
        return detections_per_image(
            outputs.boxes,
            outputs.scores,
            warp_matrices,
            image_sizes,
            self.score_thr,
            self.iou_thr,
            self.max_det,
        )

    def predict(self, images: list[np.ndarray]) -> list[Detections]:
        """BGR uint8 images (any sizes) → detections per image, in original pixels."""
        if not images:
            return []
        inputs, matrices = zip(*(self.preprocess(img) for img in images))
        batch = pad_batch(inputs)
        sizes = [(img.shape[1], img.shape[0]) for img in images]
        return self.predict_batch(batch, list(matrices), sizes)


def _exported_backend(requested: str, weights: str | Path, device: str) -> str:
    """An exported graph runs in ONNX Runtime or OpenVINO, on the CPU (``auto``: the faster one
    installed); OpenVINO IR (``.xml``) in OpenVINO only."""
    if Path(weights).suffix.lower() == ".xml":
        requested = "openvino" if requested == "auto" else requested
    if requested == "torch":
        raise RuntimeUnavailable(f"{weights}: backend 'torch' needs PyTorch weights (.pth/.ckpt), not an export")
    if requested == "onnxruntime" and Path(weights).suffix.lower() == ".xml":
        raise RuntimeUnavailable(f"{weights}: an OpenVINO IR file runs with backend 'openvino' only")
    backend = choose_backend(requested, "cpu" if requested == "auto" else device)
    if backend == "torch":
        raise RuntimeUnavailable(
            f"{weights}: an exported graph runs in onnxruntime or openvino: pip install 'nanodet-ymir[onnxruntime]'"
        )
    return backend
