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

How the refit decoder is trained (refit_training_set): labs do not refit from scratch on one short
closed-loop block. The ReFIT block is pooled with the observation block (Gilja 2012 trained on all
closed-loop trials of the session; Jarosiewicz et al. 2013, Sci Transl Med 5:181ra55 / Brandman et
al. 2018, J Neural Eng 15:026007 pool calibration blocks), and our network is fine-tuned from the
observation-trained weights (training.init_from). A 40-trial block alone (~80 s, ~40% zero labels)
regresses the speed toward zero: ReFIT keeps the decoded speed, which is already shrunk, and every
least-squares refit shrinks it again (Fan et al. 2014, J Neural Eng 11:016004: "retraining also led
to slower online decode velocities").

Label speed (`speed`): "keep" is Gilja's rotation (decoded speed kept); "observed" maps the reach
label speeds, by quantile, onto the speed distribution of the observation block's labels (the scale
the first decoder was taught), independent of the decoder's gain. On the simulated participant
"observed" is slower than "keep" (the observation labels are the cursor's minimum-jerk speeds), so
"keep" is the default.

Gain (speed_gain, `--refit-gain match`): a least-squares refit shrinks its output speed below its
labels'; the ReFIT block's task gain can restore it (median label speed / median decoded speed on
the closed-loop block, replayed offline), so the participant keeps the speed they had (default).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError, where
from ..recording import Recording

SPEED_MODES = ("keep", "observed")
DATA_MODES = ("pooled", "closed")
GAIN_MODES = ("none", "match")


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


def match_speed(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Labels (T, 2) with their non-zero speeds mapped by quantile onto the distribution of the
    non-zero speeds in `reference` (N, 2): directions, zeros, NaN rows and the speed ranking kept."""
    y = np.array(labels, np.float64)
    sp = np.hypot(y[:, 0], y[:, 1])
    ref = np.hypot(*np.asarray(reference, np.float64).reshape(-1, 2).T)
    ref = np.sort(ref[np.isfinite(ref) & (ref > 0)])
    moving = np.isfinite(sp) & (sp > 0)
    if not moving.any() or ref.size == 0:
        return y
    rank = (np.argsort(np.argsort(sp[moving])) + 0.5) / moving.sum()       # mid-rank quantile in (0, 1)
    new = np.interp(rank, (np.arange(ref.size) + 0.5) / ref.size, ref)
    y[moving] *= (new / sp[moving])[:, None]
    return y


def speed_gain(labels: np.ndarray, decoded: np.ndarray) -> float:
    """The velocity gain that gives a decoder the speed of its labels: median label speed / median
    decoded speed over the rows with a moving label (a least-squares fit shrinks its output speed
    toward zero; this undoes it, using only the training data). 1.0 when there is nothing to compare."""
    lab = np.hypot(*np.asarray(labels, np.float64).reshape(-1, 2).T)
    dec = np.hypot(*np.asarray(decoded, np.float64).reshape(-1, 2).T)
    ok = np.isfinite(lab) & np.isfinite(dec) & (lab > 0)
    if not ok.any() or np.median(dec[ok]) <= 0:
        return 1.0
    return float(np.median(lab[ok]) / np.median(dec[ok]))


def concat(recs: list[Recording], source: str) -> Recording:
    """Blocks one after another (same channels, bin width, behaviour names); trial starts shifted."""
    first = recs[0]
    for r in recs[1:]:
        if r.n_channels != first.n_channels or abs(r.bin_s - first.bin_s) > 1e-12 or r.behavior_names != first.behavior_names:
            raise DataError(where(r.source, f"cannot pool with {first.source}: {r.n_channels} channels at {r.bin_s} s "
                                            f"({r.behavior_names}) vs {first.n_channels} at {first.bin_s} s ({first.behavior_names})"))
    starts, off = [], 0
    for r in recs:
        if r.trial_starts is not None:
            starts.append(np.asarray(r.trial_starts, np.int64) + off)
        off += r.n_bins
    return Recording(counts=np.concatenate([r.counts for r in recs]), bin_s=first.bin_s,
                     behavior=np.concatenate([r.behavior for r in recs]), behavior_names=list(first.behavior_names),
                     channel_names=first.channel_names, trial_starts=np.concatenate(starts) if starts else None,
                     source=source, extra={"behavior_units": np.array(["cm/s", "cm/s"])}).validate()


def refit_training_set(closed: Recording, observation: Recording | None, speed: str = "keep",
                       data: str = "pooled") -> Recording:
    """What the ReFIT decoder is trained on: the closed-loop block relabelled (refit_recording, label
    speed per `speed`), after the observation block when `data` is "pooled" (the closed-loop block
    last, so the validation and test splits fall in closed-loop data)."""
    if speed not in SPEED_MODES:
        raise DataError(f"ReFIT label speed must be one of {', '.join(SPEED_MODES)}, got {speed!r}")
    if data not in DATA_MODES:
        raise DataError(f"ReFIT training data must be one of {', '.join(DATA_MODES)}, got {data!r}")
    if observation is None and (speed == "observed" or data == "pooled"):
        raise DataError(f"ReFIT with speed {speed!r} and data {data!r} needs the observation block")
    obs = observation_recording(observation) if observation is not None else None
    r = refit_recording(closed)
    if speed == "observed":
        r.behavior = match_speed(r.behavior, obs.behavior)
    return concat([obs, r], source=closed.source) if data == "pooled" else r


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
