"""The non-tensor names that old official checkpoints carry, each mapped to something inert.

The NanoDet release files (``nanodet-plus-m_416_checkpoint.ckpt`` ...) were written by
PyTorch Lightning 1.4/1.5. Beside the weights they pickle Lightning's bookkeeping: callback
state keyed by the callback's *class* (``ModelCheckpoint``), hyper-parameters as an
``AttributeDict`` or ``argparse.Namespace`` (sometimes holding a yacs ``CfgNode``), numpy
scalars for monitored scores. ``torch.load(weights_only=True)`` refuses any such name.

:func:`allowed_globals` lists, for ``torch.serialization.safe_globals``, exactly these names,
each bound to a stand-in defined here (never the real class, which is never imported) or, for
numpy's scalars and arrays, to a constructor here that checks before it builds: only plain
numeric and bool dtypes, and no file state ever reaches numpy's ``dtype.__setstate__``. Under
the weights-only unpickler a stand-in can only be created, filled with plain values and used as
a dict key: it holds what the file gave it and runs nothing. Every other name is still refused,
numpy's dtype classes (``numpy.dtypes.*``) included.
"""

from __future__ import annotations

import functools
import math
import pickle
import re
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
    return type(name, (base,), {"__module__": f"nanodet.weights.stand_ins[{module}]"})


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


# --- numpy values ----------------------------------------------------------------------
# A release file holds numpy scalars (``best_model_score`` and the like): numpy pickles one as
# ``scalar(dtype(code, align, copy) + BUILD state, raw bytes)``, and an array as
# ``_reconstruct(ndarray, shape, code)`` + BUILD ``(version, shape, dtype, fortran, raw bytes)``.
# numpy's own constructors would take any dtype and any state: through ``dtype.__setstate__``
# a file can clear an object dtype's "holds objects" flag, and an array or scalar of it then
# reads file bytes as object pointers (a SIGSEGV at the first ``float()`` or ``repr()``, or when
# it is freed). So each name is bound to a constructor here that checks first and builds only
# plain numeric and bool values; numpy's ``dtype.__setstate__`` never sees a file's state.

# numpy's scalar types of the plain numeric and bool dtypes (``dtype.type`` of each)
_PLAIN_CODES = ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16")
PLAIN_SCALAR_TYPES = frozenset(np.dtype(code).type for code in _PLAIN_CODES) | {np.longdouble, np.clongdouble}
_PLAIN_CODE = re.compile(r"[biufc][0-9]{1,2}\Z")  # how numpy pickles them: 'f8', 'b1', 'c16' ...
_BYTE_ORDERS = ("<", ">", "|", "=")
_MAX_DIMS = 64  # numpy 2's limit (32 in numpy 1)


class RefusedValue(pickle.UnpicklingError):
    """A value a checkpoint may not hold, found while it is read. An ``UnpicklingError``, so
    that torch reports it as the unpickler's own error; the message starts with "refused: "."""


def dtype_problem(dtype: Any) -> str | None:
    """Why ``dtype`` is not a plain numeric or bool dtype (else None). Reads the dtype's own
    attributes only, never an element, so a forged dtype is safe to look at."""
    if not isinstance(dtype, np.dtype):
        return f"a {type(dtype).__name__} where a numpy dtype belongs"
    if dtype.hasobject:
        return "a numpy dtype holding Python objects"
    if dtype.fields is not None or dtype.names is not None:
        return "a structured numpy dtype"
    if dtype.subdtype is not None:
        return "a numpy sub-array dtype"
    if dtype.kind not in "biufc" or dtype.type not in PLAIN_SCALAR_TYPES:
        return f"a numpy dtype of kind {dtype.kind!r} (object, void, string or time)"
    if dtype.flags:
        return f"a numpy dtype with flags {dtype.flags:#x}"
    return None


class PickledDtype:
    """``numpy.dtype`` as a checkpoint names it. Built from a plain code (``'f8'``, ``'b1'``);
    its pickled state may only set the byte order: anything else (fields, a sub-array, other
    flags, another size) is refused. ``.dtype`` is the numpy dtype it stands for."""

    dtype: np.dtype

    def __new__(cls, code: Any = None, align: Any = False, copy: Any = True) -> PickledDtype:
        if type(code) is not str or not _PLAIN_CODE.match(code):
            what = repr(code[:40]) if type(code) is str else f"given as a {type(code).__name__}"
            raise RefusedValue(f"refused: numpy dtype {what} (only plain numeric and bool dtypes are accepted)")
        if type(align) not in (bool, int) or type(copy) not in (bool, int):
            raise RefusedValue("refused: numpy dtype arguments that are not flags")
        try:
            dtype = np.dtype(code)
        except TypeError:
            raise RefusedValue(f"refused: numpy dtype {code!r} (not a numpy type code)") from None
        if (problem := dtype_problem(dtype)) is not None:
            raise RefusedValue(f"refused: {problem} ({code!r})")
        self = super().__new__(cls)
        self.__dict__.update(dtype=dtype, base=dtype)
        return self

    def __setstate__(self, state: Any) -> None:
        """numpy's dtype state ``(3, byte order, subarray, names, fields, elsize, alignment,
        flags)`` (version 4 adds metadata): only the byte order may be other than the plain
        dtype's own."""
        base: np.dtype = self.__dict__["base"]
        if type(state) is not tuple or len(state) not in (8, 9) or type(state[0]) is not int:
            raise RefusedValue("refused: a numpy dtype state of another layout")
        if state[0] != 3 + (len(state) == 9):
            raise RefusedValue("refused: a numpy dtype state of another layout")
        order, subarray, names, fields, elsize, alignment, flags = state[1:8]
        plain = (
            type(order) is str
            and order in _BYTE_ORDERS
            and subarray is None
            and names is None
            and fields is None
            and type(elsize) is int
            and elsize in (-1, base.itemsize)
            and type(alignment) is int
            and alignment in (-1, base.alignment)
            and type(flags) is int
            and flags == base.flags
            and (len(state) == 8 or state[8] is None)
        )
        if not plain:
            raise RefusedValue(
                f"refused: a numpy {base.name} dtype state that would change more than its byte order "
                "(fields, a sub-array, object flags or another size)"
            )
        dtype = base.newbyteorder(order) if order in "<>" and base.itemsize > 1 else base
        self.__dict__["dtype"] = dtype

    def __repr__(self) -> str:
        return f"PickledDtype({self.dtype.str!r})"


