"""A background thread that pushes samples on a drift-free grid: the replay player and the
simulated participant share its start time, wait and stop."""

from __future__ import annotations

import math
import threading


class Clocked:
    """Thread, stop flag and done flag of a pusher; `first_tick` puts bin 0 on the shared grid."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0: float | None = None

    def first_tick(self, origin: float, tick: float, lead_s: float) -> float:
        """The first grid time (origin + m * tick) at or after now + lead: every pusher on the
        same origin and tick stays aligned with every other one."""
        from . import lsl as L

        m = math.ceil((L.pylsl().local_clock() + lead_s - origin) / tick)
        self.t0 = origin + m * tick
        return self.t0

    def start_thread(self, target, name: str) -> None:
        self._thread = threading.Thread(target=target, daemon=True, name=name)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
