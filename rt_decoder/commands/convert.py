"""Convert any supported recording to the canonical .npz (counts, bin_s, behaviour, names, trials).

Supported inputs: canonical .npz; MATLAB .mat (limblab binnedData, course-style Y/X, Ziv
neuronal_activity_mat); NLB tensor .h5; NWB (units' spike times, behaviour TimeSeries, trials);
XDF (a SpikeCounts or SpikeEvents stream plus an optional Behavior/Mocap/Kinematics stream);
folders (Ziv calcium files, nelpy spikes.mat + trajectory.videoPositionTracking).

Binned inputs re-bin by a whole factor (--bin-ms must be a multiple of the native bin); spike
times (NWB, XDF SpikeEvents, nelpy, event .npz) are binned at --bin-ms, 20 ms when not given.
--targets keeps cursor, force or EMG columns (limblab files carry all three; default cursor).
Prints one line: bins, channels, bin width, behaviour columns, duration, trials.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert a recording (.mat, .h5, .nwb, .xdf, .npz, folder) to the canonical .npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="recording file or folder in any supported format")
    parser.add_argument("output", metavar="OUT.npz", help="canonical .npz to write (.npz is appended if missing)")
    parser.add_argument("--bin-ms", type=float, default=None, metavar="B",
                        help="bin width in ms: re-bin counts (whole multiple of the native bin) or bin "
                             "spike times (default: native bin; 20 ms for spike times)")
    parser.add_argument("--targets", default="cursor", metavar="T",
                        help="behaviour columns to keep: cursor (position, velocity), force (limblab "
                             "forcedatabin, force_<label>), emg (limblab emgdatabin, emg_<emgguide name>), "
                             "all, or a comma list such as cursor,emg (default: %(default)s)")


def describe(rec, path: str | Path) -> str:
    """One line about a recording: T, D, bin, K (names [units]), duration, trials."""
    k = 0 if rec.behavior is None else rec.behavior.shape[1]
    names = f" ({', '.join(f'{n} [{u}]' for n, u in zip(rec.behavior_names, rec.behavior_units, strict=True))})" if k else ""
    trials = "" if rec.trial_starts is None else f", {len(rec.trial_starts)} trials"
    dur = rec.duration_s
    dur_txt = f"{dur / 60:.1f} min" if dur >= 120 else f"{dur:.1f} s"
    return (f"{path}: T={rec.n_bins} bins x D={rec.n_channels} channels, bin {rec.bin_s * 1000:g} ms, "
            f"K={k} behaviour{names}, {dur_txt}{trials}")


def npz_name(output: str | Path) -> Path:
    """OUT with .npz appended when missing."""
    out = Path(output)
    return out if out.suffix == ".npz" else out.with_name(out.name + ".npz")


def output_path(output: str | Path) -> Path:
    """OUT as written (npz_name), checked writable before any reading (atomic.check_output)."""
    from ..atomic import check_output

    return check_output(npz_name(output), "output file")


def write(rec, output: str | Path) -> Path:
    """save_npz (atomic: a failed write leaves no partial file; OutputError names the file)."""
    from ..recording import save_npz

    return save_npz(rec, output_path(output))


def refuse_same_file(input: str | Path, output: str | Path) -> None:
    """OUT must not be IN (also via another path, a symlink or a hard link): it would be overwritten."""
    import os

    from ..errors import DataError, where

    out = npz_name(output)
    if Path(input).exists() and out.exists() and os.path.samefile(input, out):
        raise DataError(where(output, f"is the input {input} itself; choose another output file"))


def run(args: argparse.Namespace) -> int:
    from ..loaders import load_recording
    from ..loaders.targets import parse_targets

    parse_targets(args.targets)
    refuse_same_file(args.input, args.output)
    output_path(args.output)
    rec = load_recording(args.input, args.bin_ms, args.targets)
    out = write(rec, args.output)
    print(describe(rec, out))
    return 0
