"""Errors a user fixes, reported by the command line as one line (exit code 2).

They are raised by modules that need PyTorch (weights, export, training) but defined here,
apart from them, so that a command that never needs PyTorch (``detect`` with an exported
graph) can name them without importing it. ``ConfigError`` lives with the config and
``RuntimeUnavailable`` with the runtimes: neither module imports PyTorch.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file."""


class ExportError(RuntimeError):
    """An export that cannot be done (missing package, unsupported model), or an exported file
    that cannot be read; names what is missing."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops before the weights are poisoned."""
