"""Every supported recording format -> the canonical `Recording` (DESIGN §3).

`load_recording(path, bin_ms, targets)` picks the reader from the file's extension and, when that is
not decisive, from its first bytes; every failure is a DataError "<file>: <problem>".
Binned formats re-bin by a whole factor; event formats (NWB, XDF SpikeEvents, event .npz) bin
straight at `bin_ms` (20 ms when not given). `targets` keeps cursor, force or EMG columns
(loaders/targets.py), the same for every format.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, where
from ..filekind import describe, kind_of, not_what_expected, read_head
from ..recording import Recording, load_npz
from .common import check_bin_ms, reason

SUPPORTED = (
    "canonical .npz (counts or spike_times + spike_channels)",
    ".mat (limblab binnedData, Y/X counts + kinematics, Ziv neuronal_activity_mat)",
    ".h5 (NLB tensors)",
    ".nwb (units + behaviour + trials)",
    ".xdf (SpikeCounts or SpikeEvents stream + behaviour)",
    "folder (Ziv calcium .mat files, or nelpy spikes.mat + trajectory.videoPositionTracking)",
)

EXTENSIONS = {".npz": "npz", ".mat": "mat", ".h5": "hdf5", ".hdf5": "hdf5", ".nwb": "hdf5", ".xdf": "xdf", ".xdfz": "xdf"}


def sniff(path: Path) -> str | None:
    """The format named by a file's first bytes, or None."""
    return kind_of(_head(path))


def _head(path: Path) -> bytes:
    try:
        return read_head(path)
    except OSError as e:
        raise DataError(where(path, f"cannot read file ({reason(e)})")) from None


def load_recording(path: str | Path, bin_ms: float | None = None, targets: str | None = None) -> Recording:
    """Read any supported recording; re-bin (or bin events) at `bin_ms` when given; keep the
    behaviour columns of `targets` (cursor | force | emg | all, or a comma list; default cursor)."""
    from .targets import select_targets

    return select_targets(_load(Path(path), bin_ms), targets, path)


def _load(path: Path, bin_ms: float | None) -> Recording:
    if bin_ms is not None:
        check_bin_ms(path, bin_ms)
    if not path.exists():
        raise DataError(where(path, "no such file or folder"))
    if path.is_dir():
        return _load_folder(path, bin_ms)
    # the first bytes win over the extension (a .mat that is really an .npz still loads); a gzip
    # stream has no magic of its own, so .xdfz keeps its extension's word
    head = _head(path)
    named = EXTENSIONS.get(path.suffix.lower())
    kind = kind_of(head) or named
    if kind is None:
        raise DataError(where(path, f"unknown recording format ({describe(head)}); supported: " + "; ".join(SUPPORTED)))
    # the extension names a format whose magic bytes are missing: say what the file is instead
    # (MATLAB v4 files have no magic, so a binary .mat still goes to scipy; .xdfz is gzip)
    if kind == named and not kind_of(head) and path.suffix.lower() != ".xdfz" and (
            kind != "mat" or not describe(head).startswith("binary data")):
        raise DataError(where(path, not_what_expected(path, kind, head)))
    if kind == "npz":
        from .events_npz import is_events_npz, load_events_npz

        bin_s = None if bin_ms is None else bin_ms / 1000.0
        return load_events_npz(path, bin_s) if is_events_npz(path) else load_npz(path, bin_s)
    if kind == "mat":
        from .matlab import load_mat

        return load_mat(path, bin_ms)
    if kind == "xdf":
        from .xdf import load_xdf

        return load_xdf(path, bin_ms)
    return _load_hdf5(path, bin_ms)


def _load_hdf5(path: Path, bin_ms: float | None) -> Recording:
    """HDF5 holds NWB or NLB tensors (or a MATLAB v7.3 file); the root tells which."""
    import h5py

    from .nlb import is_nlb_h5, load_nlb_h5
    from .nwb import is_nwb_h5, load_nwb

    try:
        with h5py.File(path, "r") as f:
            nlb, nwb, keys = is_nlb_h5(f), is_nwb_h5(f), sorted(f)
    except Exception as e:
        raise DataError(where(path, f"not a readable HDF5 file ({reason(e)})")) from None
    if nwb:
        return load_nwb(path, bin_ms)
    if nlb:
        return load_nlb_h5(path, bin_ms)
    if path.suffix.lower() == ".mat":
        raise DataError(where(path, "MATLAB v7.3 (HDF5) .mat files are not supported; re-save with save(..., '-v7')"))
    raise DataError(where(path, f"HDF5 file is neither NWB nor NLB tensors (found {keys[:8]}); supported: " + "; ".join(SUPPORTED)))


def _load_folder(path: Path, bin_ms: float | None) -> Recording:
    if (path / "neuronal_activity_mat.mat").exists():
        from .ziv import load_ziv

        return load_ziv(path, bin_ms)
    if (path / "spikes.mat").exists() and (path / "trajectory.videoPositionTracking").exists():
        from .nelpy import load_nelpy

        return load_nelpy(path, bin_ms)
    raise DataError(where(path, "folder holds no known recording; supported: " + "; ".join(SUPPORTED)))


__all__ = ["SUPPORTED", "load_recording"]
