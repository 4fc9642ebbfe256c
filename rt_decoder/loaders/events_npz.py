"""Event .npz recordings (`spike_times` + `spike_channels`, DESIGN §3), binned at the asked width.

Kept apart from `recording.load_npz` (binned counts only) so that `recording` never needs
`events`: `events` builds Recordings, and the data type must not depend on its producers.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError, where
from ..events import bin_events
from ..recording import Recording

KEYS = ("spike_times.npy", "spike_channels.npy")


def is_events_npz(path: Path) -> bool:
    """True when the archive holds spike times and channels and no binned counts."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False  # load_npz reports what is wrong with the file
    return all(k in names for k in KEYS) and "counts.npy" not in names


def load_events_npz(path: Path, bin_s: float | None = None) -> Recording:
    """Bin an event .npz at `bin_s` (else its stored 'bin_s'); behaviour is sampled at bin centres."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(where(path, f"not a readable .npz file ({type(e).__name__}: {e})")) from None
    width = bin_s if bin_s is not None else (float(data["bin_s"]) if "bin_s" in data else None)
    if width is None:
        raise DataError(where(path, "event recording needs a bin width: pass --bin-ms or store 'bin_s'"))
    return bin_events(
        spike_times=data["spike_times"],
        spike_channels=data["spike_channels"],
        bin_s=width,
        behavior=data.get("behavior"),
        behavior_times=data.get("behavior_times"),
        behavior_names=list(data["behavior_names"]) if "behavior_names" in data else None,
        behavior_units=list(data["behavior_units"]) if "behavior_units" in data else None,
        channel_names=list(data["channel_names"]) if "channel_names" in data else None,
        source=str(path),
    )
