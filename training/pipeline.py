"""`rt-decoder train` end to end: load -> prepare -> fit -> export -> references -> evaluate ->
DIR/model.onnx, DIR/metrics.json, DIR/<reference>.onnx (gru, tcfnn, mlp, wiener, kalman),
DIR/checkpoint.pt, each written atomically (rt_decoder.atomic) and stamped with the data
fingerprint and the run id.

Every figure in metrics.json comes from running an exported step graph bin by bin (StepModel),
so it is what a streaming user will see.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import onnx

from rt_decoder.atomic import check_output_dir, write_json
from rt_decoder.errors import ConfigError, where
from rt_decoder.loaders import load_recording
from rt_decoder.model_card import CARD_KEY, ModelCard, attach
from rt_decoder.recording import Recording
from rt_decoder.step_graph import save

from .config import torch_threads
from .data import prepare, resolve_levels
from .export import export_step_graph
from .train import fit

STALE = ("metrics.json", "wiener.onnx", "kalman.onnx", "gru.onnx", "tcfnn.onnx", "mlp.onnx", "glm.onnx")   # written by a run after its model.onnx


def evaluate(path: str | Path, rec: Recording, split: dict) -> dict:
    """Test-block figures of a step graph, run bin by bin through StepModel (reset at the block start)."""
    from rt_decoder.evaluation import evaluate_decoder

    return evaluate_decoder(path, rec, "test", split_bounds=split, progress=True)["model"]


def set_card_metrics(path: Path, metrics: dict, extra: dict | None = None) -> None:
    """Put the test metrics (and provenance flags such as `partial`) into the card, rewriting atomically."""
    m = onnx.load(str(path))
    props = {p.key: p.value for p in m.metadata_props}
    card = ModelCard.from_json(props[CARD_KEY], str(path))
    card.metrics = metrics
    card.extra.update(extra or {})
    attach(m, card)
    save(m, path)


def new_run_id() -> str:
    """UTC time plus 8 random hex digits: sortable, and unique across machines."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def remove_stale(out: Path, log) -> None:
    """A new model replaces the whole run: earlier metrics and baselines must not look current."""
    stale = [out / n for n in STALE if (out / n).exists()]
    for f in stale:
        f.unlink()
    if stale:
        log(f"{out}: removed {', '.join(f.name for f in stale)} of an earlier run")


def fit_base(prep, cfg: dict, time_limit: float | None, log=print) -> None:
    """model.glm_base: fit the coupled GLM on the split first (the same fit as the reference), and
    give prep its log-rate for every bin (continuous history, like zeta), which training adds to the
    network's logits; the exported step graph computes it from its own GLM history state."""
    import numpy as np

    from .glm import fit_glm

    try:
        params = fit_glm(prep.rec, prep.split, cfg["model"]["likelihood"], cfg["baselines"]["glm"], time_limit, log)
    except ConfigError as e:
        raise ConfigError(where(cfg.get("_source", "<config>"), str(e))) from None
    prep.base = params
    prep.base_eta = params.eta(prep.rec.counts).astype(np.float32)
    log(f"glm base: fitted in {params.info['fit_cpu_seconds']:.1f} s CPU (l2 {params.info['l2']}); "
        f"the network learns what it adds to the GLM's log-rate, starting from zero")


