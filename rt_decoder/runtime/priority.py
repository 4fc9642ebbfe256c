"""Real-time scheduling for the threads that must wake on time.

On a busy machine the scheduler, not our code, sets the latency tail: a normal thread woken from
sleep waited up to ~4 ms for a core here (p99), a SCHED_FIFO one ~0.1 ms. The loop never spins
(it sleeps or blocks in liblsl), so a FIFO priority cannot starve the machine.

Raise it before liblsl creates its I/O threads (they inherit it; SCHED_RESET_ON_FORK would also
reset new threads, so it is not used); child processes call `normal_priority` (Popen preexec_fn).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("rt_decoder.runtime")

PRIORITIES = ("realtime", "normal")


def raise_priority(mode: str = "realtime", level: int = 10) -> str:
    """Make the calling thread SCHED_FIFO when allowed; returns what it got ('realtime' or 'normal')."""
    if mode != "realtime":
        return "normal"
    sys.setswitchinterval(0.0005)  # a thread that needs the GIL waits at most 0.5 ms, not 5 ms
    if not hasattr(os, "sched_setscheduler"):
        return "normal"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(level))
        return "realtime"
    except (PermissionError, OSError) as e:
        log.info("real-time priority not available (%s); running at normal priority", e.strerror or e)
        return "normal"


@contextmanager
def scheduling(mode: str = "realtime", level: int = 10) -> Iterator[str]:
    """`raise_priority` for the with-block only: the thread's policy and Python's switch interval
    are put back after, so a caller that runs the loop in its own thread (a notebook, a test, a
    script that goes on to train or plot) is not left real-time."""
    switch = sys.getswitchinterval()
    try:
        saved = (os.sched_getscheduler(0), os.sched_getparam(0))
    except (AttributeError, OSError):
        saved = None
    try:
        yield raise_priority(mode, level)
    finally:
        sys.setswitchinterval(switch)
        if saved is not None:
            try:
                os.sched_setscheduler(0, *saved)
            except OSError:
                pass


def quiet_gc() -> None:
    """Move everything allocated during set-up (onnx, onnxruntime, numpy) out of the collector's
    sight, so a full collection in the loop walks only what the loop itself allocates: a
    collection over all of it pauses the thread for milliseconds."""
    import gc

    gc.collect()
    gc.freeze()


def normal_priority() -> None:
    """Back to the default policy (for child processes such as the plot)."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass
