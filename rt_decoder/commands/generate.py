"""Sample synthetic spike trains from a generative step graph, bin by bin (autoregressive).

Each bin is drawn from the model's next-bin prediction (Bernoulli spike probability or Poisson
rate, per the model card) and fed back as the next input. The result is a canonical .npz
(counts, bin_s, channel_names) that every other command accepts. With --compare, the whole
sample's per-neuron rates, pairwise correlations of binned counts, Fano factors, spike-count
distributions and population synchrony (channels firing per bin) are compared with a block of
a real recording (binarized for a Bernoulli model), and both the model and --reference (the
run's glm.onnx) are scored by held-out bits/spike on that block; --report draws it all as a PNG.
A sample that runs away (the population ends up firing in nearly every bin) is reported as one
WARNING line with the step where it starts, in the JSON and in the report.

  rt-decoder generate runs/ziv/model.onnx --steps 10000 --out fake.npz --compare DATA \
      --reference runs/ziv/glm.onnx --report fake.png --json fake.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "sample spike trains from a generative model and compare their statistics with real data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="generative step graph (model card kind 'generative')")
    parser.add_argument("--steps", type=int, required=True, help="number of bins to generate")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same sample (default 0)")
    parser.add_argument("--out", metavar="FILE.npz", required=True, help="write the generated counts here (canonical npz)")
    parser.add_argument("--burn-in", type=int, default=0, help="sampled bins to drop first (the state starts empty)")
    parser.add_argument("--compare", metavar="DATA", help="real recording to compare statistics with")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "all"),
                        help="block of the real recording to compare with (default: test; the model's own split "
                             "when DATA is its training recording, else the last 20%%)")
    parser.add_argument("--bin-ms", type=float, default=None, help="re-bin the real recording to this width first")
    parser.add_argument("--prime-bins", type=int, default=0,
                        help="with --compare: feed the first N real bins of the block before sampling, so the "
                             "sample starts from real activity instead of an empty state")
    parser.add_argument("--window", type=int, default=10, help="Fano factor window in bins (default 10)")
    parser.add_argument("--reference", metavar="REF.onnx",
                        help="a second generative model to sample and score the same way (e.g. the run's glm.onnx); "
                             "its statistics go in the JSON and, with --report, in REPORT_reference.png")
    parser.add_argument("--report", metavar="PNG", help="draw rates, correlations, Fano factors, count and synchrony "
                                                        "distributions, activity over time and rasters of the whole sample here")
    parser.add_argument("--json", metavar="FILE", help="write the summary statistics as JSON here")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_output, write_json
    from ..errors import DataError, where
    from ..evaluation import check_compatible, evaluate_decoder
    from ..generation import compare_statistics, generate, report_png, runaway_warning
    from ..recording import Recording, save_npz
    from ..step_model import StepModel
    from .evaluate import choose_bounds, load_data

    if args.steps < 1:
        raise DataError(f"generate: --steps must be >= 1, got {args.steps}")
    if args.burn_in < 0 or args.window < 2:
        raise DataError(f"generate: --burn-in must be >= 0 and --window >= 2, got {args.burn_in}, {args.window}")
    check_output(args.out, "--out file")
    for flag, path in (("--report", args.report), ("--json", args.json)):
        if path:
            check_output(path, f"{flag} file")
    model = StepModel(args.model, threads=args.threads)
    ref = StepModel(args.reference, threads=args.threads) if args.reference else None
    real = rec = bounds = None
    if args.compare:
        rec = load_data(args.compare, args.bin_ms)
        check_compatible(model, rec)
        if ref is not None:
            check_compatible(ref, rec)
        bounds = choose_bounds(model.card, rec, None, None)
        lo, hi = (0, rec.n_bins) if args.split == "all" else bounds[args.split]
        real = rec.counts[lo:hi]
        if real.shape[0] < 2 * args.window:
            raise DataError(where(args.compare, f"the {args.split} block has only {real.shape[0]} bins"))
    prime = None
    if args.prime_bins:
        if real is None or args.prime_bins < 0 or args.prime_bins > real.shape[0]:
            raise DataError(f"generate: --prime-bins {args.prime_bins} needs --compare DATA with at least that many bins")
        prime = real[:args.prime_bins]
    results = {}
    for label, m in [("model", model)] + ([("reference", ref)] if ref is not None else []):
        counts, info = generate(m, args.steps, seed=args.seed, burn_in=args.burn_in, prime=prime, progress=not args.quiet)
        stats = compare_statistics(counts, real, bin_s=m.card.bin_s, window=args.window,
                                   binarize_real=info["likelihood"] == "bernoulli")
        held_out = None
        if rec is not None:
            held_out = evaluate_decoder(m, rec, args.split, bounds)["model"]
        results[label] = (m, counts, info, stats, held_out)
    counts, info = results["model"][1], results["model"][2]
    card = model.card
    out = save_npz(Recording(counts=counts, bin_s=card.bin_s, channel_names=list(card.channel_names),
                             source=str(args.out), extra={"generated_seed": args.seed}), args.out)
    print(f"generated {args.steps} bins x {counts.shape[1]} channels ({info['likelihood']}) in "
          f"{info['seconds']:.2f} s: {info['steps_per_s']:.0f} steps/s -> {out}")
    doc: dict = {}
    for label, (m, _, inf, stats, held_out) in results.items():
        s = stats["summary"]
        name = f"{label} {m.path.name}"
        print(f"{name}: sample rate {s['mean_rate_generated']:.3g} Hz, mean pairwise corr "
              f"{s['mean_pairwise_corr_generated']:.3g}, median Fano {s['median_fano_generated']:.2f}, "
              f"{s['mean_active_channels_generated']:.2f} channels active per bin")
        if real is not None:
            print(f"{name}: match to real: rate r = {s['rate_corr']:.3f}, pairwise-correlation r = "
                  f"{s['pairwise_corr_corr']:.3f}, Fano r = {s['fano_corr']:.3f}, synchrony TV {s['synchrony_tv']:.3f}, "
                  f"count TV {s['window_count_tv']:.3f}")
        if held_out is not None:
            print(f"{name}: held-out ({args.split} block) {held_out['bits_per_spike']:.4f} bits/spike")
        warn = runaway_warning(stats["runaway"])
        if warn:
            print(f"{m.path.name}: {warn}", file=sys.stderr)
        doc[label] = {**s, **inf, "model": str(m.path), "runaway": stats["runaway"],
                      "held_out": held_out,
                      "distributions": {k: v for k, v in stats["distributions"].items() if not k.startswith("active_fraction")}}
    if real is not None:
        s = results["model"][3]["summary"]
        print(f"real ({args.split}, {real.shape[0]} bins{', binarized' if s['binarized_real'] else ''}): "
              f"rate {s['mean_rate_real']:.3g} Hz, mean pairwise corr {s['mean_pairwise_corr_real']:.3g}, "
              f"median Fano {s['median_fano_real']:.2f}, {s['mean_active_channels_real']:.2f} channels active per bin")
    if args.report:
        scores = ", ".join(f"{m.path.name} {h['bits_per_spike']:.3f}" for m, _, _, _, h in results.values() if h)
        note = f"held-out bits/spike ({args.split} block): {scores}" if scores else ""
        for label, (m, x, _, stats, _) in results.items():
            path = Path(args.report)
            if label == "reference":
                path = path.with_name(f"{path.stem}_reference{path.suffix}")
            report_png(stats, path, x, real, title=f"{m.path.name}: {args.steps} generated bins (whole sample)", note=note)
            print(f"wrote {path}")
    if args.json:
        # the model's figures at the top level (as before), the reference's under "reference"
        top = doc.pop("model")
        write_json(args.json, {**top, **({"reference": doc["reference"]} if "reference" in doc else {})},
                   default=_jsonable)
        print(f"wrote {args.json}")
    return 0


def _jsonable(v):
    import numpy as np

    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serializable")
