"""The platform's inputs as typed models: ``/in/env.yaml`` and ``/in/config.yaml``.

env.yaml says which task runs and where everything is; config.yaml is the task template as
the user edited it plus the platform's reserved keys. Values arrive loosely typed (booleans
as strings, numbers as strings, empty values dropped), so parsing is lenient in form and
strict in meaning: a value that cannot mean what its key needs fails with the key, the
value and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from nanodet.config import iou_percent
from nanodet.utils.yaml_io import YamlFileError, read_yaml_mapping

from .errors import ConfigError


def _loose_bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes", "y", "on"}:
            return True
        if lowered in {"false", "0", "no", "n", "off", ""}:
            return False
    return value


LooseBool = Annotated[bool, BeforeValidator(_loose_bool)]


def _any_case(choices: Any) -> BeforeValidator:
    """A string that is one of the ``Literal`` ``choices`` in any case or with spaces around it
    becomes that choice; any other value is left as written (the error quotes it)."""
    names = {str(c).lower(): c for c in get_args(choices)}

    def normalise(value: Any) -> Any:
        return names.get(value.strip().lower(), value) if isinstance(value, str) else value

    return BeforeValidator(normalise)


def _csv_or_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _str_list(value: Any) -> Any:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return value


class Lenient(BaseModel):
    """Platform files gain keys over versions: unknown keys are kept, not errors."""

    model_config = ConfigDict(extra="allow")


class InputPaths(Lenient):
    root_dir: str = "/in"
    assets_dir: str = "/in/assets"
    annotations_dir: str = "/in/annotations"
    models_dir: str = "/in/models"
    config_file: str = "/in/config.yaml"
    training_index_file: str = ""
    val_index_file: str = ""
    candidate_index_file: str = ""


class OutputPaths(Lenient):
    root_dir: str = "/out"
    models_dir: str = "/out/models"
    tensorboard_dir: str = "/out/tensorboard"
    training_result_file: str = "/out/models/result.yaml"
    mining_result_file: str = "/out/result.tsv"
    infer_result_file: str = "/out/infer-result.json"
    monitor_file: str = "/out/monitor.txt"
    executor_log_file: str = "/out/ymir-executor-out.log"


class EnvConfig(Lenient):
    task_id: str = "default-task"
    protocol_version: str = "0.0.1"
    run_training: LooseBool = False
    run_mining: LooseBool = False
    run_infer: LooseBool = False
    manifest_file: str = "/img-man/manifest.yaml"
    input: InputPaths = InputPaths()
    output: OutputPaths = OutputPaths()

    @field_validator("protocol_version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> str:
        return str(v) if v is not None else "0.0.1"

    @property
    def protocol(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.protocol_version.split(".") if p.isdigit())

    @property
    def uses_model_stages(self) -> bool:
        """result.yaml with model_stages (protocol >= 1.0.0) or the flat model/map form."""
        return self.protocol >= (1, 0, 0)


class PlatformKeys(Lenient):
    """Reserved keys the platform writes into every config.yaml."""

    task_id: str = "default-task"
    class_names: list[str] = Field(default_factory=list)
    gpu_id: str = ""
    gpu_count: int = Field(0, ge=0)
    shm_size: str = ""

    @field_validator("gpu_id", mode="before")
    @classmethod
    def _gpu_id_text(cls, v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, (list, tuple)):
            return ",".join(str(x) for x in v)
        return str(v)

    @field_validator("class_names", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return _csv_or_list(v)

    @property
    def gpu_ids(self) -> list[int]:
        return [int(x) for x in self.gpu_id.split(",") if x.strip()]

    @property
    def wants_gpu(self) -> bool:
        return self.gpu_count > 0 and bool(self.gpu_ids)


CacheImages = Literal["none", "ram", "disk"]


class TrainingConfig(PlatformKeys):
    """Training template (see docker/img-man/training-template.yaml for each key's meaning)."""

    config_file: str = "config/nanodet-plus-m_416.yml"
    epochs: int = Field(100, gt=0)
    input_size: int = Field(-1, ge=-1)
    learning_rate: float = -1.0
    batch_size_per_gpu: int = Field(16, gt=0)
    workers_per_gpu: int = Field(4, ge=0)
    val_intervals: int = Field(-1, ge=-1)
    resume: LooseBool = False
    load_from: str = ""
    export_format: str = "ark:raw"
    ymir_saved_file_patterns: Annotated[list[str], BeforeValidator(_csv_or_list)] = Field(default_factory=list)
    seed: int = 2345
    pretrained_model_params: Annotated[list[str], BeforeValidator(_str_list)] = Field(default_factory=list)
    evaluate_iou_thr: float = Field(0.5, gt=0.0, lt=1.0)
    evaluate_conf_thr: float = Field(0.35, ge=0.0, le=1.0)
    cache_images: Annotated[CacheImages, _any_case(CacheImages)] = "none"  # nanodet/data/image_cache.py

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, v: int) -> int:
        if v != -1 and (v < 64 or v % 32):
            raise ValueError("must be -1 (the model's size) or a multiple of 32, at least 64")
        return v

    @field_validator("evaluate_iou_thr")
    @classmethod
    def _iou_grid(cls, v: float) -> float:
        """One of 0.01 ... 0.99: the thresholds whose AP has a name (``AP_05``, ``AP_50``), so
        a value the engine would refuse later is refused here, before the dataset is read."""
        try:
            return iou_percent(v) / 100
        except ValueError:
            raise ValueError("must be a multiple of 0.01 from 0.01 to 0.99 (the mAP is AP at this IoU)") from None

    @field_validator("learning_rate")
    @classmethod
    def _lr(cls, v: float) -> float:
        if v != -1 and v <= 0:
            raise ValueError("must be -1 (the model's learning rate) or > 0")
        return v


