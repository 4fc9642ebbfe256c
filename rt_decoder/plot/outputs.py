"""Which decoder outputs are a 2-D position: shared by the live window and the static report."""

from __future__ import annotations

POSITION_PAIRS = (("pos_x", "pos_y"), ("cursor_x", "cursor_y"), ("hand_x", "hand_y"), ("x", "y"))


def pick_position_columns(labels: list[str]) -> tuple[int, int] | None:
    """Columns of the 2-D position among output labels: a known x/y pair (case-insensitive),
    else the first two outputs, else None (a single output)."""
    low = [s.lower() for s in labels]
    for a, b in POSITION_PAIRS:
        if a in low and b in low:
            return low.index(a), low.index(b)
    return (0, 1) if len(labels) >= 2 else None
