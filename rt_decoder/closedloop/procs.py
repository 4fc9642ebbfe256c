"""The session's child processes: started as the real CLI commands, logged to files, stopped
cleanly (SIGINT, then terminate, then kill, each with a timeout), never left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RtDecoderError


class ExperimentError(RtDecoderError):
    """A piece of the closed-loop session failed; the message names it and its last words."""


def cli(*args: str) -> list[str]:
    """`rt-decoder ARGS...` with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "rt_decoder.cli", *map(str, args)]


def last_line(path: Path) -> str:
    try:
        lines = [s.strip() for s in path.read_text(errors="replace").splitlines() if s.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


@dataclass
class Procs:
    """Named child processes with their logs in `log_dir`."""

    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, cmd: list) -> subprocess.Popen:
        cmd = [str(c) for c in cmd]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with open(log, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[name], self.logs[name] = p, log
        return p

    def check(self, allow_exit: tuple[str, ...] = ()) -> None:
        """Raise ExperimentError when a process that should still run has exited (or any failed)."""
        for name, p in self.procs.items():
            rc = p.poll()
            if rc is None or (rc == 0 and name in allow_exit):
                continue
            raise ExperimentError(f"{name} exited with status {rc}: {last_line(self.logs[name]) or 'no output'} "
                                  f"(log {self.logs[name]})")

    def wait(self, name: str, timeout: float, others_must_run: bool = True, also: Procs | None = None) -> int:
        """Wait for `name` to exit on its own, watching the others (and `also`'s); ExperimentError on
        timeout or failure."""
        p = self.procs[name]
        deadline = time.monotonic() + timeout
        while p.poll() is None:
            if others_must_run:
                self.check(allow_exit=(name,))
                if also is not None:
                    also.check()
            if time.monotonic() > deadline:
                raise ExperimentError(f"{name} did not finish within {timeout:.0f} s (log {self.logs[name]})")
            time.sleep(0.1)
        if p.returncode != 0:
            raise ExperimentError(f"{name} exited with status {p.returncode}: {last_line(self.logs[name]) or 'no output'} "
                                  f"(log {self.logs[name]})")
        return p.returncode

    def stop(self, name: str, timeout: float = 8.0) -> int | None:
        """SIGINT (lets the command write its summary), then terminate, then kill."""
        p = self.procs.get(name)
        if p is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if p.poll() is not None:
                break
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return p.poll()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