MiningAlgorithm = Literal["aldd", "entropy", "random"]
Backend = Literal["auto", "torch", "onnxruntime", "openvino"]


class PredictConfig(PlatformKeys):
    """Mining and infer templates."""

    conf_thres: float = Field(0.35, ge=0.0, le=1.0)
    nms_thres: float = Field(0.6, gt=0.0, le=1.0)
    batch_size_per_gpu: int = Field(16, gt=0)
    workers_per_gpu: int = Field(4, ge=0)
    pin_memory: LooseBool = False
    mining_algorithm: Annotated[MiningAlgorithm, _any_case(MiningAlgorithm)] = "aldd"  # nanodet/mining/uncertainty.py
    model_params_path: Annotated[list[str], BeforeValidator(_str_list)] = Field(default_factory=list)
    config_file: str = ""
    cpu_processes: int = Field(1, ge=1, le=64)  # CPU only (gpu_count 0): processes to shard the images over
    backend: Annotated[Backend, _any_case(Backend)] = "auto"  # nanodet/deploy/runtimes.py
    mining_contact_sheet: LooseBool = True  # /out/mining-contact-sheet.png (executor/contact_sheet.py)
    mining_diversity: LooseBool = False  # near-duplicates discounted in the ranking (nanodet/mining/diversity.py)


def _describe(err: ValidationError, source: str) -> str:
    """The first error as one line: the file, the key, the value and what was expected."""
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "<root>"
    value = e.get("input")
    if e["type"] == "literal_error":
        return f"{source}: key '{key}': {value!r} is not one of {e['ctx']['expected']}"
    return f"{source}: key '{key}': value {value!r} is invalid: {e['msg']}"


def read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping from ``path`` (safe_load); errors name the file and line."""
    try:
        return read_yaml_mapping(path, what)
    except YamlFileError as err:
        raise ConfigError(str(err)) from None


def parse_env(data: dict, source: str = "env.yaml") -> EnvConfig:
    try:
        return EnvConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def parse_task_config(model: type[BaseModel], data: dict, source: str = "config.yaml"):
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None
