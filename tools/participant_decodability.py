"""How decodable is a simulated participant? An offline oracle-loop block and a Wiener filter.

The participant model (rt_decoder.closedloop.participant.ParticipantModel, no LSL) plays a
center-out block with a perfect decoder (the cursor integrates the intention; the participant sees
it through its visual delay), binned at 20 ms; rt-decoder's Wiener filter is fit on the first half
(train 80% / validation 20% of it) and scored on the second half (R² of the intended velocity).
It tells how hard each encoding makes decoding before any closed-loop run:

    python tools/participant_decodability.py cosine
    python tools/participant_decodability.py fit:../shared/data/chestek_contdata95/contdata95.mat
    python tools/participant_decodability.py cosine --minutes 4 --npz calib.npz   # a calibration block
"""

from __future__ import annotations

import argparse

import numpy as np

from rt_decoder.baselines import fit_wiener_params
from rt_decoder.closedloop import streams as S
from rt_decoder.closedloop.participant import ParticipantConfig, ParticipantModel
from rt_decoder.metrics import r2
from rt_decoder.recording import Recording, save_npz


def oracle_block(cfg: ParticipantConfig, seconds: float, bin_s: float = 0.02) -> tuple[Recording, int]:
    """(20 ms recording of counts + intended velocity, targets acquired) for an oracle-loop block."""
    m = ParticipantModel(cfg)
    rng = np.random.default_rng(cfg.seed)
    ring = [S.RING_RADIUS_CM * np.array([np.cos(a), np.sin(a)]) for a in np.arange(S.N_RING_TARGETS) * 2 * np.pi / S.N_RING_TARGETS]
    delay = int(round(cfg.visual_delay_s * cfg.control_rate))
    hold_ticks = int(round(S.HOLD_S * cfg.control_rate))
    cursor, target, held, acquired = np.zeros(2), ring[0], 0, 0
    shown, U, C = [], [], []
    for k in range(int(seconds * cfg.control_rate)):
        inside = np.hypot(*(cursor - target)) <= S.TARGET_RADIUS_CM
        held = held + 1 if inside else 0
        if held >= hold_ticks:  # center-out: out to a ring target, back to the centre
            acquired += 1
            target, held = (ring[rng.integers(len(ring))] if not np.any(target) else np.zeros(2)), 0
        shown.append(np.array([*cursor, *target, S.TARGET_RADIUS_CM, acquired + 1, S.STATE_HOLD if inside else S.STATE_REACH]))
        u, counts, _ = m.tick(k, shown[k - delay] if k >= delay else None)
        cursor = np.clip(cursor + u / cfg.control_rate, -S.WORKSPACE_HALF_CM, S.WORKSPACE_HALF_CM)
        U.append(u)
        C.append(counts.sum(axis=0))
    per = int(round(bin_s * cfg.control_rate))
    n = len(U) // per * per
    U2 = np.array(U[:n]).reshape(-1, per, 2).mean(axis=1)
    C2 = np.array(C[:n]).reshape(-1, per, m.D).sum(axis=1)
    names = getattr(m.encoder, "channel_names", None) or [f"ch{i}" for i in range(m.D)]
    rec = Recording(C2, bin_s, U2, ["vel_x", "vel_y"], channel_names=names, source=f"oracle block ({cfg.encoding})")
    return rec.validate(), acquired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("encoding", help="cosine or fit:FILE")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1, help="session seed (noise, spikes)")
    ap.add_argument("--array-seed", type=int, default=0, help="the array (tuning); keep it for the live session")
    ap.add_argument("--npz", help="also write the block as a canonical .npz (labels vel_x, vel_y = intention), "
                                  "e.g. to calibrate a decoder with `rt-decoder train --data`")
    a = ap.parse_args()
    cfg = ParticipantConfig(encoding=a.encoding, seed=a.seed, array_seed=a.array_seed)
    rec, acquired = oracle_block(cfg, a.minutes * 60.0)
    if a.npz:
        save_npz(rec, a.npz)
        print(f"wrote {a.npz}: {rec.n_bins} bins of {rec.bin_s * 1000:g} ms, {rec.n_channels} channels")
    h = rec.n_bins // 2
    t = int(h * 0.8)
    params = fit_wiener_params(rec.slice(0, t), rec.slice(t, h))
    pred = params.predict(rec.counts[h:])
    score = r2(rec.behavior[h:], pred)
    rate = rec.counts.sum() / rec.duration_s / rec.n_channels
    print(f"{a.encoding}: {rec.n_channels} ch, {rate:.1f} Hz/ch; oracle loop acquired {acquired} targets in {a.minutes:g} min; "
          f"Wiener filter (20 ms bins) held-out R² of intended velocity: vx {score[0]:.3f}, vy {score[1]:.3f}")


if __name__ == "__main__":
    main()
