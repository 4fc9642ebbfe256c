"""pylsl in one place: a quiet import, finding the input stream, and the outlets we publish.

liblsl prints INFO lines to stderr on first use; the command line promises one clear line on
error, so we point LSLAPICFG at a config that keeps liblsl quiet unless the user set their own.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StreamError

INPUT_TYPES = ("SpikeCounts", "SpikeEvents")


# DecoderStats channels (DESIGN §5); deadline_miss, skipped and gap_bins are running totals.
STATS_LABELS = ["bin_index", "latency_ms", "backlog", "deadline_miss", "skipped", "gap_bins"]
STATS_UNITS = ["count", "ms", "bins", "count", "count", "bins"]


def pylsl() -> Any:
    """Import pylsl with liblsl's own log silenced (unless LSLAPICFG is already set)."""
    if "LSLAPICFG" not in os.environ:
        cfg = Path(tempfile.gettempdir()) / "rt-decoder-lsl_api.cfg"
        if not cfg.exists():
            try:
                cfg.write_text("[log]\nlevel = -3\n")
            except OSError:
                cfg = None
        if cfg is not None:
            os.environ["LSLAPICFG"] = str(cfg)
    import pylsl as _pylsl

    return _pylsl


def __getattr__(name: str) -> Any:
    """`L.LostError`: pylsl's exception for a vanished source, without importing pylsl early."""
    if name == "LostError":
        pylsl()
        from pylsl.util import LostError

        return LostError
    raise AttributeError(name)


@dataclass
class StreamSpec:
    """How to find the input: `name`, `type=X`, `source_id=X` or `name=X` (default: any spike stream)."""

    prop: str | None = None
    value: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> StreamSpec:
        if not text:
            return cls()
        if "=" in text:
            prop, value = text.split("=", 1)
            prop = prop.strip()
            if prop not in ("name", "type", "source_id"):
                raise StreamError(f"{text}: input must be NAME, name=X, type=X or source_id=X")
            return cls(prop, value.strip())
        return cls("name", text)

    def predicate(self) -> str:
        if self.prop is None:
            return " or ".join(f"type='{t}'" for t in INPUT_TYPES)
        return f"{self.prop}='{self.value}'"

    def __str__(self) -> str:
        return "any SpikeCounts/SpikeEvents stream" if self.prop is None else f"{self.prop}={self.value}"


def describe(info: Any) -> str:
    """One stream in a few words: name (type, n ch @ rate, format, source_id, host)."""
    rate = info.nominal_srate()
    fmt = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}.get(info.channel_format(), "?")
    return (f"{info.name()!r} (type {info.type()!r}, {info.channel_count()} ch @ "
            f"{'irregular' if rate == 0 else f'{rate:g} Hz'}, {fmt}, source_id {info.source_id()!r}, host {info.hostname()!r})")


def visible_streams(wait_s: float = 1.0) -> list[str]:
    lsl = pylsl()
    return [describe(i) for i in lsl.resolve_streams(wait_time=wait_s)]


def matches(spec: StreamSpec, info: Any) -> bool:
    """Whether a resolved stream satisfies spec (the predicate, evaluated here)."""
    if spec.prop is None:
        return info.type() in INPUT_TYPES
    return {"name": info.name, "type": info.type, "source_id": info.source_id}[spec.prop]() == spec.value


def resolve_all(spec: StreamSpec, timeout: float, also: list[str] = (), stop: threading.Event | None = None,
                say: Any = None, settle_s: float = 0.3) -> tuple[list[Any], list[Any]]:
    """Every stream matching spec (waiting up to `timeout` for the first, then `settle_s` for the
    rest), and every stream named in `also` (names we are about to publish under).

    The wait is shown: after the first half second without a match `say(text)` is called once
    and, on a terminal, a countdown bar runs; `stop` ends the wait early. Raises StreamError
    (listing what is visible) when nothing matches in time."""
    import time

    lsl = pylsl()
    pred = spec.predicate()
    t0 = time.monotonic()
    found = lsl.resolve_bypred(pred, 1, min(0.5, max(timeout, 0.05)))
    if not found and timeout > 0.5 and say is not None:   # said even when a slow first probe used the time up
        say(f"waiting up to {timeout:g} s for the input ({spec}); start the source, or Ctrl-C to stop")
    if not found and timeout - (time.monotonic() - t0) > 0.05:
        from tqdm import tqdm

        with tqdm(total=round(timeout), unit="s", desc="waiting for input", leave=False, disable=None,
                  bar_format="{desc}: {n:.0f}/{total} s") as bar:
            while not found and not (stop is not None and stop.is_set()):
                left = timeout - (time.monotonic() - t0)
                if left <= 0:
                    break
                found = lsl.resolve_bypred(pred, 1, min(0.5, left))
                bar.update(min(round(time.monotonic() - t0), round(timeout)) - bar.n)
    if not found and stop is not None and stop.is_set():
        raise StreamError(f"input {spec}: stopped while waiting for it")
    if not found:
        seen = visible_streams(0.5)
        listing = "; ".join(seen) if seen else "no LSL streams are visible"
        raise StreamError(f"input {spec}: no LSL stream found after {timeout:g} s (visible: {listing})")
    wide = " or ".join([f"({pred})", *(f"name='{n}'" for n in also)])
    every = lsl.resolve_bypred(wide, 0, settle_s) if settle_s > 0 else []
    seen_uid = set()
    inputs, taken = [], []
    for info in [*found, *every]:
        if info.uid() in seen_uid:
            continue
        seen_uid.add(info.uid())
        if matches(spec, info):
            inputs.append(info)
        if info.name() in also:
            taken.append(info)
    return inputs, taken


