"""The interface of an exported graph (its input and outputs) checked against the
:class:`~.spec.ModelSpec` its metadata carries.

A runtime takes the graph's outputs by name, never by position, and every shape must be what
the spec implies: ``boxes`` ``[N, P, 4]``, ``scores`` and ``cls_logits`` ``[N, P, C]`` with
``C`` the number of class names and ``P`` the prior cells of the spec's input size at its
strides. A graph exported for another class count would otherwise give labels that index past
the class names, or name the wrong classes. The declared shapes are checked when a runtime
opens the graph (the dimensions a graph leaves free, the batch above all, are left to the
run), and the arrays of every run again, all in NumPy terms: no PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import ExportError
from .spec import ModelSpec

OUTPUT_NAMES = ("boxes", "scores", "cls_logits")  # the outputs of the graph format (spec.FORMAT)

Dim = int | None  # None: a dimension the graph leaves free (or a symbolic one)
Shape = Sequence[Dim] | None  # None: even the rank is unknown


def prior_count(spec: ModelSpec) -> int:
    """The prior cells of every pyramid level for the spec's graph input (ceil division)."""
    h, w = spec.graph_hw
    return sum(-(-h // s) * -(-w // s) for s in spec.strides)


def expected_shapes(spec: ModelSpec, batch: int | None = None) -> dict[str, tuple[Dim, ...]]:
    p, c = prior_count(spec), spec.num_classes
    return {"boxes": (batch, p, 4), "scores": (batch, p, c), "cls_logits": (batch, p, c)}


def fmt(shape: Shape) -> str:
    return "[?]" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _dim(d) -> Dim:
    """A declared dimension as an int, None when it is free (ONNX Runtime names those by a string)."""
    return d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else None


def normalise(shape) -> Shape:
    return None if shape is None else tuple(_dim(d) for d in shape)


def check_input(source: str, spec: ModelSpec, names: Sequence[str], shape: Shape) -> tuple[int, int]:
    """The graph's one input ``[N, 3, H, W]``; returns (H, W): the graph's own, else the spec's
    when the graph leaves them free. Raises :class:`ExportError` naming ``source``."""
    if len(names) != 1:
        raise ExportError(f"{source}: the graph has {len(names)} inputs ({', '.join(names)}); a NanoDet graph has one")
    shape = normalise(shape)
    if shape is not None and (len(shape) != 4 or shape[1] not in (None, 3)):
        raise ExportError(f"{source}: input '{names[0]}' is {fmt(shape)}, expected [N, 3, H, W]")
    h, w = (None, None) if shape is None else shape[2:]
    want_h, want_w = spec.graph_hw
    if (h is not None and h != want_h) or (w is not None and w != want_w):
        raise ExportError(
            f"{source}: input '{names[0]}' is {fmt(shape)}, but the metadata's input_size "
            f"{list(spec.input_wh)} needs {want_h}x{want_w}"
        )
    return want_h, want_w


def check_outputs(source: str, spec: ModelSpec, shapes: Mapping[str, Shape], batch: int | None = None) -> None:
    """The graph's outputs, by name, against the spec: exactly :data:`OUTPUT_NAMES`, each of the
    expected rank and size (free dimensions pass). ``batch``: the batch the arrays must have (a
    run's arrays). Raises :class:`ExportError`, one line naming ``source`` and what differs."""
    missing = [n for n in OUTPUT_NAMES if n not in shapes]
    extra = [n for n in shapes if n not in OUTPUT_NAMES]
    if missing or extra:
        what = "; ".join(
            part
            for part in (
                f"no output {', '.join(repr(n) for n in missing)}" if missing else "",
                f"unexpected output {', '.join(repr(n) for n in extra)}" if extra else "",
            )
            if part
        )
        raise ExportError(
            f"{source}: {what} (its outputs: {', '.join(shapes) or 'none'}; "
            f"a NanoDet graph gives {', '.join(OUTPUT_NAMES)})"
        )
    for name, want in expected_shapes(spec, batch).items():
        have = normalise(shapes[name])
        if have is None:
            continue
        if len(have) != len(want):
            raise ExportError(f"{source}: output '{name}' has rank {len(have)} ({fmt(have)}), expected {fmt(want)}")
        for axis, (h, w) in enumerate(zip(have, want)):
            if h is None or w is None or h == w:
                continue
            why = _why(spec, name, axis, h)
            raise ExportError(f"{source}: output '{name}' is {fmt(have)}, expected {fmt(want)}: {why}")


def _why(spec: ModelSpec, name: str, axis: int, got: int) -> str:
    if axis == 0:
        return f"{got} images for a batch of another size"
    if axis == 1:
        h, w = spec.graph_hw
        return (
            f"{got} prior cells, where a {h}x{w} input at strides {list(spec.strides)} has {prior_count(spec)} "
            "(the metadata's input_size or strides are not the graph's)"
        )
    if name == "boxes":
        return f"{got} numbers per box, where a box is x1, y1, x2, y2"
    return f"{got} classes, but the metadata names {spec.num_classes} (class_names; export it again with its config)"
