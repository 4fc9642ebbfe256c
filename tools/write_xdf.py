"""Write XDF files (the format LabRecorder records) without LabRecorder.

Tests need XDF files whose contents they know, and users sometimes want to turn a canonical
recording into an XDF for tools that read only XDF. This is a minimal writer of XDF 1.0:
magic "XDF:", then chunks [varlen length][uint16 tag][content]: FileHeader (1), StreamHeader (2),
Samples (3), ClockOffset (4) and StreamFooter (6), all little-endian, every sample time-stamped.

    python tools/write_xdf.py IN.npz OUT.xdf [--format counts|events]
"""

from __future__ import annotations

import argparse
import struct
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

FORMATS = {"float32": "<f4", "double64": "<f8", "int32": "<i4", "int16": "<i2", "int8": "i1", "int64": "<i8"}


@dataclass
class Stream:
    """One stream: samples (N, C) (or N lists of C strings), timestamps (N,) in seconds."""

    name: str
    type: str
    samples: object
    timestamps: np.ndarray
    channel_format: str = "float32"
    nominal_srate: float = 0.0
    labels: list[str] = field(default_factory=list)
    units: str = ""
    desc_xml: str = ""  # extra XML inside <desc>, after <channels>


def _varlen(n: int) -> bytes:
    if n < 256:
        return b"\x01" + struct.pack("<B", n)
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _header_xml(s: Stream, n_channels: int) -> bytes:
    chans = "".join(f"<channel><label>{escape(lab)}</label><unit>{escape(s.units)}</unit></channel>" for lab in s.labels)
    desc = (f"<channels>{chans}</channels>" if chans else "") + s.desc_xml
    return (f'<?xml version="1.0"?><info><name>{escape(s.name)}</name><type>{escape(s.type)}</type>'
            f"<channel_count>{n_channels}</channel_count><nominal_srate>{s.nominal_srate!r}</nominal_srate>"
            f"<channel_format>{s.channel_format}</channel_format><source_id>{escape(s.name)}</source_id>"
            f"<version>1.1</version><created_at>0</created_at><uid>{escape(s.name)}-uid</uid>"
            f"<session_id>default</session_id><hostname>localhost</hostname><desc>{desc}</desc></info>").encode()


def _samples(sid: int, s: Stream, lo: int, hi: int) -> bytes:
    parts = [struct.pack("<I", sid), _varlen(hi - lo)]
    ts = np.asarray(s.timestamps, dtype="<f8")
    if s.channel_format == "string":
        for k in range(lo, hi):
            parts.append(b"\x08" + struct.pack("<d", ts[k]))
            for v in s.samples[k]:
                b = str(v).encode()
                parts.append(_varlen(len(b)) + b)
    else:
        vals = np.ascontiguousarray(np.asarray(s.samples)[lo:hi], dtype=FORMATS[s.channel_format])
        for k in range(hi - lo):
            parts.append(b"\x08" + struct.pack("<d", ts[lo + k]) + vals[k].tobytes())
    return b"".join(parts)


def write_xdf(path: str | Path, streams: list[Stream], chunk_samples: int = 500) -> Path:
    """Write the streams to `path`; samples go in chunks of `chunk_samples`, interleaved by time."""
    path = Path(path)
    out = [b"XDF:", _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')]
    for sid, s in enumerate(streams, start=1):
        n_ch = len(s.samples[0]) if s.channel_format == "string" and len(s.samples) else np.asarray(s.samples).reshape(len(s.timestamps), -1).shape[1]
        out.append(_chunk(2, struct.pack("<I", sid) + _header_xml(s, n_ch)))
    blocks = []
    for sid, s in enumerate(streams, start=1):
        n = len(s.timestamps)
        if s.channel_format != "string":
            s.samples = np.asarray(s.samples).reshape(n, -1)
        for lo in range(0, n, chunk_samples):
            blocks.append((float(s.timestamps[lo]), sid, lo, min(lo + chunk_samples, n)))
    for _, sid, lo, hi in sorted(blocks):
        out.append(_chunk(3, _samples(sid, streams[sid - 1], lo, hi)))
    for sid, s in enumerate(streams, start=1):
        ts = np.asarray(s.timestamps, dtype=np.float64)
        t_end = float(ts[-1]) if ts.size else 0.0
        for t in (0.0, t_end):  # two zero clock offsets, as LabRecorder writes (same machine)
            out.append(_chunk(4, struct.pack("<I", sid) + struct.pack("<dd", t, 0.0)))
        first = float(ts[0]) if ts.size else 0.0
        footer = (f'<?xml version="1.0"?><info><first_timestamp>{first!r}</first_timestamp>'
                  f"<last_timestamp>{t_end!r}</last_timestamp><sample_count>{ts.size}</sample_count>"
                  f"<clock_offsets><offset><time>0</time><value>0</value></offset></clock_offsets></info>")
        out.append(_chunk(6, struct.pack("<I", sid) + footer.encode()))
    path.write_bytes(b"".join(out))
    return path


def recording_streams(rec, fmt: str = "counts", name: str = "recording", t0: float = 0.0) -> list[Stream]:
    """A canonical Recording as XDF streams: SpikeCounts (timestamp = bin end) or SpikeEvents, plus
    Kinematics (timestamp = bin centre) and trial Markers."""
    b = rec.bin_s
    ends = t0 + (np.arange(rec.n_bins) + 1) * b
    streams = []
    if fmt == "counts":
        streams.append(Stream(f"{name}-spikes", "SpikeCounts", rec.counts.astype(np.int32), ends, "int32",
                              1.0 / b, list(rec.channel_names), "count"))
    else:
        k, ch = np.nonzero(rec.counts)
        reps = rec.counts[k, ch]
        k, ch = np.repeat(k, reps), np.repeat(ch, reps)
        rng = np.random.default_rng(0)
        times = t0 + (k + rng.uniform(0.01, 0.99, k.size)) * b  # inside their bin, clear of the edges
        order = np.argsort(times, kind="stable")
        names = "".join(f"<channel><label>{escape(c)}</label></channel>" for c in rec.channel_names)
        streams.append(Stream(f"{name}-spikes", "SpikeEvents", ch[order].astype(np.int32)[:, None], times[order],
                              "int32", 0.0, ["channel"], "",
                              f"<n_channels>{rec.n_channels}</n_channels><spike_channels>{names}</spike_channels>"))
    if rec.behavior is not None:
        streams.append(Stream(f"{name}-behavior", "Kinematics", rec.behavior.astype(np.float32), ends - b / 2,
                              "float32", 1.0 / b, list(rec.behavior_names)))
    if rec.trial_starts is not None and len(rec.trial_starts):
        ts = t0 + rec.trial_starts * b + b / 2
        streams.append(Stream(f"{name}-markers", "Markers", [["trial_start"] for _ in ts], ts, "string", 0.0))
    return streams


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="canonical .npz (or any format rt-decoder convert reads)")
    p.add_argument("output", help="XDF file to write")
    p.add_argument("--format", choices=("counts", "events"), default="counts",
                   help="SpikeCounts (one sample per bin) or SpikeEvents (one sample per spike)")
    args = p.parse_args(argv)
    from rt_decoder.loaders import load_recording

    rec = load_recording(args.input)
    path = write_xdf(args.output, recording_streams(rec, args.format, Path(args.input).stem))
    print(f"{path}: {rec.n_bins} bins x {rec.n_channels} channels as {args.format}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
