"""ReFIT intention estimation (Gilja et al. 2012, "A high-performance neural prosthesis enabled by
control algorithm design", Nat Neurosci 15:1752).

During closed-loop control the person always means to go to the target, even when the decoder
takes the cursor elsewhere. ReFIT relabels closed-loop data with that intention and refits the
decoder on it:

  - reach (target shown, cursor outside it): the decoded velocity rotated to point from the cursor
    to the target, its speed kept;
  - cursor inside the target (hold): zero velocity (the person means to stay);
  - no target (inter-trial) or no decoded sample: unknown intention, NaN (the fitters skip NaN rows).

Position feedback (Gilja's second innovation: the cursor position is known to the user, so the
Kalman filter should not estimate it from neural data): our decoders get only spike counts, so
the feasible form is to decode velocity alone and let the task integrate it into the cursor. The
experiment trains every decoder, Kalman included, on (vel_x, vel_y) only: the Kalman state is
velocity, position never enters the observation model, and its uncertainty is zero in effect (it
is the task's own integral, not an estimate). That is the velocity-only ReFIT-KF of Gilja et al.
with the position terms of H dropped; a rig that feeds the cursor back to the decoder could use
them.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError, where
from ..recording import Recording


def intended_velocity(decoded: np.ndarray, cursor: np.ndarray, target: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """ReFIT labels (T, 2) cm/s from decoded velocity (T, 2), cursor (T, 2), target (T, 2) (NaN: no
    target) and target radius (T,): rotated toward the target, zero inside it, NaN when unknown."""
    v = np.asarray(decoded, np.float64)
    c = np.asarray(cursor, np.float64)
    g = np.asarray(target, np.float64)
    r = np.asarray(radius, np.float64).reshape(-1)
    to = g - c
    dist = np.hypot(to[:, 0], to[:, 1])
    speed = np.hypot(v[:, 0], v[:, 1])
    out = np.full(v.shape, np.nan)
    known = np.isfinite(dist) & np.isfinite(speed) & np.isfinite(r)
    inside = known & (dist <= r)
    reach = known & ~inside & (dist > 0)
    out[inside] = 0.0
    out[reach] = to[reach] / dist[reach, None] * speed[reach, None]
    return out


def refit_recording(block: Recording) -> Recording:
    """A closed-loop block (recorder.block_recording) relabelled for training: behaviour = the ReFIT
    intended (vel_x, vel_y); rows of unknown intention are NaN."""
    ex = block.extra
    if "decoded" not in ex or "decoded_names" not in ex:
        raise DataError(where(block.source, "ReFIT needs the decoder's output in the block (none was recorded)"))
    names = [str(n) for n in np.asarray(ex["decoded_names"]).ravel()]
    if "vel_x" not in names or "vel_y" not in names:
        raise DataError(where(block.source, f"ReFIT needs a velocity decoder (vel_x, vel_y); its outputs were {names}"))
    dec = np.asarray(ex["decoded"], np.float64)[:, [names.index("vel_x"), names.index("vel_y")]]
    bn = list(block.behavior_names)
    cursor = block.behavior[:, [bn.index("pos_x"), bn.index("pos_y")]]
    target = np.stack([ex["target_x"], ex["target_y"]], axis=1)
    y = intended_velocity(dec, cursor, target, ex["target_radius"])
    return Recording(counts=block.counts, bin_s=block.bin_s, behavior=y, behavior_names=["vel_x", "vel_y"],
                     channel_names=block.channel_names, trial_starts=block.trial_starts, source=block.source,
                     extra={"behavior_units": np.array(["cm/s", "cm/s"])}).validate()


def observation_recording(block: Recording) -> Recording:
    """An observation block relabelled for training: behaviour = the cursor's velocity (vel_x, vel_y),
    the movement the participant was asked to intend."""
    bn = list(block.behavior_names)
    y = block.behavior[:, [bn.index("vel_x"), bn.index("vel_y")]]
    return Recording(counts=block.counts, bin_s=block.bin_s, behavior=y, behavior_names=["vel_x", "vel_y"],
                     channel_names=block.channel_names, trial_starts=block.trial_starts, source=block.source,
                     extra={"behavior_units": np.array(["cm/s", "cm/s"])}).validate()