def plain_scalar(dtype: Any, data: Any = None) -> np.generic:
    """numpy's ``scalar(dtype, raw bytes)``, for plain dtypes only: a numpy scalar of that value."""
    if type(dtype) is not PickledDtype:
        raise RefusedValue("refused: a numpy scalar whose dtype is not a plain numeric or bool dtype")
    if type(data) is not bytes or len(data) != dtype.dtype.itemsize:
        raise RefusedValue(f"refused: a numpy {dtype.dtype.name} scalar whose data is not {dtype.dtype.itemsize} bytes")
    return np.frombuffer(data, dtype=dtype.dtype, count=1)[0]


class PickledArray(np.ndarray):
    """``numpy.ndarray`` as a checkpoint names it: an array of a plain dtype, filled once from its
    pickled state (shape, dtype, raw bytes of exactly that size). It cannot be built directly
    (``ndarray(shape, dtype, buffer)``), only by :func:`array_shell` and one ``__setstate__``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledArray:
        raise RefusedValue("refused: numpy.ndarray called directly (arrays are accepted only as numpy pickles them)")

    def __setstate__(self, state: Any) -> None:
        if self.__dict__.get("filled"):  # a second state would free data a tensor may share
            raise RefusedValue("refused: a numpy array given its state twice")
        if type(state) is not tuple or len(state) not in (4, 5):
            raise RefusedValue("refused: a numpy array state of another layout")
        shape, dtype, fortran, data = state[-4:]
        if len(state) == 5 and (type(state[0]) is not int or state[0] != 1):
            raise RefusedValue("refused: a numpy array state of another version")
        if type(dtype) is not PickledDtype:
            raise RefusedValue("refused: a numpy array whose dtype is not a plain numeric or bool dtype")
        if type(shape) is not tuple or len(shape) > _MAX_DIMS or any(type(n) is not int or n < 0 for n in shape):
            raise RefusedValue("refused: a numpy array of a malformed shape")
        count = math.prod(shape)
        if type(fortran) not in (bool, int) or type(data) is not bytes or len(data) != count * dtype.dtype.itemsize:
            raise RefusedValue(f"refused: a numpy array whose data is not {count} {dtype.dtype.name} values")
        # numpy keeps large data in the bytes object it is given and writes there: a private copy,
        # so that writing to the array cannot change a bytes object the file uses elsewhere
        np.ndarray.__setstate__(self, (1, shape, dtype.dtype, bool(fortran), bytes(bytearray(data))))
        self.__dict__["filled"] = True

    def __reduce__(self) -> tuple:  # pickled again, it is a plain array
        return np.asarray(self).view(np.ndarray).copy().__reduce__()


def array_shell(subtype: Any, shape: Any = (0,), code: Any = b"b") -> PickledArray:
    """numpy's ``_reconstruct(ndarray, shape, code)``: an empty array for its state to fill."""
    if subtype is not PickledArray:
        raise RefusedValue("refused: a numpy array of a subclass")
    return np.ndarray.__new__(PickledArray, (0,), np.uint8)


def _numpy_globals() -> list[tuple[Any, str]]:
    """The names numpy pickles scalars and arrays by (numpy 1 under ``numpy.core``, numpy 2
    under ``numpy._core``), each bound to its checking constructor above. numpy's dtype
    classes (``numpy.dtypes.*``) are not named: no real dtype is ever given a file's state."""
    found: list[tuple[Any, str]] = [(PickledDtype, "numpy.dtype"), (PickledArray, "numpy.ndarray")]
    for package in ("numpy.core", "numpy._core"):
        found += [(plain_scalar, f"{package}.multiarray.scalar"), (array_shell, f"{package}.multiarray._reconstruct")]
    return found


@functools.cache
def allowed_globals() -> list[tuple[Any, str]]:
    """``(object, qualified name)`` pairs for ``torch.serialization.safe_globals`` (built once)."""
    return [(cls, name) for name, cls in STAND_INS.items()] + _numpy_globals()


def meant_class(obj: Any) -> str | None:
    """The qualified class name a stand-in (or an instance of one) stands for, else None."""
    cls = obj if isinstance(obj, type) else type(obj)
    return next((name for name, stand_in in STAND_INS.items() if stand_in is cls), None)
