"""Model configuration: the official NanoDet YAML layout as typed, validated models.

An official NanoDet config file loads unchanged: the keys and their nesting are the
official ones. Unknown or mistyped keys are rejected, and the error names the key path
(``model.arch.head.reg_max``) and the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .utils.yaml_io import YamlFileError, read_yaml_mapping


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are type-checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Activation = Literal["ReLU", "LeakyReLU", "ReLU6", "SELU", "ELU", "GELU", "PReLU", "SiLU", "HardSwish", "Hardswish"]


class NormConfig(Strict):
    type: Literal["BN", "GN", "SyncBN"] = "BN"
    num_groups: int | None = None
    requires_grad: bool = True


# --- model ---------------------------------------------------------------------------


class WeightAveragerConfig(Strict):
    name: Literal["ExpMovingAverager"] = "ExpMovingAverager"
    decay: float = Field(0.9998, gt=0.0, lt=1.0)


class BackboneConfig(Strict):
    name: Literal["ShuffleNetV2"] = "ShuffleNetV2"
    model_size: Literal["0.5x", "1.0x", "1.5x"] = "1.0x"
    out_stages: list[int] = [2, 3, 4]
    activation: Activation = "LeakyReLU"
    with_last_conv: bool = False
    kernal_size: int = 3  # (sic) the official key name
    pretrain: bool = True


class GhostPANConfig(Strict):
    name: Literal["GhostPAN"] = "GhostPAN"
    in_channels: list[int]
    out_channels: int
    kernel_size: int = 5
    num_extra_level: int = 0
    use_depthwise: bool = False
    activation: Activation = "LeakyReLU"
    expand: int = 1
    num_blocks: int = 1
    use_res: bool = False


class PANConfig(Strict):
    name: Literal["PAN"] = "PAN"
    in_channels: list[int]
    out_channels: int
    num_outs: int
    start_level: int = 0
    end_level: int = -1
    activation: Activation | None = None


class LossTerm(Strict):
    name: str
    loss_weight: float = 1.0
    use_sigmoid: bool = True
    beta: float = 2.0


class HeadLossConfig(Strict):
    loss_qfl: LossTerm = LossTerm(name="QualityFocalLoss", loss_weight=1.0, beta=2.0)
    loss_dfl: LossTerm = LossTerm(name="DistributionFocalLoss", loss_weight=0.25)
    loss_bbox: LossTerm = LossTerm(name="GIoULoss", loss_weight=2.0)


class AssignerConfig(Strict):
    topk: int = 13
    iou_factor: float = 3.0


class GFLHeadConfig(Strict):
    """What the NanoDet heads share: per-level towers and a GFL output of classes + box distributions."""

    num_classes: int = Field(gt=0)
    input_channel: int
    feat_channels: int = 96
    stacked_convs: int = 2
    strides: list[int] = [8, 16, 32]
    conv_type: Literal["DWConv", "Conv"] = "DWConv"
    activation: Activation = "LeakyReLU"
    reg_max: int = 7
    norm_cfg: NormConfig = NormConfig()
    loss: HeadLossConfig = HeadLossConfig()


class NanoDetPlusHeadConfig(GFLHeadConfig):
    name: Literal["NanoDetPlusHead"] = "NanoDetPlusHead"
    kernel_size: int = 5
    assigner_cfg: AssignerConfig = AssignerConfig()


class NanoDetHeadConfig(GFLHeadConfig):
    """Legacy NanoDet (v0.x) GFL head with shared depthwise convs."""

    name: Literal["NanoDetHead"] = "NanoDetHead"
    share_cls_reg: bool = True
    octave_base_scale: int = 5
    scales_per_octave: int = 1


class SimpleConvHeadConfig(Strict):
    """The training-only auxiliary head of NanoDet-Plus (assign guidance module)."""

    name: Literal["SimpleConvHead"] = "SimpleConvHead"
    num_classes: int = Field(gt=0)
    input_channel: int
    feat_channels: int = 256
    stacked_convs: int = 4
    strides: list[int] = [8, 16, 32]
    activation: Activation = "LeakyReLU"
    reg_max: int = 7
    norm_cfg: NormConfig = NormConfig(type="GN", num_groups=32)


class ArchConfig(Strict):
    name: Literal["NanoDetPlus", "OneStageDetector"] = "NanoDetPlus"
    detach_epoch: int = 0
    backbone: BackboneConfig = BackboneConfig()
    fpn: Annotated[GhostPANConfig | PANConfig, Field(discriminator="name")]
    head: Annotated[NanoDetPlusHeadConfig | NanoDetHeadConfig, Field(discriminator="name")]
    aux_head: SimpleConvHeadConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ArchConfig":
        if self.name == "NanoDetPlus" and self.aux_head is None:
            raise ValueError("NanoDetPlus needs an aux_head section")
        if self.aux_head is not None and self.aux_head.num_classes != self.head.num_classes:
            raise ValueError(
                f"aux_head.num_classes ({self.aux_head.num_classes}) != head.num_classes ({self.head.num_classes})"
            )
        return self


class ModelConfig(Strict):
    weight_averager: WeightAveragerConfig | None = None
    arch: ArchConfig


# --- data ----------------------------------------------------------------------------

MeanStd = tuple[tuple[float, float, float], tuple[float, float, float]]
OFFICIAL_NORMALIZE: MeanStd = ((103.53, 116.28, 123.675), (57.375, 57.12, 58.395))


class PipelineConfig(Strict):
    perspective: float = 0.0
    scale: tuple[float, float] | float = (1.0, 1.0)
    stretch: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 1.0), (1.0, 1.0))
    rotation: float = 0.0
    shear: float = 0.0
    translate: float = 0.0
    flip: float = 0.0
    brightness: float = 0.0
    contrast: tuple[float, float] | None = None
    saturation: tuple[float, float] | None = None
    normalize: MeanStd = OFFICIAL_NORMALIZE


class DatasetConfig(Strict):
    name: Literal["CocoDataset", "XMLDataset", "YoloDataset"] = "CocoDataset"
    img_path: str = ""
    ann_path: str = ""
    input_size: tuple[int, int] = (320, 320)  # [w, h]
    keep_ratio: bool = False
    multi_scale: tuple[float, float] | None = None
    class_names: list[str] | None = None
    pipeline: PipelineConfig = PipelineConfig()


class DataConfig(Strict):
    train: DatasetConfig
    val: DatasetConfig


class DeviceConfig(Strict):
    gpu_ids: list[int] | int = [0]
    workers_per_gpu: int = Field(4, ge=0)
    batchsize_per_gpu: int = Field(16, gt=0)
    precision: Literal[16, 32] = 32


class OptimizerConfig(Strict):
    name: Literal["AdamW", "SGD", "Adam"] = "AdamW"
    lr: float = Field(gt=0.0)
    weight_decay: float = 0.0
    momentum: float = 0.9
    no_norm_decay: bool = False


class WarmupConfig(Strict):
    name: Literal["linear", "exp", "constant"] = "linear"
    steps: int = Field(0, ge=0)
    ratio: float = Field(1.0, gt=0.0, le=1.0)


class LrScheduleConfig(Strict):
    name: Literal["CosineAnnealingLR", "MultiStepLR", "StepLR"] = "CosineAnnealingLR"
    T_max: int | None = None
    eta_min: float = 0.0
    milestones: list[int] | None = None
    step_size: int | None = None
    gamma: float = 0.1


class ScheduleConfig(Strict):
    resume: str | bool | None = None
    load_model: str | None = None
    optimizer: OptimizerConfig
    warmup: WarmupConfig = WarmupConfig()
    total_epochs: int = Field(gt=0)
    lr_schedule: LrScheduleConfig = LrScheduleConfig()
    val_intervals: int = Field(1, gt=0)


class EvaluatorConfig(Strict):
    """``save_key``: the metric that picks the best model: a COCO metric name (``mAP`` is
    AP@[.5:.95]) or ``AP_<nn>``, the AP at IoU 0.<nn> (``AP_50``: the VOC/YMIR scale)."""

    name: Literal["CocoDetectionEvaluator"] = "CocoDetectionEvaluator"
    save_key: str = "mAP"

    @field_validator("save_key")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        from .evaluation.coco import METRIC_NAMES

        if v not in METRIC_NAMES and not re.fullmatch(r"AP_\d{2}", v):
            raise ValueError(f"{v!r} is not a metric: one of {', '.join(METRIC_NAMES)} or AP_<nn> (AP at IoU 0.nn)")
        return v

    @property
    def iou_thrs(self) -> list[float]:
        """The single IoU threshold ``save_key`` needs evaluated, if it names one."""
        match = re.fullmatch(r"AP_(\d{2})", self.save_key)
        return [int(match.group(1)) / 100] if match else []


class LogConfig(Strict):
    interval: int = 50


class NanoDetConfig(Strict):
    """One whole model config file (the official layout)."""

    save_dir: str = "workspace"
    model: ModelConfig
    data: DataConfig
    device: DeviceConfig = DeviceConfig()
    schedule: ScheduleConfig
    grad_clip: float = 0.0
    evaluator: EvaluatorConfig = EvaluatorConfig()
    log: LogConfig = LogConfig()
    test: dict | None = None
    class_names: list[str]

    @model_validator(mode="after")
    def _class_count_matches(self) -> "NanoDetConfig":
        n = self.model.arch.head.num_classes
        if len(self.class_names) != n:
            raise ValueError(f"class_names has {len(self.class_names)} names but model.arch.head.num_classes is {n}")
        return self

    @property
    def input_size(self) -> tuple[int, int]:
        """Inference input size as (w, h)."""
        return self.data.val.input_size

    def merged(self, overrides: dict) -> "NanoDetConfig":
        """A validated copy with ``overrides`` (nested dicts, official key names) merged in."""
        return parse_config(_deep_merge(self.model_dump(), overrides), "<overrides>")

    def with_classes(self, class_names: list[str]) -> "NanoDetConfig":
        """A copy of this config for another class list (heads resized to match)."""
        data = self.model_dump()
        data["class_names"] = list(class_names)
        arch = data["model"]["arch"]
        arch["head"]["num_classes"] = len(class_names)
        if arch.get("aux_head"):
            arch["aux_head"]["num_classes"] = len(class_names)
        return NanoDetConfig.model_validate(data)


def _deep_merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid model config"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        shown = repr(got) if not isinstance(got, dict) else "{...}"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key")
        else:
            lines.append(f"  {path}: {e['msg']} (got {shown[:80]})")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<config>") -> NanoDetConfig:
    try:
        return NanoDetConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path) -> NanoDetConfig:
    """Read and validate a model config YAML file (``yaml.safe_load``)."""
    try:
        data = read_yaml_mapping(path, "model config")
    except YamlFileError as err:
        raise ConfigError(str(err)) from None
    return parse_config(data, str(path))


def save_config(cfg: NanoDetConfig, path: str | Path) -> None:
    """Write a config in the official layout (loads back with ``load_config``), atomically."""
    from .utils.io import atomic_write_text

    data = cfg.model_dump(mode="json", exclude_none=True)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
