"""Real-time scheduling for the threads that must wake on time.

On a busy machine the scheduler, not our code, sets the latency tail: a normal thread woken from
sleep waited up to ~4 ms for a core here (p99), a SCHED_FIFO one ~0.1 ms. The loop never spins
(it sleeps or blocks in liblsl), so a FIFO priority cannot starve the machine. Children (the
plot) do not inherit it (SCHED_RESET_ON_FORK).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("rt_decoder.runtime")

PRIORITIES = ("realtime", "normal")


def raise_priority(mode: str = "realtime", level: int = 10) -> str:
    """Make the calling thread SCHED_FIFO when allowed; returns what it got ('realtime' or 'normal')."""
    if mode != "realtime":
        return "normal"
    if not hasattr(os, "sched_setscheduler"):
        return "normal"
    try:
        policy = os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0)
        os.sched_setscheduler(0, policy, os.sched_param(level))
        return "realtime"
    except (PermissionError, OSError) as e:
        log.info("real-time priority not available (%s); running at normal priority", e.strerror or e)
        return "normal"
