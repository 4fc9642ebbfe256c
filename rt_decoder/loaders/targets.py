"""Which behaviour columns a recording's decoder targets: cursor, force, EMG, or all of them.

Selection is by column name, so it works the same on a limblab .mat (whose loader names EMG
`emg_<emgguide>` and force `force_<forcelabels>`) and on a canonical .npz converted from one.
Every column that is neither EMG nor force counts as cursor (pos_x, vel_y, or y0 when unnamed).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, DataError, where
from ..recording import Recording

GROUPS = ("cursor", "force", "emg")
CHOICES = (*GROUPS, "all")
PREFIX = {"emg": "emg_", "force": "force_"}
DEFAULT = "cursor"


def parse_targets(text: str | None, src: str = "--targets") -> tuple[str, ...]:
    """'cursor', 'emg', 'all' or a comma list such as 'cursor,emg' -> the groups it names."""
    text = DEFAULT if text is None else str(text)
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    bad = [w for w in words if w not in CHOICES]
    if bad or not words:
        raise ConfigError(where(src, f"must be one of {'|'.join(CHOICES)} (or a comma list), got {text!r}"))
    return GROUPS if "all" in words else tuple(g for g in GROUPS if g in words)


def group_of(name: str) -> str:
    """The target group of one behaviour column, from its name."""
    for group, prefix in PREFIX.items():
        if name.lower().startswith(prefix):
            return group
    return "cursor"


def has(rec: Recording) -> str:
    """What behaviour a recording carries, per group: 'cursor (pos_x, pos_y), emg (16: emg_PT ... emg_EDCu)'."""
    if rec.behavior is None:
        return "no behaviour columns"
    parts = []
    for g in GROUPS:
        names = [n for n in rec.behavior_names if group_of(n) == g]
        if len(names) > 4:
            parts.append(f"{g} ({len(names)}: {names[0]} ... {names[-1]})")
        elif names:
            parts.append(f"{g} ({', '.join(names)})")
    return ", ".join(parts)


def select_targets(rec: Recording, targets: str | None, path: str | Path) -> Recording:
    """Keep the behaviour columns of the asked groups, in the file's order; DataError when a group
    is missing. Plain `cursor` (the default) leaves a recording without behaviour as it is, so
    generative training on calcium data and players of spikes-only files still load."""
    text = DEFAULT if targets is None else str(targets)
    groups = parse_targets(text)
    every = "all" in [w.strip().lower() for w in text.split(",")]   # whatever is there; a named group must be
    if rec.behavior is None:
        if groups == ("cursor",):
            return rec
        raise DataError(where(path, f"--targets {text}: the file has no behaviour columns "
                                    "(EMG and force come from limblab binnedData emgdatabin / forcedatabin)"))
    cols = [i for i, n in enumerate(rec.behavior_names) if group_of(n) in groups]
    found = {group_of(rec.behavior_names[i]) for i in cols}
    missing = [] if every else [g for g in groups if g not in found]
    if missing or not cols:
        raise DataError(where(path, f"--targets {text}: no {' or '.join(missing or list(groups))} "
                                    f"columns; the file has {has(rec)}"))
    if len(cols) == rec.behavior.shape[1]:
        return rec
    return replace(rec, behavior=rec.behavior[:, cols],
                   behavior_names=[rec.behavior_names[i] for i in cols],
                   behavior_units=[rec.behavior_units[i] for i in cols]).validate()


def targets_of(card) -> str | None:
    """The targets a model card's decoder was trained on (from its output names), so `evaluate`
    loads the same columns; None for generative models, whose outputs are channels."""
    if getattr(card, "kind", "decoder") != "decoder" or not card.outputs:
        return None
    found = {group_of(o) for o in card.outputs}
    return ",".join(g for g in GROUPS if g in found)
