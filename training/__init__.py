"""The offline side (torch): read in this order.

  config.py     YAML configs as validated data (ConfigError naming file and key)
  data.py       recording -> split, layout, quantized counts, zeta (numpy), normalized targets
  retention.py  the differentiable twin of rt_decoder.retention + the learned quantizer (eq. 3.1)
  model.py      UNet over the zeta image; decoder head (FC -> K) and generative head (per-pixel logits)
  train.py      offline / online training loop, early stopping, checkpoints, time limit
  export.py     network -> ONNX, composed with rt_decoder.step_graph's front-end and model card
  pipeline.py   `rt-decoder train` end to end: fit, export, baselines, metrics.json
  bench.py      `rt-decoder bench accuracy|generate`
"""
