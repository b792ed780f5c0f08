"""Carrying a head's learned rows over to another class set (fine-tuning COCO weights on a
project's classes, or a previous round's model on a changed class list).

The last conv of each head predicts, per location, one logit per class followed (in the
NanoDet-Plus head, whose one 1×1 conv predicts both) by ``4·(reg_max+1)`` box-distribution
bins. With another class count that tensor has another shape, but only its class rows depend
on the classes: the box rows, and the rows of every class both sets share by name, transfer.

:func:`transfer_class_rows` builds, for each such tensor, the model's own (initial) tensor
with those rows copied in; classes new to the model keep their initial rows (the head's
prior-probability bias), classes only the file knows are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

# The class convs of the detection head (one per level) and of the aux head: class rows first.
CLASS_CONV = re.compile(r"^(head\.gfl_cls\.\d+|aux_head\.gfl_cls)\.(weight|bias)$")

# The 80 COCO classes in the order of the official configs and release checkpoints.
COCO_CLASS_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag "
    "tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair couch potted_plant bed dining_table toilet tv laptop mouse remote "
    "keyboard cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
).split()


def name_key(name: str) -> str:
    """Class names compare case-blind, with spaces and hyphens as underscores
    ("Traffic light" is COCO's "traffic_light")."""
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


def class_mapping(target: Sequence[str], source: Sequence[str]) -> list[int | None]:
    """For each target class, the index of the source class of the same name (or None)."""
    index = {}
    for i, name in enumerate(source):
        index.setdefault(name_key(name), i)
    return [index.get(name_key(name)) for name in target]


@dataclass
class ClassTransfer:
    """What :func:`transfer_class_rows` did, for the log."""

    tensors: list[str] = field(default_factory=list)
    box_rows: int = 0  # box-distribution rows kept per tensor of the Plus head
    kept: list[str] = field(default_factory=list)  # target classes whose rows came from the file
    new: list[str] = field(default_factory=list)  # target classes at their initial rows
    source_classes: int = 0
    names_from: str = ""

    def summary(self) -> str:
        parts = [f"{len(self.tensors)} class-conv tensors rebuilt from {self.source_classes} to "]
        parts.append(f"{len(self.kept) + len(self.new)} classes")
        if self.box_rows:
            parts.append(f"; box-distribution rows kept ({self.box_rows} per tensor)")
        if self.names_from:
            kept = ", ".join(self.kept) if self.kept else "none"
            parts.append(f"; class rows kept for {len(self.kept)} classes matched by name ({kept})")
        else:
            parts.append("; the file's class names are unknown: class rows start anew")
        if self.new:
            parts.append(f"; new classes at their initial rows: {', '.join(self.new)}")
        if self.names_from:
            parts.append(f" [file's classes: {self.names_from}]")
        return "".join(parts)


def class_rows(own: torch.Tensor, theirs: torch.Tensor, num_classes: int) -> int | None:
    """The class count of ``theirs``, a class-conv tensor of the same kind as ``own`` (whose
    first ``num_classes`` rows are classes), or None when they are not comparable."""
    if own.shape[1:] != theirs.shape[1:]:
        return None
    tail = own.shape[0] - num_classes  # the box rows, the same count in both
    source_classes = theirs.shape[0] - tail
    return source_classes if tail >= 0 and source_classes > 0 else None


def transfer_class_rows(
    own_state: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    num_classes: int,
    class_names: Sequence[str] | None,
    source_names: Sequence[tuple[Sequence[str], str]] = (),
) -> tuple[dict[str, torch.Tensor], ClassTransfer | None]:
    """``state`` with its class-conv tensors rebuilt for the model's classes, when the file's
    classes differ from the model's (in count, or by name when both name lists are known).

    ``own_state``: the model's state (its initial rows for new classes); ``num_classes`` and
    ``class_names``: the model's classes; ``source_names``: candidate ``(names, where they
    come from)`` for the file's classes, the first with the file's class count is used. With
    none, only the box rows transfer when the counts differ, and equal counts load as they are."""
    keys = [k for k in state if CLASS_CONV.match(k) and k in own_state]
    if not keys:
        return state, None
    counts = {class_rows(own_state[k], state[k], num_classes) for k in keys}
    if len(counts) != 1 or None in counts:
        return state, None  # not one consistent head layout: the plain shape check decides
    source_classes = counts.pop()
    names_from = ""
    source: Sequence[str] | None = None
    for candidate, origin in source_names:
        if len(candidate) == source_classes:  # names that describe this file
            source, names_from = candidate, origin
            break
    same_names = class_names is None or source is None or [*map(name_key, class_names)] == [*map(name_key, source)]
    if source_classes == num_classes and same_names:
        return state, None
    mapping = class_mapping(class_names, source) if class_names is not None and source is not None else []
    mapping += [None] * (num_classes - len(mapping))
    out = dict(state)
    for key in keys:
        theirs, rebuilt = state[key], own_state[key].detach().clone()
        rebuilt[num_classes:] = theirs[source_classes:]
        for target, source in enumerate(mapping):
            if source is not None:
                rebuilt[target] = theirs[source]
        out[key] = rebuilt
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(num_classes)]
    transfer = ClassTransfer(
        tensors=keys,
        box_rows=max(own_state[k].shape[0] for k in keys) - num_classes,
        kept=[n for n, s in zip(names, mapping) if s is not None],
        new=[n for n, s in zip(names, mapping) if s is None],
        source_classes=source_classes,
        names_from=names_from,
    )
    return out, transfer
