"""Reading and writing weights in the official NanoDet formats.

- ``.pth`` (``nanodet_model_best.pth``): ``{"state_dict": {...}}`` with plain model keys.
- Lightning ``.ckpt``: ``state_dict`` holds ``model.*`` (raw) and ``avg_model.*`` (EMA) keys;
  the averaged weights win when present.

Files are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.
The few Lightning/yacs/argparse/numpy names that old official checkpoints carry beside their
weights are read into inert stand-ins (``stand_ins``); every other name is refused.
numpy values are built only of plain numeric and bool dtypes, and the loaded object is walked
(``values``) before any value is used: an object, void or structured dtype, or a
tensor other than a dense CPU one, anywhere in it, refuses the file.
Fine-tuning onto another class set keeps what transfers (``class_transfer``): the box rows of
the class convs and the rows of every class the file and the model share by name; other tensors
whose shape differs from the model are skipped and reported. Weights of another architecture
(too few backbone/neck tensors fit) are refused rather than trained almost from scratch.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..model.detector import AUX_PREFIXES
from ..utils.io import atomic_torch_save
from .class_transfer import COCO_CLASS_NAMES, ClassTransfer, transfer_class_rows
from .stand_ins import allowed_globals
from .values import refused_value

log = logging.getLogger(__name__)

HEAD_PREFIXES = ("head.", *AUX_PREFIXES)
# Fine-tuning needs this share of the backbone and neck tensors to fit, else the file is refused.
MIN_BODY_FIT = 0.9
ONLY_PLAIN = "only tensors and plain values are accepted"
# The pickle of a NanoDet checkpoint (the tensors' bytes are records beside it) is 0.1-0.4 MB.
# Unpickled, one byte can become a 216-byte object (an empty set): the cap keeps what a crafted
# pickle can make under a gigabyte.
MAX_PICKLE_BYTES = 4 << 20


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    source_format: str = ""
    class_transfer: ClassTransfer | None = None

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} tensors loaded, {len(self.shape_mismatch)} skipped (shape), "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected ({self.source_format})"
        )


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint mapping, read safely; one clear error line when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if (size := _pickle_size(path)) > MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{path}: refused: its pickle is {size / 2**20:.1f} MiB (a NanoDet checkpoint's is under 1 MiB; "
            f"at most {MAX_PICKLE_BYTES >> 20} MiB are read); {ONLY_PLAIN}"
        )
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign files
        raise CheckpointError(f"{path}: {_load_failure(err)}") from None
    if (refused := refused_value(obj)) is not None:
        raise CheckpointError(f"{path}: refused: {refused}; {ONLY_PLAIN}")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a NanoDet checkpoint (top level is {type(obj).__name__})")
    return obj


def _pickle_size(path: Path) -> int:
    """The size the zip's directory gives the largest ``data.pkl`` in it (0 for a file that is
    no zip: ``torch.load`` says what it is)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return max((i.file_size for i in archive.infolist() if i.filename.endswith("data.pkl")), default=0)
    except Exception:  # noqa: BLE001 - a damaged zip is torch.load's to report
        return 0


