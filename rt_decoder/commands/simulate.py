"""Simulate a center-out reaching session and write it as a canonical .npz.

Reaches to 8 targets on a 10 cm circle follow minimum-jerk paths (bell-shaped speed), hold,
and return. Each channel is a Poisson neuron with a 5-30 Hz baseline, cosine-tuned to the hand
velocity 100 ms ahead (neural activity leads movement, as in motor cortex) and a little to
position. Optional shared latent dynamics (--latent-dim: rotating pairs plus a slow gain) and
slow baseline drift (--drift). Behaviour: pos_x, pos_y (cm), vel_x, vel_y (cm/s); trial starts
are stored. The same --seed gives the same file.
"""

from __future__ import annotations

import argparse

HELP = "simulate a center-out session (cosine-tuned Poisson neurons) to a canonical .npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=5.0, metavar="M", help="session length in minutes (default 5)")
    parser.add_argument("--channels", type=int, default=96, metavar="D", help="number of neurons/channels (default 96)")
    parser.add_argument("--bin-ms", type=float, default=20.0, metavar="B", help="bin width in ms (default 20)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; same seed, same session (default 0)")
    parser.add_argument("--latent-dim", type=int, default=0, metavar="L",
                        help="shared latent factors modulating all rates (default 0 = none)")
    parser.add_argument("--drift", type=float, default=0.0, metavar="X",
                        help="slow change of each baseline over the session, in natural-log rate units "
                             "(0.3 = about ±30%%; default 0)")
    parser.add_argument("--out", required=True, metavar="F.npz", help="canonical .npz to write")


def run(args: argparse.Namespace) -> int:
    from ..simulate import simulate_session
    from .convert import describe, output_path, write

    output_path(args.out)
    rec = simulate_session(minutes=args.minutes, channels=args.channels, bin_s=args.bin_ms / 1000.0,
                           seed=args.seed, latent_dim=args.latent_dim, drift=args.drift)
    out = write(rec, args.out)
    print(describe(rec, out))
    return 0
