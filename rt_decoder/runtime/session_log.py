"""Session log: every bin's counts, prediction, timings and flags, as JSON lines.

Why JSON lines: append-only and crash safe (a killed process leaves every line up to the last
flush readable; a torn last line is ignored), readable with any tool, and exact: counts are
written as numbers and float32 predictions as the shortest decimal that round-trips.

    line 1      {"format": "rt-decoder-session-log", "version": 1, "model": ..., "model_sha256": ...}
    bin lines   {"i": 0, "t_end": ..., "counts": [...], "pred": [...] | null, "backlog": 0,
                 "seen_ms": ..., "ready_ms": ..., "lat_ms": ...,   (input seen / prediction ready /
                                                                    pushed, ms after the bin's end)
                 "flags": ["gap", "partial", "skipped", "miss"], "bad": 0}
    event lines {"event": "lost" | "reconnected" | "reset" | "adapt" | "stop", "t": ..., ...}
                (a reset carries "before_bin": the state was zeroed before that bin; with `run --adapt`
                an adapt line carries "after_bin" and the online aligner's full state after that bin,
                and the header an "adapt" entry: the re-run rebuilds the same adapting graph)
    last line   {"event": "end", "bins": N}   written by close(): the number of bins logged

A log without its end line, or whose end line states more bins than it holds, is truncated
(the writer was killed, or its disk filled): every reader says so (`read_log` "complete",
"stated_bins"; `rerun_log`; `evaluate --log`). A write that fails (ENOSPC, EFBIG) never stops
the decoder: the writer records the error, warns once, and stops logging.

`rerun_log(model, log)` runs the logged counts (gap bins included, as the runtime did) through
the step graph offline and compares with the logged predictions: they must be identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, where

log = logging.getLogger("rt_decoder.runtime")

FORMAT = "rt-decoder-session-log"
VERSION = 1


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _numbers(a: np.ndarray) -> list:
    """Integers when whole (counts), else floats that round-trip float32 exactly."""
    a = np.asarray(a)
    if np.all(a == np.round(a)):
        return a.astype(np.int64).tolist()
    return [float(v) for v in a.astype(np.float32)]


class SessionLog:
    """Append-only writer; flushes every `flush_every` bins and on every event line.

    A failed write (disk full, file size limit) is recorded in `error`, warned about once, and
    ends the logging; the caller carries on (a decoder in a closed loop must not stop for it)."""

    def __init__(self, path: str | Path, header: dict[str, Any], flush_every: int = 25) -> None:
        self.path = Path(path)
        self._f = open(self.path, "w", encoding="utf-8")
        self.flush_every = max(1, int(flush_every))
        self._n = 0
        self.error: str | None = None
        self.bins_at_error: int | None = None
        head = {"format": FORMAT, "version": VERSION,
                "started": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **header}
        self._write(json.dumps(head) + "\n", flush=True)

    @property
    def bins_logged(self) -> int:
        """Bins handed to the log (all on disk unless `error` is set)."""
        return self._n

    def _write(self, text: str, flush: bool = False) -> None:
        if self.error is not None:
            return
        try:
            self._f.write(text)
            if flush:
                self._f.flush()
        except (OSError, ValueError) as e:
            self._fail(e)

    def _fail(self, e: BaseException) -> None:
        self.error = getattr(e, "strerror", None) or str(e)
        self.bins_at_error = self._n
        log.error("session log %s: write failed near bin %d (%s); LOGGING STOPPED, decoding and publishing "
                  "continue; the log is truncated", self.path, self._n, self.error)
        try:
            self._f.close()
        except (OSError, ValueError):
            pass

    def bin(self, i: int, t_end: float, counts: np.ndarray, pred: np.ndarray | None, lat_ms: float | None,
            backlog: int, flags: list[str], bad: int = 0, timing: tuple[float, float] | None = None) -> None:
        """timing: (input seen, prediction ready) in ms after the bin's end; lat_ms is when it was pushed."""
        if self.error is not None:
            return
        rec = {"i": i, "t_end": round(float(t_end), 6), "counts": _numbers(counts),
               "pred": None if pred is None else [float(v) for v in np.asarray(pred, np.float32)],
               "lat_ms": None if lat_ms is None else round(float(lat_ms), 4), "backlog": int(backlog),
               "flags": flags, "bad": int(bad)}
        if timing is not None:
            rec["seen_ms"], rec["ready_ms"] = round(float(timing[0]), 4), round(float(timing[1]), 4)
        self._n += 1
        self._write(json.dumps(rec) + "\n", flush=self._n % self.flush_every == 0)

    def event(self, kind: str, t: float, **info: Any) -> None:
        self._write(json.dumps({"event": kind, "t": round(float(t), 6), **info}) + "\n", flush=True)

    def close(self) -> None:
        """Write the end line (the number of bins logged) and close; a no-op after a failure."""
        if self.error is None and not self._f.closed:
            self._write(json.dumps({"event": "end", "bins": self._n}) + "\n", flush=True)
            if self.error is None:
                try:
                    self._f.close()
                except OSError as e:
                    self._fail(e)


