"""Reading YAML mappings safely (``yaml.safe_load``), with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import yaml


class YamlFileError(ValueError):
    """A YAML file that cannot be read as a mapping; the message names the file (and line)."""


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The mapping in ``path`` (an empty file is ``{}``); ``what`` names the file in messages."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlFileError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as err:
        raise YamlFileError(f"{path}: cannot read {what}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise YamlFileError(f"{path}: cannot read {what}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        raise YamlFileError(f"{path}:{where} {what} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise YamlFileError(f"{path}: {what} must be a mapping of keys to values, got {type(data).__name__}")
    return data
