"""Export: the trained network -> ONNX (torch.onnx.export, opset 17), composed behind the
retention front-end by rt_decoder.step_graph.build_retention_model, with its model card.

Only the network is traced (zeta image -> normalized outputs or per-pixel logits); quantize,
scatter, retention and de-normalization are built once in rt_decoder, so the graph the runtime
runs is the graph evaluation scores.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from rt_decoder.model_card import ModelCard, StateSpec
from rt_decoder.step_graph import OPSET, build_retention_model, save

from .data import Prepared
from .stacked import STACK_STATE
from .train import Model


def network_onnx(model: Model) -> onnx.ModelProto:
    """Trace the network alone: input `zeta_image` [1, S, H, W], one output; a stacked network
    (training/stacked.py) also takes its state `stack_s` [1, N] and returns `stack_s_next`."""
    net = model.net.eval()
    S, (H, W) = net.cfg.in_channels, net.cfg.canvas
    args: tuple = (torch.zeros(1, S, H, W),)
    names, outs = ["zeta_image"], ["logits_or_outputs"]
    if stack_state(model):
        args += (torch.zeros(1, net.state_size),)
        names.append(STACK_STATE)
        outs.append(STACK_STATE + "_next")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation and RNN notices
        torch.onnx.export(net, args, buf, opset_version=OPSET, dynamo=False,
                          input_names=names, output_names=outs, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def stack_state(model: Model) -> list[StateSpec]:
    """The second state a stacked network carries (none for the flat network)."""
    n = getattr(model.net, "state_size", 0)
    return [StateSpec(STACK_STATE, [1, n])] if n else []


def make_card(prep: Prepared, cfg: dict, metrics: dict | None = None, extra: dict | None = None,
              more_states: list[StateSpec] | None = None) -> ModelCard:
    rec = prep.rec
    r = cfg["retention"]
    H, W = prep.canvas
    generative = cfg["kind"] == "generative"
    outputs = list(rec.channel_names) if generative else list(rec.behavior_names)
    units = (["probability" if cfg["model"]["likelihood"] == "bernoulli" else "count/bin"] * len(outputs)
             if generative else list(rec.behavior_units))
    return ModelCard(
        kind=cfg["kind"], model_type="retention_unet", bin_s=float(rec.bin_s),
        channel_names=list(rec.channel_names), outputs=outputs, units=[str(u) for u in units],
        states=[StateSpec("zeta", [1, len(prep.decays), H, W]), *(more_states or [])], lag_bins=int(cfg["lag_bins"]),
        decays=list(prep.decays), levels=int(r["levels"]), quantizer=r["quantizer"], canvas=[H, W],
        layout={"kind": prep.layout, "pixels": [int(p) for p in prep.pixels]},
        likelihood=cfg["model"]["likelihood"], data_sha256=rec.fingerprint(), metrics=metrics or {},
        extra={"config": cfg.get("name", ""), "split": {k: list(v) for k, v in prep.split.items()}, **(extra or {})},
    )


def export_step_graph(model: Model, prep: Prepared, cfg: dict, path: str | Path,
                      metrics: dict | None = None, extra: dict | None = None) -> onnx.ModelProto:
    """Write the full step graph (front-end + network + de-normalization) and return it."""
    if stack_state(model):
        extra = {**(extra or {}), "stack": {"kind": model.net.stack, "size": model.net.state_size}}
    states, base = stack_state(model), None
    if prep.base is not None:            # model.glm_base: the GLM's history beside zeta, its log-rate added
        states.append(prep.base.state_spec())
        base = (*prep.base.eta_nodes(), "glm_eta", [prep.base.state_spec().name])
        extra = {**(extra or {}), "glm_base": {k: prep.base.info.get(k) for k in ("l2", "n_bases", "n_bins")}}
    card = make_card(prep, cfg, metrics, extra, states)
    learned = None
    if model.quant is not None:
        learned = (model.quant.w.detach().numpy().astype(np.float32), model.quant.b.detach().numpy().astype(np.float32))
    graph = build_retention_model(card, network=network_onnx(model), out_mean=prep.out_mean,
                                  out_std=prep.out_std, learned=learned, base=base)  # checked there by onnx.checker
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save(graph, path)
    return graph
