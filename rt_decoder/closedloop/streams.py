"""The closed-loop stream contract (DESIGN §9, CLOSEDLOOP.md) in one place.

Task, participant and experiment import their stream names, channel labels/units, state codes,
defaults and marker strings from here, so the three processes cannot drift apart and a real rig
(LabRecorder, a real array, a real task) knows exactly what to expect.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---- stream names (prefix defaults; suffixes are fixed) ----
DEFAULT_TASK_NAME = "task"
DEFAULT_PARTICIPANT_NAME = "participant"
DEFAULT_DECODER_NAME = "rt-decoder"

STATE_SUFFIX = "-state"
MARKERS_SUFFIX = "-markers"
POINTER_SUFFIX = "-pointer"
SPIKES_SUFFIX = "-spikes"
INTENT_SUFFIX = "-intent"


def state_name(task: str = DEFAULT_TASK_NAME) -> str:
    return task + STATE_SUFFIX


def markers_name(task: str = DEFAULT_TASK_NAME) -> str:
    return task + MARKERS_SUFFIX


def pointer_name(task: str = DEFAULT_TASK_NAME) -> str:
    return task + POINTER_SUFFIX


def spikes_name(participant: str = DEFAULT_PARTICIPANT_NAME) -> str:
    return participant + SPIKES_SUFFIX


def intent_name(participant: str = DEFAULT_PARTICIPANT_NAME) -> str:
    return participant + INTENT_SUFFIX


# ---- stream types ----
STATE_TYPE = "TaskState"
MARKERS_TYPE = "Markers"
POINTER_TYPE = "Pointer"
INTENT_TYPE = "Intention"
KINEMATICS_TYPE = "Kinematics"

# ---- <t>-state: 7 float32 channels, regular at the task update rate ----
STATE_LABELS = ["cursor_x", "cursor_y", "target_x", "target_y", "target_radius", "trial", "state"]
STATE_UNITS = ["cm", "cm", "cm", "cm", "cm", "count", "code"]
(CURSOR_X, CURSOR_Y, TARGET_X, TARGET_Y, TARGET_RADIUS, TRIAL, STATE) = range(7)
# `trial` is the current trial's number, counted from 1 (0 before the first trial starts); markers
# use the same numbers.

# state codes (channel `state`)
STATE_ITI = 0      # inter-trial: no target, target_x/y/radius are NaN
STATE_REACH = 1    # target shown, cursor outside it
STATE_HOLD = 2     # cursor inside the target, hold timer running
STATE_DONE = 3     # block ended (last sample)
STATE_NAMES = {STATE_ITI: "iti", STATE_REACH: "reach", STATE_HOLD: "hold", STATE_DONE: "done"}

# ---- <t>-pointer: mouse in workspace cm, regular 100 Hz (published by the task window) ----
POINTER_LABELS = ["pointer_x", "pointer_y"]
POINTER_UNITS = ["cm", "cm"]
POINTER_RATE_HZ = 100.0

# ---- <p>-intent: participant's intended velocity, one sample per participant update ----
INTENT_LABELS = ["intent_vx", "intent_vy"]
INTENT_UNITS = ["cm/s", "cm/s"]

# ---- decoder output (Kinematics): what the task looks for to pick its control ----
VELOCITY_LABELS = ("vel_x", "vel_y")   # cm/s -> velocity control (integrated with a gain)
POSITION_LABELS = ("pos_x", "pos_y")   # cm   -> position control (used directly)

# ---- defaults (cm, s, Hz) ----
WORKSPACE_HALF_CM = 12.0      # square [-12, 12]^2 centred at (0, 0)
RING_RADIUS_CM = 8.0          # center-out target ring
N_RING_TARGETS = 8
TARGET_RADIUS_CM = 1.5
HOLD_S = 0.5
TIMEOUT_S = 10.0
ITI_S = 0.3
TASK_RATE_HZ = 100.0
VISUAL_DELAY_S = 0.1
MAX_SPEED_CM_S = 20.0
SOURCE_RATE_HZ = 1000.0
N_CHANNELS = 96

# ---- <t>-markers: 1 string channel, irregular; "event arg arg ..." ----
# "wrong <n>" is the grid task's only addition: a selection (hold completed) of a cell that was not cued.
MARKER_EVENTS = ("block_start", "trial_start", "target_on", "acquired", "hold_broken", "success", "timeout", "wrong",
                 "block_end")
# the arguments each event carries (names, in order)
MARKER_ARGS: dict[str, tuple[str, ...]] = {
    "block_start": ("task", "mode"),
    "trial_start": ("trial",),
    "target_on": ("trial", "x", "y", "r"),
    "acquired": ("trial",),
    "hold_broken": ("trial",),
    "success": ("trial",),
    "timeout": ("trial",),
    "wrong": ("trial",),
    "block_end": ("n_trials",),
}
TRIAL_OUTCOMES = ("success", "timeout", "wrong")  # the events that end a trial
_ARG_TYPES = {"trial": int, "n_trials": int, "x": float, "y": float, "r": float}


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def format_marker(event: str, *args: object) -> str:
    """`format_marker("target_on", 3, 8.0, 0.0, 1.5)` -> "target_on 3 8 0 1.5"; checks the arity."""
    want = MARKER_ARGS.get(event)
    if want is None:
        raise ValueError(f"unknown marker event {event!r} (known: {', '.join(MARKER_EVENTS)})")
    if len(args) != len(want):
        raise ValueError(f"marker {event!r} takes {len(want)} arguments ({', '.join(want)}), got {len(args)}")
    return " ".join([event, *(_fmt(a) for a in args)])


@dataclass(frozen=True)
class Marker:
    """A parsed marker: the event and its arguments by name (numbers as int/float, words as str)."""

    event: str
    args: dict[str, int | float | str]

    @property
    def trial(self) -> int | None:
        v = self.args.get("trial")
        return int(v) if v is not None else None


def _num(s: str) -> int | float | str:
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            return s


def parse_marker(text: str) -> Marker:
    """Inverse of format_marker. Unknown events parse too (args named a0, a1, ...), so a recorder
    never chokes on a marker from a newer task; a known event with the wrong arity raises ValueError."""
    words = text.split()
    if not words:
        raise ValueError("empty marker")
    event, rest = words[0], words[1:]
    names = MARKER_ARGS.get(event)
    if names is None:
        return Marker(event, {f"a{i}": _num(w) for i, w in enumerate(rest)})
    if len(rest) != len(names):
        raise ValueError(f"marker {text!r}: {event} takes {len(names)} arguments ({', '.join(names)})")
    try:
        vals = {n: _ARG_TYPES.get(n, str)(w) for n, w in zip(names, rest)}
    except ValueError:
        raise ValueError(f"marker {text!r}: bad argument for {event} ({', '.join(names)})") from None
    return Marker(event, vals)