def read_log(path: str | Path) -> dict[str, Any]:
    """Header, per-bin arrays and events of a session log (a torn last line is ignored).

    "complete" is True only when the end line is there and states the bins found; otherwise
    "truncated" says what is missing ("stated_bins": what the end line states, or None)."""
    path = Path(path)
    if not path.exists():
        raise DataError(where(path, "no such session log"))
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines:
        raise DataError(where(path, "session log is empty"))
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        raise DataError(where(path, "not a session log (first line is not JSON)")) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataError(where(path, f"not an rt-decoder session log (format {header.get('format') if isinstance(header, dict) else None!r})"))
    bins, events = [], []
    for n, line in enumerate(lines[1:], start=2):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break  # torn by a crash mid-write
            raise DataError(where(path, f"line {n} is not JSON")) from None
        (events if "event" in rec else bins).append(rec)
    idx = [b["i"] for b in bins]
    if idx != list(range(len(bins))):
        raise DataError(where(path, "bin indices are not consecutive from 0"))
    D = len(header.get("channels", [])) or (len(bins[0]["counts"]) if bins else 0)
    K = len(header.get("outputs", []))
    counts = np.array([b["counts"] for b in bins], np.float32).reshape(len(bins), D)
    pred = np.full((len(bins), K), np.nan, np.float32)
    has = np.array([b["pred"] is not None for b in bins], bool)
    for i, b in enumerate(bins):
        if b["pred"] is not None:
            pred[i] = b["pred"]
    end = next((e for e in reversed(events) if e.get("event") == "end"), None)
    stated = None if end is None else int(end.get("bins", -1))
    if end is None:
        truncated = f"truncated: no end record (writer killed or disk full), {len(bins)} bins found"
    elif stated != len(bins):
        truncated = f"truncated: the log states {stated} bins, {len(bins)} found"
    else:
        truncated = None
    return {"header": header, "counts": counts, "pred": pred, "has_pred": has,
            "complete": truncated is None, "stated_bins": stated, "truncated": truncated,
            "t_end": np.array([b["t_end"] for b in bins], np.float64),
            "lat_ms": np.array([np.nan if b["lat_ms"] is None else b["lat_ms"] for b in bins], np.float64),
            "flags": [b["flags"] for b in bins], "events": events}


def rerun_log(model_path: str | Path, log_path: str | Path, threads: int = 1) -> dict[str, Any]:
    """Re-run a session log offline through `model_path`; compare with the logged predictions.

    Returns bins, predictions compared, max_abs_diff, exact (bit-identical), model_matches
    (sha256 of the model equals the one logged), complete / truncated (see read_log) and the
    counts of gap / skipped bins.
    """
    from ..step_model import StepModel

    log = read_log(log_path)
    adapt = log["header"].get("adapt")
    if adapt:  # `run --adapt`: the same online-adapting twin, rebuilt from the model given here
        import tempfile

        from ..adaptation import write_adapted

        with tempfile.TemporaryDirectory() as tmp:
            model = StepModel(write_adapted(model_path, adapt["tau_s"], Path(tmp) / "adapt.onnx"), threads=threads)
    else:
        model = StepModel(model_path, threads=threads)
    if log["counts"].shape[1] != model.n_channels:
        raise DataError(where(log_path, f"log has {log['counts'].shape[1]} channels, {model_path} expects {model.n_channels}"))
    cuts = sorted({int(e["before_bin"]) for e in log["events"] if e.get("event") == "reset"} | {0, len(log["counts"])})
    states = {int(e["after_bin"]): np.asarray(e["state"], np.float32) for e in log["events"] if e.get("event") == "adapt"}
    parts, state_diff = [], 0.0
    for a, b in zip(cuts[:-1], cuts[1:]):  # the runtime zeroed the state at each reset
        model.reset()
        if not states:
            parts.append(model.run(log["counts"][a:b]))
            continue
        for k in range(a, b):  # step by step, to compare the logged aligner states too
            parts.append(model.step(log["counts"][k])[None].copy())
            if k in states:
                state_diff = max(state_diff, float(np.abs(model.state["adapt"].ravel() - states[k]).max()))
    pred = np.concatenate(parts) if parts else np.zeros((0, model.n_outputs), np.float32)
    has = log["has_pred"]
    diff = np.abs(pred[has] - log["pred"][has])
    flags = log["flags"]
    return {
        "log": str(log_path),
        "model": str(model_path),
        "model_matches": log["header"].get("model_sha256") == file_sha256(model_path),
        "bins": int(len(has)),
        "complete": log["complete"],
        "stated_bins": log["stated_bins"],
        "truncated": log["truncated"],
        "predictions": int(has.sum()),
        "skipped": sum("skipped" in f for f in flags),
        "gap_bins": sum("gap" in f for f in flags),
        "resets": sum(e.get("event") == "reset" for e in log["events"]),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "exact": bool((diff.size == 0 or diff.max() == 0.0) and state_diff == 0.0),
        "adapt_states_checked": len(states),
        "adapt_state_max_abs_diff": state_diff,
        "rerun_pred": pred,
        "logged_pred": log["pred"],
    }