def _load_failure(err: Exception) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused a file. Torch's own text
    for a refused pickle advises loading with ``weights_only=False``: the detail is kept, the
    advice dropped."""
    text = str(err).strip()
    if text.startswith("Weights only load failed"):
        lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        advice = ("(1)", "(2)", "Please file an issue", "Check the documentation")
        unpickler = [
            line.removeprefix("WeightsUnpickler error: ") for line in lines if line.startswith("WeightsUnpickler error")
        ]
        detail = next(iter(unpickler), next((line for line in lines if not line.startswith(advice)), ""))
        detail = detail.split(". Please use")[0]  # torch's advice on allow-listing the global
        if detail.startswith("refused: "):  # a numpy value stand_ins would not build
            return f"{detail[:300]}; {ONLY_PLAIN}"
        if "GLOBAL" in detail:  # a pickle naming a function or class: loading it could run code
            return f"refused: loading it would import code ({detail[:200]}); {ONLY_PLAIN}"
        return f"not a readable PyTorch checkpoint (not a weights-only pickle: {detail[:200] or 'unreadable'})"
    reason = text.splitlines()[0] if text else type(err).__name__
    return f"not a readable PyTorch checkpoint ({reason[:200]})"


def extract_state_dict(ckpt: dict, source: str = "<checkpoint>") -> tuple[dict[str, torch.Tensor], str]:
    """Plain model keys from any official layout, and a name for the layout found."""
    sd = ckpt.get("state_dict", ckpt)
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{source}: not a NanoDet checkpoint (no state_dict of tensors)")
    if not all(isinstance(k, str) for k in sd):
        raise CheckpointError(f"{source}: not a NanoDet checkpoint (a state_dict key is not a name)")
    if any(k.startswith("avg_model.") for k in sd):
        return {k[len("avg_model.") :]: v for k, v in sd.items() if k.startswith("avg_model.")}, "ckpt (EMA weights)"
    if any(k.startswith("model.") for k in sd):
        return {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}, "ckpt (raw weights)"
    out = {}
    for k, v in sd.items():
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out, "pth" if "state_dict" in ckpt else "bare state dict"


def file_class_names(ckpt: dict) -> list[str] | None:
    """The class names a checkpoint of ours records (``class_names``), else None."""
    names = ckpt.get("class_names")
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def load_state_dict_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    fmt: str = "",
    class_names: list[str] | None = None,
    source_names: list[tuple[list[str], str]] = (),
    carry_classes: bool = False,
) -> LoadReport:
    """Copy every tensor whose name and shape fit; report the rest (nothing raises). With
    ``carry_classes``, a model with a ``head`` of ``num_classes`` first has the file's class
    convs carried over to its classes (:func:`~nanodet.weights.class_transfer.transfer_class_rows`)."""
    own = model.state_dict()
    has_aux = any(k.startswith(AUX_PREFIXES) for k in own)
    report = LoadReport(source_format=fmt)
    num_classes = getattr(getattr(model, "head", None), "num_classes", None)
    if carry_classes and num_classes is not None:
        state, report.class_transfer = transfer_class_rows(own, state, num_classes, class_names, source_names)
    usable = {}
    for key, value in state.items():
        if key not in own:
            if not (key.startswith(AUX_PREFIXES) and not has_aux):  # training-only keys are fine to drop
                report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.shape_mismatch.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            usable[key] = value
            report.loaded.append(key)
    report.missing = [k for k in own if k not in usable and k not in {m[0] for m in report.shape_mismatch}]
    model.load_state_dict(usable, strict=False)
    return report


def load_weights(
    model: nn.Module,
    path: str | Path,
    logger: logging.Logger = log,
    strict: bool = False,
    class_names: list[str] | None = None,
    source_class_names: list[str] | None = None,
    ckpt: dict | None = None,
) -> LoadReport:
    """Load an official ``.pth``/``.ckpt`` (or one of ours) into ``model`` and log what happened.

    Not strict (training, fine-tuning): the file's class convs are carried over to the model's
    classes ``class_names`` (box rows, and the rows of classes matched by name; the file's
    names are ``source_class_names``, else those it records, else COCO's for an 80-class file:
    the official release); other tensors of another shape are skipped and logged. Fewer than
    ``MIN_BODY_FIT`` of the backbone and neck tensors fitting is an error (another
    architecture). Strict (inference): every tensor of the model must be in the file with its
    shape, else :class:`CheckpointError` says what does not fit. Training-only aux keys are
    ignored by a model without the aux branch either way. ``ckpt``: the file's contents when
    the caller has already read them with :func:`read_checkpoint`.
    """
    if ckpt is None:
        ckpt = read_checkpoint(path)
    state, fmt = extract_state_dict(ckpt, str(path))
    candidates = []
    if source_class_names:
        candidates.append((list(source_class_names), "given with the weights"))
    if recorded := file_class_names(ckpt):
        candidates.append((recorded, "recorded in the file"))
    candidates.append((list(COCO_CLASS_NAMES), "COCO's 80, as in the official release files"))
    report = load_state_dict_into(model, state, fmt, class_names, candidates, carry_classes=not strict)
    if not report.loaded:
        raise CheckpointError(f"{path}: no tensor in this checkpoint fits the model (wrong architecture?)")
    if strict and (report.shape_mismatch or report.missing):
        raise CheckpointError(misfit_message(path, model, report))
    if not strict:
        check_body_fit(path, model, report)
    if report.class_transfer is not None:
        logger.info("class convs of %s: %s", path, report.class_transfer.summary())
    for key, theirs, ours in report.shape_mismatch:
        logger.warning("skip %s: checkpoint shape %s, model shape %s", key, list(theirs), list(ours))
    if report.missing:
        logger.warning(
            "%d model tensors not in %s (kept at init), e.g. %s", len(report.missing), path, report.missing[:3]
        )
    if report.unexpected:
        logger.warning(
            "%d tensors in %s unknown to the model, e.g. %s", len(report.unexpected), path, report.unexpected[:3]
        )
    logger.info("loaded %s: %s", path, report.summary())
    return report


def check_body_fit(path: str | Path, model: nn.Module, report: LoadReport) -> None:
    """Refuse weights of which too few backbone and neck tensors fit (a 1.5x file for a 1.0x
    config): training would start almost from scratch while looking like a fine-tune."""
    body = [k for k in model.state_dict() if not k.startswith(HEAD_PREFIXES)]
    if not body:
        return
    fit = sum(1 for k in report.loaded if not k.startswith(HEAD_PREFIXES))
    if fit >= MIN_BODY_FIT * len(body):
        return
    wrong = [(k, theirs, ours) for k, theirs, ours in report.shape_mismatch if not k.startswith(HEAD_PREFIXES)]
    example = (
        f"e.g. {wrong[0][0]}: {list(wrong[0][1])} in the file, {list(wrong[0][2])} in the model"
        if wrong
        else f"e.g. {next(k for k in body if k not in report.loaded)} missing from the file"
    )
    raise CheckpointError(
        f"{path}: only {fit} of the model's {len(body)} backbone and neck tensors fit "
        f"(at least {MIN_BODY_FIT:.0%} must; {len(wrong)} of another shape, {example}): "
        "weights of another architecture or width than the model config"
    )


def misfit_message(path: str | Path, model: nn.Module, report: LoadReport) -> str:
    """What makes weights unusable for inference with ``model``, in one line."""
    parts = []
    head = getattr(model, "head", None)
    cls_shapes = [(theirs, ours) for key, theirs, ours in report.shape_mismatch if key.startswith("head.gfl_cls")]
    if cls_shapes and hasattr(head, "num_classes"):
        theirs, ours = cls_shapes[0]
        parts.append(
            f"the weights are for {head.num_classes + theirs[0] - ours[0]} classes, "
            f"the model config has {head.num_classes}"
        )
    if report.shape_mismatch:
        key, theirs, ours = report.shape_mismatch[0]
        parts.append(
            f"{len(report.shape_mismatch)} tensors of another shape (e.g. {key}: "
            f"{list(theirs)} in the file, {list(ours)} in the model)"
        )
    if report.missing:
        parts.append(f"{len(report.missing)} model tensors missing from the file (e.g. {report.missing[0]})")
    reasons = "; ".join(parts)
    return f"{path}: these weights do not fit the model config: {reasons} (another class count or architecture?)"


def save_pth(
    model: nn.Module | dict[str, torch.Tensor],
    path: str | Path,
    inference_only: bool = False,
    class_names: list[str] | None = None,
) -> None:
    """Write ``{"state_dict": ...}`` (the official ``.pth`` layout) atomically, with the class
    names beside it when given (official tools ignore the extra key; fine-tuning reads it)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    if inference_only:
        state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIXES)}
    ckpt: dict = {"state_dict": {k: v.detach().cpu() for k, v in state.items()}}
    if class_names:
        ckpt["class_names"] = list(class_names)
    atomic_torch_save(ckpt, path)
