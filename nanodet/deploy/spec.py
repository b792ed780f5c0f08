"""What a consumer of an inference model must know besides its weights: classes, input size,
normalisation and the prior layout. Built from a model config, or read back from the
metadata of an exported ONNX file (so a ``.onnx`` runs without the config it came from)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..config import NanoDetConfig, NanoDetHeadConfig

FORMAT = "nanodet-plus-graph/1"  # the layout of the exported graph's outputs; bumped if it changes


@dataclass(frozen=True)
class ModelSpec:
    class_names: tuple[str, ...]
    input_wh: tuple[int, int]  # the pre-processing target (w, h)
    keep_ratio: bool
    mean: tuple[float, float, float]  # BGR, 0-255 scale
    std: tuple[float, float, float]
    strides: tuple[int, ...]
    reg_max: int
    prior_offset: float  # 0 for NanoDet-Plus (cell corner), 0.5 for legacy NanoDet-m (cell centre)
    arch: str  # e.g. "NanoDetPlus/1.0x", for logs

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def graph_hw(self) -> tuple[int, int]:
        """The graph's input (h, w): the input size padded to a multiple of 32, as batches are."""
        w, h = self.input_wh
        return -(-h // 32) * 32, -(-w // 32) * 32

    @classmethod
    def from_config(cls, cfg: NanoDetConfig) -> ModelSpec:
        arch = cfg.model.arch
        mean, std = cfg.data.val.pipeline.normalize
        return cls(
            class_names=tuple(cfg.class_names),
            input_wh=tuple(cfg.data.val.input_size),
            keep_ratio=cfg.data.val.keep_ratio,
            mean=tuple(mean),
            std=tuple(std),
            strides=tuple(arch.head.strides),
            reg_max=arch.head.reg_max,
            prior_offset=0.5 if isinstance(arch.head, NanoDetHeadConfig) else 0.0,
            arch=f"{arch.name}/{arch.backbone.model_size}",
        )

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props`` (JSON for the structured ones)."""
        return {
            "format": FORMAT,
            "class_names": json.dumps(list(self.class_names)),
            "input_size": json.dumps(list(self.input_wh)),
            "keep_ratio": json.dumps(self.keep_ratio),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "strides": json.dumps(list(self.strides)),
            "reg_max": str(self.reg_max),
            "prior_offset": str(self.prior_offset),
            "arch": self.arch,
            "outputs": "boxes [N,P,4] x1y1x2y2 input pixels; scores [N,P,C] sigmoid; cls_logits [N,P,C]",
            "preprocess": "BGR; warp to input_size (letterbox when keep_ratio); (x - mean) / std; NCHW",
        }

    @staticmethod
    def metadata_keys() -> tuple[str, ...]:
        """Every key :meth:`to_metadata` writes."""
        return tuple(_EXAMPLE.to_metadata())

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str) -> ModelSpec:
        """The spec stored by :meth:`to_metadata`; ``source`` names the file in errors."""
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{source}: not a NanoDet export (metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r})"
            )
        try:
            return cls(
                class_names=tuple(json.loads(meta["class_names"])),
                input_wh=tuple(json.loads(meta["input_size"])),
                keep_ratio=bool(json.loads(meta["keep_ratio"])),
                mean=tuple(json.loads(meta["mean"])),
                std=tuple(json.loads(meta["std"])),
                strides=tuple(json.loads(meta["strides"])),
                reg_max=int(meta["reg_max"]),
                prior_offset=float(meta["prior_offset"]),
                arch=meta.get("arch", "?"),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{source}: unreadable NanoDet metadata ({type(err).__name__}: {err})") from None


_EXAMPLE = ModelSpec(("a",), (32, 32), False, (0.0,) * 3, (1.0,) * 3, (8,), 7, 0.0, "")
