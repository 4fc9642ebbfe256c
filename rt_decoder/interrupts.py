"""SIGTERM handled like Ctrl-C, for commands whose clean stop is a KeyboardInterrupt.

`kill`, systemd and process supervisors stop a job with SIGTERM; without this a terminated
`train` or `experiment` would die without exporting its best model or stopping its children.
"""

from __future__ import annotations

import signal


def interrupt_on_sigterm() -> None:
    """SIGTERM -> KeyboardInterrupt in the main thread (a no-op outside it)."""

    def handler(*_: object) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test's worker thread)
        pass
