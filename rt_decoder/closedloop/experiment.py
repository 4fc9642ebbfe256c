"""A closed-loop session the way labs run one (DESIGN §9): observe -> train -> closed loop -> ReFIT -> closed loop.

  1-observe       open-loop observation block: the task moves the cursor to each target on its
                  own, the participant intends it; recorded to a canonical npz
  2-model         the decoder trained on that block, labels = the cursor's velocity (vel_x, vel_y):
                  ours through `rt-decoder train` (its own process: torch never enters this one),
                  Wiener / Kalman through the same fit as `train` (evaluation.evaluate_baselines)
  3-closed        closed-loop block: participant -> `rt-decoder run` -> task
  4-model-refit   ReFIT recalibration (refit.py, Gilja et al. 2012): block 3 relabelled with the
                  intended velocity, pooled with block 1 (refit_data), ours fine-tuned from 2-model
  5-closed-refit  closed-loop block with the recalibrated decoder

Each block runs the real commands (`rt-decoder participant`, `run`, `task`) as child processes,
any of which a real rig can replace, plus a recorder in this process. Each block folder holds
block.npz (canonical, DESIGN §3), streams.npz (every LSL sample of the block), trials.csv and
summary.json (the task's metrics + decode latency from the runtime's summary), logs/; the
session folder holds figure.png (trajectories and metrics per block) and summary.json.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..interrupts import interrupt_on_sigterm
from ..recording import Recording, save_npz, split_bounds
from . import streams as S
from .procs import ExperimentError, Procs, cli, last_line
from .recorder import StreamRecorder, block_recording, save_streams
from .refit import DATA_MODES, GAIN_MODES, SPEED_MODES, observation_recording, refit_training_set
from .refit import speed_gain as matched_gain

DECODERS = ("ours", "wiener", "kalman")
METRIC_KEYS = ("trials", "success_rate", "time_to_target_s", "path_efficiency", "bitrate_bps")
OBSERVE_TRIAL_S = 1.8  # an observation trial: ~1 s reach + 0.5 s hold + 0.3 s inter-trial


def default_config() -> Path:
    """The shipped `closedloop` config (a short session's training config); works installed too."""
    from ..configs import path_of

    return path_of("closedloop")


@dataclass
class Block:
    """One recorded block: its folder, canonical recording and summary."""

    label: str
    folder: Path
    recording: Recording
    summary: dict


@dataclass
class Session:
    """Everything a session needs; `run()` executes it. `log` receives one line per step."""

    decoder: str
    out: Path
    participant_args: list[str] = field(default_factory=list)
    task_args: list[str] = field(default_factory=list)
    headless: bool = True
    observe_s: float = 60.0
    trials: int = 40
    seed: int = 0
    budget_ms: float = 5.0
    bin_ms: float = 20.0
    config: Path | None = None
    time_limit_s: float | None = None
    timeout_s: float = S.TIMEOUT_S
    prefix: str = field(default_factory=lambda: f"cl{uuid.uuid4().hex[:6]}")
    participant_command: list[str] = field(default_factory=lambda: cli("participant"))  # a real rig: its own
    spikes: str | None = None  # an existing spike stream (a real array): no simulated participant is started
    refit_speed: str = "keep"       # ReFIT label speed: keep (Gilja 2012) | observed (refit.match_speed)
    refit_data: str = "pooled"      # ReFIT training set: pooled (observation + closed loop) | closed (closed loop only)
    refit_init: bool = True         # ours: fine-tune the ReFIT decoder from the observation-trained one
    refit_gain: str = "match"       # match: the ReFIT block's task gain restores its labels' speed (refit.speed_gain)
    log: object = print
    _session_procs: Procs | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ExperimentError(f"--decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.refit_speed not in SPEED_MODES:
            raise ExperimentError(f"--refit-speed must be one of {', '.join(SPEED_MODES)}, got {self.refit_speed!r}")
        if self.refit_gain not in GAIN_MODES:
            raise ExperimentError(f"--refit-gain must be one of {', '.join(GAIN_MODES)}, got {self.refit_gain!r}")
        if self.refit_data not in DATA_MODES:
            raise ExperimentError(f"--refit-data must be one of {', '.join(DATA_MODES)}, got {self.refit_data!r}")
        self.out = Path(self.out)

    # ------------------------------------------------------------------ blocks

    def names(self, tag: str) -> dict[str, str]:
        base = f"{self.prefix}-{tag}"
        return {"task": f"{base}-task", "participant": f"{base}-p", "decoder": f"{base}-dec",
                "stats": f"{base}-dec-stats"}

    def run_block(self, folder: Path, mode: str, trials: int, model: Path | None = None,
                  duration_s: float | None = None, gain: float = 1.0) -> Block:
        """Participant (+ runtime) + task as child processes, recorded from here; the block ends
        after `trials` trials (or `duration_s` seconds)."""
        folder = Path(folder)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        n = self.names(folder.name.split("-")[0])
        if self._session_procs is not None:  # one participant for the whole session, one task name
            n |= {"task": f"{self.prefix}-task", "participant": f"{self.prefix}-p"}
        spikes, intent = S.spikes_name(n["participant"]), S.intent_name(n["participant"])
        if self.spikes:
            spikes, intent = self.spikes, None
        state, markers = S.state_name(n["task"]), S.markers_name(n["task"])
        wanted = [spikes, state, markers, n["decoder"], n["stats"]] + ([intent] if intent else [])
        rec = StreamRecorder(wanted, any_age=(spikes, intent or spikes)).start()
        t0 = time.monotonic()
        try:
            with Procs(folder / "logs") as procs:
                here = procs if self._session_procs is None else self._session_procs
                if not self.spikes and "participant" not in here.procs:
                    log_to = folder if self._session_procs is None else self.out
                    here.start("participant", [*self.participant_command, "--name", n["participant"], "--task", n["task"],
                                               "--seed", str(self.seed), "--wait", "60",
                                               "--log", str(log_to / "participant.json"), *self.participant_args])
                if model is not None:
                    procs.start("decoder", cli("run", model, "--input", spikes, "--output", n["decoder"],
                                               "--stats", n["stats"], "--budget-ms", self.budget_ms,
                                               "--resolve-timeout", 60, "--json", folder / "runtime.json", "--quiet"))
                task = cli("task", "--name", n["task"], "--mode", mode, "--out", folder, "--seed", self.seed)
                task += ["--duration", duration_s] if duration_s else ["--trials", trials]
                if model is not None:
                    task += ["--decoder", n["decoder"], "--wait", 60]
                task += self.task_args
                if gain != 1.0:  # after the user's flags, so it wins: their gain (default 1) times this one
                    task += ["--gain", f"{task_gain(self.task_args) * gain:.6g}"]
                if self.headless:
                    task.append("--headless")
                procs.start("task", task)
                per_trial = OBSERVE_TRIAL_S if mode == "observe" else self.timeout_s + S.HOLD_S + S.ITI_S
                procs.wait("task", timeout=90 + 1.5 * (duration_s or trials * per_trial), also=self._session_procs)
                if model is not None:
                    procs.stop("decoder")
                procs.stop("participant")  # a per-block participant (the session's keeps running)
        finally:
            raw = rec.stop()
        save_streams(raw, folder / "streams.npz")
        block = block_recording(raw, spikes, state, markers, decoder=n["decoder"], intent=intent,
                                bin_s=self.bin_ms / 1000.0, source=str(folder / "block.npz"))
        save_npz(block, folder / "block.npz")
        summary = self._block_summary(folder, mode, model, time.monotonic() - t0)
        if model is not None:
            summary["intent_tracking"] = intent_tracking(block)
            summary["task_gain"] = task_gain(self.task_args) * gain
        write_json(folder / "summary.json", summary)
        self.log(f"{folder.name}: {format_metrics(summary)}")
        return Block(folder.name, folder, block, summary)

    def _block_summary(self, folder: Path, mode: str, model: Path | None, wall_s: float) -> dict:
        path = folder / "summary.json"
        if not path.exists() or not (folder / "trials.csv").exists():
            raise ExperimentError(f"the task wrote no summary.json/trials.csv to {folder} "
                                  f"(last line of its log: {last_line(folder / 'logs' / 'task.log')})")
        task = json.loads(path.read_text())
        out = {"block": folder.name, "mode": mode, "decoder": self.decoder if model is not None else None,
               "model": str(model) if model is not None else None, "wall_s": round(wall_s, 1),
               **{k: task.get(k) for k in METRIC_KEYS}, "task": task}
        rt = folder / "runtime.json"
        if rt.exists():
            r = json.loads(rt.read_text())
            out["decode_latency_ms"] = {"p50": r["latency_ms"]["p50"], "p99": r["latency_ms"]["p99"],
                                        "max": r["latency_ms"]["max"]}
            out["latency_p99_ms"] = r["latency_ms"]["p99"]
            out["deadline_misses"] = r["misses"]
            out["decoded_bins"] = r["bins"]
        if isinstance(task.get("update_latency"), dict):
            out["task_update_latency_ms"] = {k: v for k, v in task["update_latency"].items() if k != "definition"}
        return out

    # ------------------------------------------------------------------ training

    def train(self, rec: Recording, folder: Path, init_from: Path | None = None) -> Path:
        """Fit the session's decoder on `rec` (behaviour vel_x, vel_y) into `folder`; returns the model.
        `init_from`: a checkpoint of ours to fine-tune from (training.init_from; Wiener/Kalman are
        closed-form fits and ignore it)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = save_npz(rec, folder / "train.npz")
        t0 = time.monotonic()
        if self.decoder == "ours":
            cfg = self.config or default_config()
            if init_from is not None:
                cfg = fine_tune_config(cfg, Path(init_from), folder / "config.yaml")
            cmd = cli("train", "--config", cfg, "--data", data, "--out", folder, "--no-baselines", "--seed", self.seed)
            if self.time_limit_s:
                cmd += ["--time-limit", str(self.time_limit_s)]
            with open(folder / "train.log", "w") as f:
                p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if p.returncode != 0:
                raise ExperimentError(f"training failed: {last_line(folder / 'train.log')} (log {folder / 'train.log'})")
            model = folder / "model.onnx"
            metrics = json.loads((folder / "metrics.json").read_text())["model"]
        else:
            from ..evaluation import evaluate_baselines

            bounds = split_bounds(rec.n_bins, val=0.1, test=0.1)
            res = evaluate_baselines(rec, bounds, 0, folder)
            model = folder / f"{self.decoder}.onnx"
            metrics = res[self.decoder]["model"]
            write_json(folder / "metrics.json", {"outputs": rec.behavior_names, "bin_s": rec.bin_s,
                                                 "split": {k: list(v) for k, v in bounds.items()},
                                                 "baselines": {k: v["model"] for k, v in res.items()}}, default=float)
        r2 = [round(float(v), 3) for v in metrics["r2"]]
        self.log(f"{folder.name}: {self.decoder} trained in {time.monotonic() - t0:.1f} s on {rec.n_bins} bins "
                 f"(held-out R2 {r2} for {rec.behavior_names})")
        return model

    def gain_for(self, model: Path, rec: Recording) -> float:
        """The task gain that gives `model` the speed of the labels of `rec` (the relabelled
        closed-loop block, replayed offline through the exported graph): with ReFIT's kept speed,
        the first decoder's speed, so the participant keeps the gain they had (refit.speed_gain)."""
        from ..step_model import StepModel

        m = StepModel(model)
        names = list(m.card.outputs)
        pred = m.run(rec.counts)[:, [names.index("vel_x"), names.index("vel_y")]]
        g = matched_gain(rec.behavior, pred)
        self.log(f"{Path(model).parent.name}: task gain {g:.3f} (median ReFIT label / decoded speed on the closed-loop block)")
        return g

    # ------------------------------------------------------------------ the session

    def observe(self, folder: Path | None = None) -> Block:
        """The open-loop observation block (into OUT/1-observe unless `folder` says otherwise)."""
        n = max(2, int(math.ceil(self.observe_s / OBSERVE_TRIAL_S)))
        return self.run_block(Path(folder) if folder else self.out / "1-observe", "observe", n, duration_s=self.observe_s)

    def run(self, observation: Block | None = None) -> dict:
        """The five steps; returns the session summary (also written to OUT/summary.json)."""
        self.out.mkdir(parents=True, exist_ok=True)
        # one participant process for the whole session (as one person sits through it): its drift,
        # if any, runs on across blocks and the training pauses
        with Procs(self.out / "logs") as session:
            self._session_procs = session
            try:
                obs = observation or self.observe()
                m1 = self.train(observation_recording(obs.recording), self.out / "2-model")
                session.check()
                cl1 = self.run_block(self.out / "3-closed", "closed", self.trials, model=m1)
                refit_set = refit_training_set(cl1.recording, obs.recording, speed=self.refit_speed, data=self.refit_data)
                init = self.out / "2-model" / "checkpoint.pt" if self.decoder == "ours" and self.refit_init else None
                self.log(f"4-model-refit: ReFIT labels (speed {self.refit_speed}) on {self.refit_data} data, "
                         f"{'fine-tuned from 2-model' if init else 'from scratch'}")
                m2 = self.train(refit_set, self.out / "4-model-refit", init_from=init)
                session.check()
                gain = 1.0
                if self.refit_gain == "match":
                    gain = self.gain_for(m2, refit_training_set(cl1.recording, obs.recording, speed=self.refit_speed, data="closed"))
                cl2 = self.run_block(self.out / "5-closed-refit", "closed", self.trials, model=m2, gain=gain)
            finally:
                self._session_procs = None
        blocks = [obs, cl1, cl2]
        from .figure import session_figure

        fig = session_figure(blocks, self.out / "figure.png", title=f"{self.decoder}: observe -> closed -> ReFIT")
        summary = {"decoder": self.decoder, "seed": self.seed, "participant_args": self.participant_args,
                   "task_args": self.task_args,
                   "refit": {"speed": self.refit_speed, "data": self.refit_data, "gain": self.refit_gain,
                             "fine_tune": self.decoder == "ours" and self.refit_init}, "observation": obs.summary | {"folder": str(obs.folder)},
                   "blocks": {b.label: b.summary for b in blocks}, "models": {"observe": str(m1), "refit": str(m2)},
                   "figure": str(fig), "participant": participant_desc(obs.folder)}
        write_json(self.out / "summary.json", summary, default=float)
        return summary


def add_refit_arguments(p) -> None:
    """The ReFIT flags, shared by `experiment` and `bench closed-loop`."""
    p.add_argument("--refit-speed", choices=SPEED_MODES, default="keep",
                   help="ReFIT label speed: keep = the decoded speed, rotated toward the target (Gilja et al. 2012); "
                        "observed = mapped by quantile onto the observation block's label speeds (default: keep)")
    p.add_argument("--refit-data", choices=DATA_MODES, default="pooled",
                   help="ReFIT training set: pooled = observation block + relabelled closed-loop block; "
                        "closed = the closed-loop block alone (default: pooled)")
    p.add_argument("--refit-gain", choices=GAIN_MODES, default="match",
                   help="match: the ReFIT block's task gain is set so the refit decoder's median speed on the closed-loop "
                        "block equals its labels' (with --refit-speed keep: the first decoder's speed, undoing the refit's "
                        "shrinkage); none: the task's gain as given (default: match)")
    p.add_argument("--refit-from-scratch", action="store_true",
                   help="ours: train the ReFIT decoder from scratch instead of fine-tuning the observation-trained one")


def refit_kwargs(args) -> dict:
    """Session keyword arguments from add_refit_arguments' flags."""
    return {"refit_speed": args.refit_speed, "refit_data": args.refit_data, "refit_init": not args.refit_from_scratch,
            "refit_gain": args.refit_gain}


def task_gain(task_args: list[str]) -> float:
    """The --gain among the task flags (the last one, as argparse reads it), 1.0 without one."""
    g = "1"
    for i, a in enumerate(task_args):
        if a == "--gain" and i + 1 < len(task_args):
            g = task_args[i + 1]
        elif a.startswith("--gain="):
            g = a.split("=", 1)[1]
    try:
        return float(g)
    except ValueError:  # the task itself names a bad --gain
        return 1.0


def fine_tune_config(config: Path, checkpoint: Path, out: Path) -> Path:
    """`config` (a file or a shipped name) with training.init_from = `checkpoint`, written to `out`."""
    import yaml

    from ..configs import resolve

    raw = yaml.safe_load(resolve(config).read_text()) or {}
    raw.setdefault("training", {})["init_from"] = str(Path(checkpoint).resolve())
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def intent_tracking(block: Recording) -> dict:
    """How the decoded velocity follows the participant's intention (only a simulated participant
    publishes it): during reaches, the median decoded/intended speed ratio and angle error; during
    holds, the mean decoded speed (what makes holding hard). Diagnoses a ReFIT that does not help."""
    ex = block.extra
    if "intent" not in ex or "decoded" not in ex:
        return {}
    names = [str(n) for n in np.asarray(ex["decoded_names"]).ravel()]
    if "vel_x" not in names or "vel_y" not in names:
        return {}
    dec = np.asarray(ex["decoded"], np.float64)[:, [names.index("vel_x"), names.index("vel_y")]]
    it = np.asarray(ex["intent"], np.float64)
    state = np.asarray(ex["task_state"])
    ok = np.isfinite(dec).all(axis=1) & np.isfinite(it).all(axis=1)
    reach = ok & (state == S.STATE_REACH) & (np.hypot(it[:, 0], it[:, 1]) > 1.0)
    hold = ok & (state == S.STATE_HOLD)
    out: dict = {"reach_bins": int(reach.sum()), "hold_bins": int(hold.sum())}
    if reach.any():
        si, sd = np.hypot(*it[reach].T), np.hypot(*dec[reach].T)
        cos = (it[reach] * dec[reach]).sum(axis=1) / np.maximum(si * sd, 1e-9)
        out |= {"reach_speed_ratio": float(np.median(sd / si)),
                "reach_angle_error_deg": float(np.median(np.degrees(np.arccos(np.clip(cos, -1, 1))))),
                "reach_intent_speed_cm_s": float(si.mean()), "reach_decoded_speed_cm_s": float(sd.mean())}
    if hold.any():
        out["hold_decoded_speed_cm_s"] = float(np.hypot(*dec[hold].T).mean())
    return out


def participant_desc(folder: Path) -> dict:
    """The participant's parameters as it published them (its spikes stream's desc)."""
    from .recorder import load_streams

    try:
        raw = load_streams(folder / "streams.npz")
    except (OSError, KeyError, ValueError):
        return {}
    for s in raw.values():
        if s.name.endswith(S.SPIKES_SUFFIX):
            return {"stream": s.name, "type": s.type, "rate": s.rate, "channels": len(s.labels) or None, **s.desc}
    return {}


def format_metrics(s: dict) -> str:
    def f(key: str, fmt: str) -> str:
        v = s.get(key)
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    text = (f"{f('trials', 'd')} trials, success {f('success_rate', '.0%')}, time to target {f('time_to_target_s', '.2f')} s, "
            f"path efficiency {f('path_efficiency', '.2f')}, bitrate {f('bitrate_bps', '.2f')} bit/s")
    ratio = (s.get("intent_tracking") or {}).get("reach_speed_ratio")
    if ratio is not None:
        text += f", decoded/intended speed {ratio:.2f}"
    if "decode_latency_ms" in s:
        lat = s["decode_latency_ms"]
        text += f"; decode latency p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, {s.get('deadline_misses', 0)} misses"
    return text


def session_main(session: Session) -> int:
    """Run and print; one line on failure (the CLI turns ExperimentError into it)."""
    interrupt_on_sigterm()
    s = session.run()
    print(f"wrote {session.out}/summary.json and {s['figure']}", file=sys.stderr)
    return 0