def run_references(rec: Recording, split: dict, lag: int, names: list[str], cfg: dict, out: Path,
                   time_limit: float | None = None, log=print, run_id: str = "", progress: bool = True,
                   glm=None) -> dict:
    """Fit each reference on the train block (the neural ones early-stopped on val), write
    OUT/<name>.onnx and score its step graph on the test block: {name: metrics}. Each card
    carries the data fingerprint and run_id, like the model's. glm: the GLM already fitted on
    this split (model.glm_base), written instead of fitted again."""
    from rt_decoder.evaluation import evaluate_decoder

    res = {}
    for name in names:
        t0, c0 = time.perf_counter(), time.process_time()
        path = out / f"{name}.onnx"
        info: dict = {}
        if name == "glm" and glm is not None:
            from .glm import write_glm

            write_glm(glm, rec, split, path, run_id)
            p = glm
            seconds, cpu = p.info.get("fit_seconds", 0.0), p.info.get("fit_cpu_seconds", 0.0)
            info = {k: p.info[k] for k in ("l2", "n_bases", "n_bins", "val_ll_per_bin", "path")}
        elif name == "glm":
            from .glm import train_glm

            try:
                p = train_glm(rec, split, cfg["model"]["likelihood"], path, overrides=cfg["baselines"]["glm"],
                              time_limit=time_limit, run_id=run_id, log=log)
            except ConfigError as e:
                raise ConfigError(where(cfg.get("_source", "<config>"), str(e))) from None
            info = {k: p.info[k] for k in ("l2", "n_bases", "n_bins", "val_ll_per_bin", "path")}
        elif name in ("wiener", "kalman"):
            from rt_decoder.baselines import fit_baselines

            save(fit_baselines(rec, split, lag_bins=lag, names=(name,), run_id=run_id)[name], path)
        else:
            from .reference import train_reference

            try:
                r = train_reference(name, rec, split, lag, path, overrides=cfg["baselines"][name],
                                    seed=cfg["training"]["seed"], time_limit=time_limit, progress=progress,
                                    threads=torch_threads(cfg["training"]["threads"]))
            except ConfigError as e:
                raise ConfigError(where(cfg.get("_source", "<config>"), str(e))) from None
            info = {"epochs": r.epochs, "stopped": r.stopped}
        if not (name == "glm" and glm is not None):
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        ev = evaluate_decoder(path, rec, "test", split_bounds=split, progress=progress)["model"]
        if name not in ("wiener", "kalman"):
            set_card_metrics(path, ev, {"run_id": run_id})
        res[name] = ev | {"lag_bins": lag, "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu, 1)} | info
        score = (f"{ev['bits_per_spike']:.4f} held-out bits/spike" if "bits_per_spike" in ev
                 else f"mean test R2 {sum(ev['r2']) / len(ev['r2']):.4f}")
        log(f"{name}: {score}, fitted in {seconds:.1f} s")
    return res


def reference_names(cfg: dict, baselines: bool | list[str] | None) -> list[str]:
    """The references to fit: a decoder's from baselines.which (or the list given), a generative
    model's the coupled Poisson GLM; a reference of the other kind is one error line."""
    from .config import GENERATIVE_REFERENCES, REFERENCES

    generative = cfg["kind"] == "generative"
    if baselines is None:
        if not cfg["baselines"]["enabled"]:
            return []
        return list(GENERATIVE_REFERENCES) if generative else list(cfg["baselines"]["which"])
    names = list(baselines) if baselines else []
    allowed = GENERATIVE_REFERENCES if generative else REFERENCES
    wrong = [n for n in names if n not in allowed]
    if wrong:
        raise ConfigError(where(cfg.get("_source", "<config>"),
                                f"--baselines {','.join(wrong)}: a {cfg['kind']} model's references are {', '.join(allowed)}"))
    return names


def sample_check(path: Path, rec: Recording, split: dict, log=print, steps: int = 10_000, seed: int = 0) -> dict:
    """Sample `steps` bins from a generative step graph and look for runaway (generation.detect_runaway):
    a model that is good one step ahead can still drive itself into saturation when fed its own
    samples. A runaway is logged as one WARNING line with the step where it starts."""
    from rt_decoder.generation import compare_statistics, generate, runaway_warning
    from rt_decoder.step_model import StepModel

    m = StepModel(path)
    a, b = split["test"]
    x, info = generate(m, steps, seed=seed, progress=True)
    s = compare_statistics(x, rec.counts[a:b], bin_s=rec.bin_s, binarize_real=info["likelihood"] == "bernoulli")
    warn = runaway_warning(s["runaway"])
    if warn:
        log(f"{path.name}: {warn}")
    keys = ("mean_rate_generated", "mean_rate_real", "rate_corr", "mean_active_channels_generated",
            "mean_active_channels_real", "synchrony_tv", "active_fraction_last_tenth_generated")
    return {"steps": steps, "seed": seed, "steps_per_s": round(info["steps_per_s"], 1), "runaway": s["runaway"]} | {
        k: s["summary"][k] for k in keys}


def _reference_job(rec: Recording, split: dict, lag: int, name: str, cfg: dict, out: Path,
                   time_limit: float | None, run_id: str) -> tuple[dict, list[str]]:
    """One reference in a worker process (1 torch thread, no bars): its metrics and log lines.
    Ctrl-C is the parent's to handle: it cancels the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lines: list[str] = []
    cfg = {**cfg, "training": {**cfg["training"], "threads": 1}}
    res = run_references(rec, split, lag, [name], cfg, out, time_limit, lines.append, run_id, progress=False)
    return res[name], lines


class ParallelReferences:
    """The references fitted in `jobs` worker processes while our model trains in this one, so
    `train` with every reference takes about max(ours, the slowest reference) of wall time on
    idle cores instead of their sum. Longest first (gru), results in the order asked."""

    ORDER = ("gru", "tcfnn", "mlp", "wiener", "kalman")

    def __init__(self, rec: Recording, split: dict, lag: int, names: list[str], cfg: dict, out: Path,
                 time_limit: float | None, run_id: str, jobs: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.names = names
        self.t0 = time.perf_counter()
        self.pool = ProcessPoolExecutor(max_workers=min(jobs, len(names)), mp_context=mp.get_context("spawn"))
        first = sorted(names, key=lambda n: self.ORDER.index(n) if n in self.ORDER else len(self.ORDER))
        self.futures = {n: self.pool.submit(_reference_job, rec, split, lag, n, cfg, out, time_limit, run_id)
                        for n in first}

    def results(self, log) -> dict:
        res = {}
        try:
            for n in self.names:
                res[n], lines = self.futures[n].result()
                for line in lines:
                    log(line)
        finally:
            self.cancel()
        return res

    def cancel(self, kill: bool = False) -> None:
        """Stop the pool; kill=True ends references still training (Ctrl-C, an error in ours)."""
        if kill:
            for p in list((self.pool._processes or {}).values()):
                p.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


def kept_note(res) -> str:
    """What the log says when training.keep: last returns other weights than the best-validation ones."""
    return "" if res.kept == "best" else f", last epoch {res.history[-1]['val']:.4f} (its weights are kept: training.keep last)"


def reference_jobs(setting: int, n_refs: int) -> int:
    """baselines.jobs: 0 = auto (one worker per core), 1 = one after another in this process
    (after our model), N = N worker processes. Workers run 1 torch thread each, so unlike
    threads (training.threads) they do not slow down on a busy machine: they take their share."""
    import os

    return min(n_refs, setting if setting > 0 else (os.cpu_count() or 1)) if n_refs else 0


def run_training(cfg: dict, data: str | None, out: str | Path, time_limit: float | None = None,
                 resume: bool = False, baselines: bool | list[str] | None = None, log=print) -> dict:
    """Train, export and evaluate; returns the metrics written to DIR/metrics.json.

    data: one recording, or several (a list): then, or with multisession.enabled, a multi-session
    model is trained (training/multisession.py).
    baselines: None -> the config's (baselines.enabled, baselines.which); False -> none;
    a list of names -> those (gru, tcfnn, mlp, wiener, kalman).
    Every artifact (model.onnx card, reference cards, metrics.json, checkpoint) carries the
    data fingerprint and this run's id. Ctrl-C during training exports the best model so far with
    "partial": true (no references); before the first whole epoch it re-raises KeyboardInterrupt.
    """
    t_start = time.perf_counter()
    src = cfg.get("_source", "<config>")
    path = data or cfg["data"]
    if not path:
        raise ConfigError(where(src, "no data: set 'data' in the config or pass --data FILE"))
    paths = [path] if isinstance(path, (str, Path)) else [str(p) for p in path]
    if len(paths) > 1 or cfg["multisession"]["enabled"]:
        from .multisession import run_multisession

        return run_multisession(cfg, paths, out, time_limit=time_limit, baselines=baselines, resume=resume, log=log)
    path = paths[0]
    names = reference_names(cfg, baselines)       # a wrong name fails now, not after training
    out = check_output_dir(out, "--out folder")
    rec = load_recording(path, cfg["bin_ms"], cfg.get("targets"))
    cfg = resolve_levels(cfg, rec, log)
    prep = prepare(rec, cfg)
    if cfg["kind"] == "generative" and cfg["model"]["glm_base"]:
        fit_base(prep, cfg, time_limit, log)
    run_id = new_run_id()
    if prep.nan_rows:
        log(f"{rec.source}: {prep.nan_rows} behaviour rows contain NaN; they are excluded from the loss and the metrics")
    log(f"{rec.source}: {rec.n_bins} bins x {rec.n_channels} channels at {rec.bin_s * 1000:g} ms; "
        f"canvas {prep.canvas[0]}x{prep.canvas[1]}, decays {prep.decays}, lag_bins {cfg['lag_bins']}, split {prep.split}")
    lag = cfg["baselines"]["lag_bins"]
    lag = cfg["lag_bins"] if lag is None else lag
    parallel = None
    jobs = reference_jobs(cfg["baselines"]["jobs"], len(names))
    if jobs > 1:
        remove_stale(out, log)            # now: the workers write their references while ours trains
        parallel = ParallelReferences(rec, prep.split, lag, names, cfg, out, time_limit, run_id, jobs)
        log(f"references {', '.join(names)}: {jobs} worker processes, beside our model")
        if cfg["training"]["threads"] == 0:       # auto would count the cores idle before the workers start on them
            import os

            cfg = {**cfg, "training": {**cfg["training"], "threads": max(1, (os.cpu_count() or 1) - jobs)}}
    try:
        res = fit(prep, cfg, out / "checkpoint.pt", resume=resume, time_limit=time_limit, log=log, run_id=run_id)
    except BaseException:
        if parallel is not None:
            parallel.cancel(kill=True)
        raise
    partial = res.stopped == "interrupted"
    if partial and parallel is not None:
        parallel.cancel(kill=True)
        remove_stale(out, log)            # references a worker finished belong to no complete run
    log(f"trained {res.epochs} epochs in {res.seconds:.1f} s ({res.cpu_seconds:.1f} s CPU, {res.threads} thread(s), {res.precision}; "
        f"{res.stopped}); best validation loss {res.best_val:.4f}{kept_note(res)}; "
        f"{res.model.net.n_params()} parameters")
    if partial:
        log(f"interrupted: exporting the best model of {res.epochs} epochs, marked partial (Ctrl-C again to abandon)")
    if parallel is None:
        remove_stale(out, log)
    model_path = out / "model.onnx"
    fingerprint = rec.fingerprint()
    extra = {"epochs": res.epochs, "stopped": res.stopped, "best_val_loss": res.best_val, "weights": res.kept,
             "nan_rows": prep.nan_rows,
             "run_id": run_id, "partial": partial}
    export_step_graph(res.model, prep, cfg, model_path, extra=extra)
    model_metrics = evaluate(model_path, rec, prep.split)
    set_card_metrics(model_path, model_metrics)
    metrics: dict = {
        "kind": cfg["kind"],
        "outputs": list(rec.behavior_names) if cfg["kind"] == "decoder" else list(rec.channel_names),
        "bin_s": float(rec.bin_s), "lag_bins": int(cfg["lag_bins"]),
        "split": {k: [int(a), int(b)] for k, (a, b) in prep.split.items()},
        "model": model_metrics, "baselines": {},
        "train_seconds": round(res.seconds, 1), "train_cpu_seconds": round(res.cpu_seconds, 1),
        "threads": res.threads, "precision": res.precision, "data_sha256": fingerprint, "run_id": run_id, "partial": partial,
        "config": cfg["name"], "data": str(path), "epochs": res.epochs, "stopped": res.stopped, "weights": res.kept,
        "nan_rows_excluded": prep.nan_rows,
    }
    if cfg["kind"] == "generative" and not partial:
        metrics["sample"] = sample_check(model_path, rec, prep.split, log)
    if names and not partial:
        t0 = parallel.t0 if parallel is not None else time.perf_counter()
        if parallel is not None:
            metrics["baselines"] = parallel.results(log)
        else:
            metrics["baselines"] = run_references(rec, prep.split, lag, names, cfg, out, time_limit, log, run_id=run_id,
                                                  glm=prep.base)
        metrics["baselines_seconds"] = round(time.perf_counter() - t0, 1)
        metrics["baselines_parallel"] = parallel is not None
        log(f"references {', '.join(names)} fitted and evaluated in {metrics['baselines_seconds']:.1f} s"
            + (" (in worker processes, beside our model)" if parallel is not None else ""))
        if "glm" in metrics["baselines"]:
            metrics["baselines"]["glm"]["sample"] = sample_check(out / "glm.onnx", rec, prep.split, log)
    metrics["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", metrics)
    return metrics
