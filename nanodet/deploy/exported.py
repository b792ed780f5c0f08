"""Exported graphs as files: which paths are one, and the :class:`~.spec.ModelSpec` each carries.

Reading them needs no PyTorch (the ONNX metadata is read from the file's bytes, an OpenVINO
IR through OpenVINO): ``nanodet detect`` with an exported graph never imports it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ExportError
from .onnx_metadata import NotOnnx, read_onnx_metadata
from .spec import ModelSpec

EXPORTED_SUFFIXES = (".onnx", ".xml")


def is_exported(path: str | Path | None) -> bool:
    """Whether ``path`` names an exported graph (ONNX, or OpenVINO IR) rather than PyTorch weights."""
    return path is not None and Path(path).suffix.lower() in EXPORTED_SUFFIXES


def require(module: str, purpose: str):
    """The optional package ``module``, or an :class:`ExportError` naming the extra to install."""
    try:
        return __import__(module)
    except ImportError:
        extra = "openvino" if module == "openvino" else "onnx"
        raise ExportError(f"{purpose} needs the '{module}' package: pip install 'nanodet-ymir[{extra}]'") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read from its bytes (no ``onnx`` import, the
    weights skipped over: :mod:`.onnx_metadata`)."""
    try:
        with open(path, "rb") as f:
            return read_onnx_metadata(f)
    except (NotOnnx, UnicodeDecodeError) as err:
        raise ExportError(f"{path}: not an ONNX model ({err})") from None


def read_spec(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` stored in an exported ``.onnx`` (metadata) or ``.xml`` (runtime info)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: model file not found")
    if path.suffix.lower() == ".xml":
        ov = require("openvino", "reading an OpenVINO model")
        model = ov.Core().read_model(str(path))
        meta = {
            key: str(model.get_rt_info(["nanodet", key]).astype(str))
            for key in ModelSpec.metadata_keys()
            if model.has_rt_info(["nanodet", key])
        }
    else:
        meta = read_metadata(path)
    try:
        return ModelSpec.from_metadata(meta, str(path))
    except ValueError as err:
        raise ExportError(str(err)) from None
