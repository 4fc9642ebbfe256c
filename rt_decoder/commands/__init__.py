"""One module per `rt-decoder` sub-command (see rt_decoder/cli.py)."""

from __future__ import annotations

import importlib
from types import ModuleType


def training_module(name: str) -> ModuleType:
    """`training.<name>` (which imports torch), or one line saying how to install torch."""
    from ..errors import ConfigError

    try:
        return importlib.import_module(f"training.{name}")
    except ModuleNotFoundError as e:
        if e.name == "torch":
            raise ConfigError("torch is not installed: pip install 'rt-decoder[train]'") from None
        raise
