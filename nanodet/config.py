"""Model configuration: the official NanoDet YAML layout as typed, validated models.

An official NanoDet config file loads unchanged: the keys and their nesting are the
official ones. Unknown or mistyped keys are rejected, and the error names the key path
(``model.arch.head.reg_max``) and the file.

Keys mean what they mean in the official NanoDet. Where this implementation covers only part
of what an official key allows (one dataset format, one set of losses, ...), the official
default is accepted and any other value is refused, naming the file and
``<key path>: <value> is not supported by this implementation``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .utils.yaml_io import YamlFileError, read_yaml_mapping


class Unsupported(ValueError):
    """A value the schema accepts but this implementation does not implement.

    ``key`` is the key path relative to where the validator runs (empty for a field
    validator, whose location already ends with the field): :func:`parse_config` reports
    the full path, ``<key path>: <value> is not supported by this implementation``.
    """

    def __init__(self, key: str, value: object) -> None:
        self.key = key
        self.value = value
        super().__init__(f"{key + ': ' if key else ''}{_shown(value)} is not supported by this implementation")


def _shown(value: object) -> str:
    """A value as the YAML author wrote it: ``repr``, with tuples shown as lists."""

    def plain(v: object) -> object:
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

    return repr(plain(value))


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are type-checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Activation = Literal["ReLU", "LeakyReLU", "ReLU6", "SELU", "ELU", "GELU", "PReLU", "SiLU", "HardSwish", "Hardswish"]


class NormConfig(Strict):
    """A norm layer as the official ``norm_cfg``: ``BN``, ``SyncBN`` or ``GN`` (with ``num_groups``).

    ``SyncBN`` layers are built as batch norm, which is what ``torch.nn.SyncBatchNorm`` does
    outside distributed training; under DDP the trainer converts them
    (:func:`nanodet.engine.distributed.sync_batchnorm_if_asked`).
    """

    type: Literal["BN", "GN", "SyncBN"] = "BN"
    num_groups: int | None = Field(None, gt=0)
    requires_grad: bool = True

    @model_validator(mode="after")
    def _groups_match_type(self) -> NormConfig:
        if self.type == "GN" and self.num_groups is None:
            raise ValueError("type GN needs num_groups")
        if self.type != "GN" and self.num_groups is not None:
            raise Unsupported("num_groups", self.num_groups)  # the official BN layers take no num_groups
        return self

    def check_divides(self, channels: int, what: str) -> None:
        """Raise when group norm cannot split ``channels`` (named ``what``) into ``num_groups``."""
        if self.type == "GN" and self.num_groups is not None and channels % self.num_groups:
            raise ValueError(f"norm_cfg.num_groups ({self.num_groups}) does not divide {what} ({channels})")


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
    """One loss of the GFL head. Its ``name`` is fixed by the term it configures (see
    :class:`HeadLossConfig`); ``beta`` is the Quality Focal Loss exponent (QFL only)."""

    name: str
    loss_weight: float = 1.0
    use_sigmoid: bool = True
    beta: float = 2.0


class HeadLossConfig(Strict):
    """The three losses of the official GFL heads, the only ones implemented: sigmoid Quality
    Focal Loss, Distribution Focal Loss and GIoU loss (only their weights and QFL's ``beta``
    can change)."""

    loss_qfl: LossTerm = LossTerm(name="QualityFocalLoss", loss_weight=1.0, beta=2.0)
    loss_dfl: LossTerm = LossTerm(name="DistributionFocalLoss", loss_weight=0.25)
    loss_bbox: LossTerm = LossTerm(name="GIoULoss", loss_weight=2.0)

    @model_validator(mode="after")
    def _implemented(self) -> HeadLossConfig:
        for key, name in (
            ("loss_qfl", "QualityFocalLoss"),
            ("loss_dfl", "DistributionFocalLoss"),
            ("loss_bbox", "GIoULoss"),
        ):
            term: LossTerm = getattr(self, key)
            if term.name != name:
                raise Unsupported(f"{key}.name", term.name)
            if not term.use_sigmoid:
                raise Unsupported(f"{key}.use_sigmoid", term.use_sigmoid)
            if key != "loss_qfl" and term.beta != 2.0:  # only QFL has a beta
                raise Unsupported(f"{key}.beta", term.beta)
        return self


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

    @model_validator(mode="after")
    def _groups_divide(self) -> GFLHeadConfig:
        if self.conv_type == "DWConv":  # the depthwise norm sees the tower's input channels
            self.norm_cfg.check_divides(self.input_channel, "input_channel")
        self.norm_cfg.check_divides(self.feat_channels, "feat_channels")
        return self


class NanoDetPlusHeadConfig(GFLHeadConfig):
    name: Literal["NanoDetPlusHead"] = "NanoDetPlusHead"
    kernel_size: int = 5
    assigner_cfg: AssignerConfig = AssignerConfig()


class NanoDetHeadConfig(GFLHeadConfig):
    """Legacy NanoDet (v0.x) GFL head with shared depthwise convs.

    ``octave_base_scale`` and ``scales_per_octave`` size the anchors of the official ATSS
    label assignment; this implementation has none, so only the official values are accepted.
    """

    name: Literal["NanoDetHead"] = "NanoDetHead"
    share_cls_reg: bool = True
    octave_base_scale: int = 5
    scales_per_octave: int = 1

    @field_validator("octave_base_scale")
    @classmethod
    def _official_octave_base_scale(cls, v: int) -> int:
        if v != 5:
            raise Unsupported("", v)
        return v

    @field_validator("scales_per_octave")
    @classmethod
    def _official_scales_per_octave(cls, v: int) -> int:
        if v != 1:
            raise Unsupported("", v)
        return v


class SimpleConvHeadConfig(Strict):
    """The training-only auxiliary head of NanoDet-Plus (assign guidance module); its conv
    layers use ``norm_cfg`` as given (official default: group norm, 32 groups)."""

    name: Literal["SimpleConvHead"] = "SimpleConvHead"
    num_classes: int = Field(gt=0)
    input_channel: int
    feat_channels: int = 256
    stacked_convs: int = 4
    strides: list[int] = [8, 16, 32]
    activation: Activation = "LeakyReLU"
    reg_max: int = 7
    norm_cfg: NormConfig = NormConfig(type="GN", num_groups=32)

    @model_validator(mode="after")
    def _groups_divide(self) -> SimpleConvHeadConfig:
        self.norm_cfg.check_divides(self.feat_channels, "feat_channels")
        return self


class ArchConfig(Strict):
    name: Literal["NanoDetPlus", "OneStageDetector"] = "NanoDetPlus"
    detach_epoch: int = 0
    backbone: BackboneConfig = BackboneConfig()
    fpn: Annotated[GhostPANConfig | PANConfig, Field(discriminator="name")]
    head: Annotated[NanoDetPlusHeadConfig | NanoDetHeadConfig, Field(discriminator="name")]
    aux_head: SimpleConvHeadConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ArchConfig:
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
    """One dataset. Only COCO json annotations (``CocoDataset``) are implemented.

    ``multi_scale: [low, high]`` (training only): each sample is resized to ``input_size``
    times a factor drawn uniformly from the range (the official rule, see
    :class:`nanodet.data.transforms.TrainTransform`); ``None`` keeps ``input_size``.
    """

    name: Literal["CocoDataset", "XMLDataset", "YoloDataset"] = "CocoDataset"
    img_path: str = ""
    ann_path: str = ""
    input_size: tuple[int, int] = (320, 320)  # [w, h]
    keep_ratio: bool = False
    multi_scale: tuple[float, float] | None = None
    class_names: list[str] | None = None
    pipeline: PipelineConfig = PipelineConfig()

    @field_validator("name")
    @classmethod
    def _implemented_format(cls, v: str) -> str:
        if v != "CocoDataset":
            raise Unsupported("", v)
        return v

    @field_validator("multi_scale")
    @classmethod
    def _positive_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 < v[0] <= v[1]:
            raise ValueError("multi_scale must be [low, high] with 0 < low <= high")
        return v


class DataConfig(Strict):
    train: DatasetConfig
    val: DatasetConfig

    @model_validator(mode="after")
    def _fixed_validation_size(self) -> DataConfig:
        if self.val.multi_scale is not None:  # evaluation is deterministic: always at input_size
            raise Unsupported("val.multi_scale", self.val.multi_scale)
        return self


class DeviceConfig(Strict):
    """Data loading and precision per device.

    ``gpu_ids`` is accepted for official config files but does not choose devices here: the
    devices are those the process is started on (``torchrun`` with ``CUDA_VISIBLE_DEVICES``,
    the CLI's ``--device``, the YMIR executor's ``gpu_id``), one process per GPU.
    """

    gpu_ids: list[int] | int = [0]
    workers_per_gpu: int = Field(4, ge=0)
    batchsize_per_gpu: int = Field(16, gt=0)
    precision: Literal[16, 32] = 32
    cache_images: Literal["none", "ram", "disk"] = "none"  # decoded training images (nanodet/data/image_cache.py)


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
    # the class names of load_model's head, when the file does not record them (not an official key)
    load_model_classes: list[str] | None = None
    optimizer: OptimizerConfig
    warmup: WarmupConfig = WarmupConfig()
    total_epochs: int = Field(gt=0)
    lr_schedule: LrScheduleConfig = LrScheduleConfig()
    val_intervals: int = Field(1, gt=0)


# Metric names, which a config's save_key refers to and the evaluator writes.
# COCOeval.stats, in its order.
METRIC_NAMES = (
    "mAP",
    "AP_50",
    "AP_75",
    "AP_small",
    "AP_m",
    "AP_l",
    "AR_1",
    "AR_10",
    "AR_100",
    "AR_small",
    "AR_m",
    "AR_l",
)


def iou_percent(iou_thr: float) -> int:
    """``iou_thr`` in hundredths (1 to 99): the thresholds whose metrics have a name. Raises
    ``ValueError`` for any other value (0.055 would be named like 0.06 or 0.05)."""
    percent = round(float(iou_thr) * 100)
    if not 1 <= percent <= 99 or abs(float(iou_thr) * 100 - percent) > 1e-6:
        raise ValueError(f"IoU threshold {iou_thr} is not one of 0.01, 0.02, ..., 0.99")
    return percent


def ap_key(iou_thr: float) -> str:
    """The metric name of AP at one IoU threshold, always two digits: ``AP_05`` for 0.05,
    ``AP_50`` for 0.5, ``AP_95`` for 0.95."""
    return f"AP_{iou_percent(iou_thr):02d}"


def recall_key(iou_thr: float) -> str:
    """The metric name of the recall at one IoU threshold (all sizes, 100 detections per
    image, averaged over the classes with ground truth): ``recall_50`` for 0.5. COCO's
    ``AR_100`` is another number: the recall averaged over IoU 0.50:0.95."""
    return f"recall_{iou_percent(iou_thr):02d}"


class EvaluatorConfig(Strict):
    """``save_key``: the metric that picks the best model: a COCO metric name (``mAP`` is
    AP@[.5:.95]) or ``AP_<nn>``, the AP at IoU 0.<nn> from ``AP_01`` to ``AP_99`` (``AP_50``:
    the VOC/YMIR scale, ``AP_05``: IoU 0.05)."""

    name: Literal["CocoDetectionEvaluator"] = "CocoDetectionEvaluator"
    save_key: str = "mAP"

    @field_validator("save_key")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in METRIC_NAMES and not re.fullmatch(_AP_AT_IOU, v):
            raise ValueError(
                f"{v!r} is not a metric: one of {', '.join(METRIC_NAMES)} or AP_<nn> (AP at IoU 0.nn, AP_01 to AP_99)"
            )
        return v

    @property
    def iou_thrs(self) -> list[float]:
        """The single IoU threshold ``save_key`` needs evaluated, if it names one."""
        match = re.fullmatch(_AP_AT_IOU, self.save_key)
        return [int(match.group(1)) / 100] if match else []


_AP_AT_IOU = r"AP_(0[1-9]|[1-9][0-9])"  # the names ap_key gives


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

    _source: str | None = PrivateAttr(None)  # the file this config was loaded from, when known

    def __eq__(self, other: object) -> bool:
        """Equal when every key is: where the configs came from does not count."""
        if not isinstance(other, NanoDetConfig):
            return NotImplemented
        return self.__dict__ == other.__dict__

    @property
    def source(self) -> str | None:
        """The file this config (or the config it was derived from) was loaded from."""
        return self._source

    def _derived_source(self) -> str:
        return f"{self._source} (with overrides)" if self._source else "<overrides>"

    @model_validator(mode="after")
    def _class_count_matches(self) -> NanoDetConfig:
        n = self.model.arch.head.num_classes
        if len(self.class_names) != n:
            raise ValueError(f"class_names has {len(self.class_names)} names but model.arch.head.num_classes is {n}")
        return self

    @property
    def input_size(self) -> tuple[int, int]:
        """Inference input size as (w, h)."""
        return self.data.val.input_size

    def merged(self, overrides: dict, source: str | None = None) -> NanoDetConfig:
        """A validated copy with ``overrides`` (nested dicts, official key names) merged in.

        Errors name ``source`` if given, else ``<file> (with overrides)`` for a config loaded
        from a file. The copy remembers the same file.
        """
        return self._revalidated(_deep_merge(self.model_dump(), overrides), source)

    def with_classes(self, class_names: list[str]) -> NanoDetConfig:
        """A copy of this config for another class list (heads resized to match)."""
        data = self.model_dump()
        data["class_names"] = list(class_names)
        arch = data["model"]["arch"]
        arch["head"]["num_classes"] = len(class_names)
        if arch.get("aux_head"):
            arch["aux_head"]["num_classes"] = len(class_names)
        return self._revalidated(data, None)

    def _revalidated(self, data: dict, source: str | None) -> NanoDetConfig:
        cfg = parse_config(data, source or self._derived_source())
        cfg._source = self._source
        return cfg


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


# Discriminated unions put the chosen member's tag into error locations; a key path has none.
_UNION_TAGS = frozenset({"GhostPAN", "PAN", "NanoDetPlusHead", "NanoDetHead"})


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid model config"]
    for e in err.errors():
        keys = [str(p) for p in e["loc"] if p not in _UNION_TAGS]
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, Unsupported):
            path = ".".join(keys + ([cause.key] if cause.key else []))
            lines.append(f"  {path}: {_shown(cause.value)} is not supported by this implementation")
            continue
        path = ".".join(keys) or "<root>"
        got = e.get("input")
        shown = repr(got) if not isinstance(got, dict) else "{...}"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key")
        else:
            lines.append(f"  {path}: {e['msg']} (got {shown[:80]})")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<config>") -> NanoDetConfig:
    """Validate a config mapping; a :class:`ConfigError` names ``source`` and every bad key."""
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
    cfg = parse_config(data, str(path))
    cfg._source = str(path)
    return cfg


def save_config(cfg: NanoDetConfig, path: str | Path) -> None:
    """Write a config in the official layout (loads back with ``load_config``), atomically."""
    from .utils.io import atomic_write_text

    data = cfg.model_dump(mode="json", exclude_none=True)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