def resolve(spec: StreamSpec, timeout: float) -> Any:
    """The first stream matching spec within timeout, else StreamError listing what is visible."""
    return resolve_all(spec, timeout, settle_s=0.0)[0][0]


def resolve_again(info: Any, timeout: float) -> Any | None:
    """Find a vanished source again: by source_id when it has one, else by name and type."""
    lsl = pylsl()
    sid = info.source_id()
    pred = f"source_id='{sid}'" if sid else f"name='{info.name()}' and type='{info.type()}'"
    found = lsl.resolve_bypred(pred, 1, timeout)
    return found[0] if found else None


def desc_value(info: Any, key: str) -> str | None:
    """A top-level <desc><key>value</key></desc> entry, or None."""
    v = info.desc().child_value(key)
    return v if v else None


def desc_labels(info: Any) -> list[str]:
    """desc/channels/channel/label, in order (empty when the stream has none)."""
    out = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        out.append(ch.child_value("label"))
        ch = ch.next_sibling("channel")
    return out


def add_channels(info: Any, labels: list[str], units: list[str] | None = None, kind: str | None = None) -> None:
    chans = info.desc().append_child("channels")
    for i, label in enumerate(labels):
        c = chans.append_child("channel")
        c.append_child_value("label", str(label))
        if units is not None:
            c.append_child_value("unit", str(units[i]))
        if kind is not None:
            c.append_child_value("type", kind)


def make_outlet(name: str, type_: str, labels: list[str], rate: float, fmt: str = "float32",
                units: list[str] | None = None, source_id: str = "", extra: dict | None = None,
                max_buffered: int = 30) -> Any:
    """An outlet that sends each sample at once (chunk_size 1): latency over bandwidth."""
    lsl = pylsl()
    cf = {"float32": lsl.cf_float32, "int32": lsl.cf_int32, "int16": lsl.cf_int16, "string": lsl.cf_string,
          "double64": lsl.cf_double64}[fmt]
    info = lsl.StreamInfo(name, type_, len(labels), rate, cf, source_id or f"rt-decoder:{type_}:{name}@{socket.gethostname()}")
    add_channels(info, labels, units)
    for k, v in (extra or {}).items():
        info.desc().append_child_value(str(k), str(v))
    return lsl.StreamOutlet(info, chunk_size=1, max_buffered=max_buffered)


class ClockOffset:
    """LSL time_correction for one inlet, refreshed in the background (the first call blocks up
    to a second, so it never stalls the loop). A stream from this host shares our clock
    (liblsl's local_clock is the machine's steady clock), so its offset is exactly 0 and is not
    measured: a measured offset there is only noise that would jitter the event bin grid."""

    def __init__(self, inlet: Any, info: Any, every_s: float = 5.0) -> None:
        self.inlet = inlet
        self.value = 0.0
        self._stop = threading.Event()
        self.remote = info.hostname() != socket.gethostname()
        self._thread: threading.Thread | None = None
        if self.remote:
            self._measure(timeout=2.0)
            self._thread = threading.Thread(target=self._loop, args=(every_s,), daemon=True, name="lsl-clock-offset")
            self._thread.start()

    def _measure(self, timeout: float) -> None:
        try:
            self.value = float(self.inlet.time_correction(timeout=timeout))
        except Exception:  # timeout or lost stream: keep the last estimate
            pass

    def _loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self._measure(timeout=0.5)

    def close(self) -> None:
        """Stop refreshing; waits for a call in flight so the inlet can be destroyed safely."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
