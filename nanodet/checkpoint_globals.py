"""The non-tensor names that old official checkpoints carry, each mapped to something inert.

The NanoDet release files (``nanodet-plus-m_416_checkpoint.ckpt`` ...) were written by
PyTorch Lightning 1.4/1.5. Beside the weights they pickle Lightning's bookkeeping: callback
state keyed by the callback's *class* (``ModelCheckpoint``), hyper-parameters as an
``AttributeDict`` or ``argparse.Namespace`` (sometimes holding a yacs ``CfgNode``), numpy
scalars for monitored scores. ``torch.load(weights_only=True)`` refuses any such name.

:func:`allowed_globals` lists, for ``torch.serialization.safe_globals``, exactly these names,
each bound to a stand-in defined here (never the real class, which is never imported) or, for
numpy's value types, to numpy's own data constructors. Under the weights-only unpickler a
stand-in can only be created, filled with plain values and used as a dict key: it holds what
the file gave it and runs nothing. Every other name is still refused.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

import numpy as np


class InertObject:
    """An object of a class the file names (a Lightning callback, an ``argparse.Namespace``):
    keeps the arguments and state the file gives it, does nothing with them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["pickled_args"] = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["pickled_state"] = state


class InertMapping:
    """A dict subclass the file names (Lightning's ``AttributeDict``, yacs' ``CfgNode``): becomes
    a plain ``OrderedDict`` of the same items, the only mapping the weights-only unpickler fills
    (its instance attributes, such as ``CfgNode``'s immutability flag, land in ``__dict__``)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


def _stand_in(qualified_name: str, base: type) -> type:
    """A distinct inert class per name (its type tells later code which class the file meant)."""
    module, _, name = qualified_name.rpartition(".")
    return type(name, (base,), {"__module__": f"nanodet.checkpoint_globals[{module}]"})


# Lightning of 2021 (`pytorch_lightning`) and its successor package (`lightning.pytorch`).
_LIGHTNING_PREFIXES = ("pytorch_lightning", "lightning.pytorch")
_LIGHTNING_OBJECTS = (
    "callbacks.model_checkpoint.ModelCheckpoint",
    "callbacks.early_stopping.EarlyStopping",
    "callbacks.lr_monitor.LearningRateMonitor",
    "callbacks.progress.ProgressBar",
    "callbacks.progress.tqdm_progress.TQDMProgressBar",
    "callbacks.gradient_accumulation_scheduler.GradientAccumulationScheduler",
    "trainer.states.TrainerFn",
    "trainer.states.TrainerStatus",
    "trainer.states.RunningStage",
)
_LIGHTNING_MAPPINGS = ("utilities.parsing.AttributeDict",)
_OTHER_OBJECTS = ("argparse.Namespace",)
_OTHER_MAPPINGS = ("yacs.config.CfgNode", "lightning.fabric.utilities.data.AttributeDict")

STAND_INS: dict[str, type] = {}
for _prefix in _LIGHTNING_PREFIXES:
    for _name in _LIGHTNING_OBJECTS:
        STAND_INS[f"{_prefix}.{_name}"] = _stand_in(f"{_prefix}.{_name}", InertObject)
    for _name in _LIGHTNING_MAPPINGS:
        STAND_INS[f"{_prefix}.{_name}"] = _stand_in(f"{_prefix}.{_name}", InertMapping)
for _name in _OTHER_OBJECTS:
    STAND_INS[_name] = _stand_in(_name, InertObject)
for _name in _OTHER_MAPPINGS:
    STAND_INS[_name] = _stand_in(_name, InertMapping)


def _numpy_globals() -> list[tuple[Any, str]]:
    """numpy's value constructors under the names old and new numpy pickle them by: scalars
    (``best_model_score``), dtypes and plain arrays. They build data, not behaviour; an object
    array's items go through the same restricted unpickler."""
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # numpy 1.26, which pyproject still allows
        from numpy.core import multiarray

    found: list[tuple[Any, str]] = []
    for package in ("numpy.core", "numpy._core"):
        found += [
            (multiarray.scalar, f"{package}.multiarray.scalar"),
            (multiarray._reconstruct, f"{package}.multiarray._reconstruct"),
        ]
    found += [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    # a dtype object's own class must be allowed for its state to be set (numpy >= 1.25)
    found += [
        (cls, f"numpy.dtypes.{name}")
        for name, cls in vars(np.dtypes).items()
        if isinstance(cls, type) and issubclass(cls, np.dtype)
    ]
    return found


@functools.cache
def allowed_globals() -> list[tuple[Any, str]]:
    """``(object, qualified name)`` pairs for ``torch.serialization.safe_globals`` (built once)."""
    return [(cls, name) for name, cls in STAND_INS.items()] + _numpy_globals()


def meant_class(obj: Any) -> str | None:
    """The qualified class name a stand-in (or an instance of one) stands for, else None."""
    cls = obj if isinstance(obj, type) else type(obj)
    return next((name for name, stand_in in STAND_INS.items() if stand_in is cls), None)
