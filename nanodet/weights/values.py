"""What a loaded checkpoint may hold, checked before any of its values is used.

The weights-only unpickler and the constructors of :mod:`nanodet.weights.stand_ins` already
refuse what they can while a file is read. This is the second look, at the finished object:
every container is walked (cycles and any depth: the walk keeps its own stack) and a numpy
value of an object, void, structured or sub-array dtype, or a tensor other than a plain dense
CPU tensor, is refused. Only types and attributes are read, never an element, so a forged
value is looked at without being dereferenced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .stand_ins import PLAIN_SCALAR_TYPES, InertObject, PickledArray, PickledDtype, dtype_problem

_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device, torch.layout)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def tensor_problem(tensor: torch.Tensor) -> str | None:
    """Why ``tensor`` is not a plain dense CPU tensor (the only kind a checkpoint of ours or an
    official one holds), else None."""
    if type(tensor) not in _TENSOR_TYPES:
        return f"a tensor of class {type(tensor).__name__}"
    if tensor.layout != torch.strided or tensor.is_nested:
        return f"a {tensor.layout} tensor"
    if tensor.device.type != "cpu":
        return f"a tensor on {tensor.device.type}"
    if tensor.is_quantized:
        return "a quantized tensor"
    return None


def _value_problem(value: Any) -> str | None:
    if isinstance(value, torch.Tensor):
        return tensor_problem(value)
    if isinstance(value, np.ndarray):
        if type(value) not in (np.ndarray, PickledArray):
            return f"a numpy array of class {type(value).__name__}"
        return dtype_problem(value.dtype)
    if isinstance(value, np.generic):
        return None if type(value) in PLAIN_SCALAR_TYPES else f"a numpy {type(value).__name__} scalar"
    if isinstance(value, np.dtype):
        return dtype_problem(value)
    if type(value) is PickledDtype:
        return dtype_problem(value.dtype)
    return None


def _children(value: Any) -> list[tuple[Any, str]]:
    """The values ``value`` holds, each with how to reach it from ``value``."""
    if isinstance(value, dict):
        out: list[tuple[Any, str]] = []
        for key, item in value.items():
            label = repr(key)[:60] if type(key) in (str, int) else f"<{type(key).__name__} key>"
            out += [(key, f"[key {label}]"), (item, f"[{label}]")]
        return out + [(item, f".{name}") for name, item in vars(value).items()] if hasattr(value, "__dict__") else out
    if isinstance(value, (list, tuple)):
        return [(item, f"[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return [(item, "[item]") for item in value]
    if isinstance(value, (InertObject, torch.Tensor)):
        return [(item, f".{name}") for name, item in vars(value).items()]
    return []


def refused_value(obj: Any) -> str | None:
    """The first value in ``obj`` a checkpoint may not hold, as "what at where" (``where`` is
    the key path from the top, e.g. ``['callbacks'][...]['best_model_score']``), else None."""
    seen: set[int] = set()
    steps: list[tuple[int, str]] = [(-1, "")]  # (parent, step) of each value reached: paths cost O(1) each
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, node = stack.pop()
        if type(value) in _LEAVES:
            continue
        if (problem := _value_problem(value)) is not None:
            return f"{problem} at {_path(steps, node)}"
        if id(value) in seen:
            continue
        seen.add(id(value))
        for child, step in reversed(_children(value)):
            steps.append((node, step))
            stack.append((child, len(steps) - 1))
    return None


def _path(steps: list[tuple[int, str]], node: int, most: int = 12) -> str:
    parts = []
    while node > 0:
        node, step = steps[node]
        parts.append(step)
    if not parts:
        return "the top level"
    shown = parts[:most][::-1]
    return ("..." if len(parts) > most else "") + "".join(shown)
