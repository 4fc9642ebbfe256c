"""The YAML configs shipped inside the package, so `--config NAME` works after `pip install`.

`resolve(spec)` turns what a user typed into a file: an existing path wins; else a bare name
("default", "chestek_contdata95", with or without .yaml) or a checkout-style path whose file is
missing here ("configs/default.yaml" run from another folder) names a shipped config. In a
checkout, configs/ is a link to this folder, so both spellings reach the same files.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, where

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT = "default"
NOT_TRAINING = ("runtime",)   # `run --config`, not `train --config`


def shipped(training: bool | None = None) -> list[str]:
    """Names of the shipped configs (training=True: training configs only; False: the others)."""
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    if training is None:
        return names
    return [n for n in names if (n not in NOT_TRAINING) == training]


def path_of(name: str) -> Path:
    """The shipped file of `name` (no check that it exists)."""
    return CONFIG_DIR / f"{name}.yaml"


def resolve(spec: str | Path | None, training: bool = True) -> Path:
    """A config file from a path or a shipped name; None means the default training config."""
    if spec is None:
        return path_of(DEFAULT)
    p = Path(spec)
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError(where(p, "is a folder; --config takes a YAML file or a shipped config name"))
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name[:-4] if p.name.endswith(".yml") else p.name
    bare = p.parent == Path(".")
    if (bare or p.parent.name == "configs") and path_of(stem).is_file():
        return path_of(stem)
    raise ConfigError(where(spec, "no such config file, and no shipped config of that name (shipped: "
                                  f"{', '.join(shipped(training))})"))
