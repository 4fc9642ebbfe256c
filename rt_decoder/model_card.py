"""The model card (DESIGN §4): JSON in the ONNX file's metadata_props under key `rt_decoder_card`.

It tells the runtime everything it must check before the first bin: bin width, channels,
outputs and units, the retention front-end (decays, levels, canvas, layout), lag, the state
tensors to carry, and where the model came from. A model without a consistent card is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ModelError, where

CARD_KEY = "rt_decoder_card"
FORMAT_VERSION = 1
KINDS = ("decoder", "generative")
MODEL_TYPES = ("retention_unet", "retention_linear", "wiener", "kalman", "gru", "tcfnn", "mlp", "glm")


@dataclass
class StateSpec:
    """A recurrent state tensor: graph input `name`, graph output `name + '_next'`, zeros at reset."""

    name: str
    shape: list[int]


@dataclass
class ModelCard:
    kind: str
    model_type: str
    bin_s: float
    channel_names: list[str]
    outputs: list[str]
    units: list[str]
    states: list[StateSpec]
    lag_bins: int = 0
    decays: list[float] = field(default_factory=list)
    levels: int = 2
    quantizer: str = "binary"
    canvas: list[int] = field(default_factory=list)
    layout: dict[str, Any] = field(default_factory=dict)
    likelihood: str | None = None
    count_max: float | None = None
    data_sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    created_by: str = f"rt-decoder {__version__}"
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def n_outputs(self) -> int:
        return len(self.outputs)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<card>") -> ModelCard:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelError(where(source, f"model card is not valid JSON ({e})")) from None
        if not isinstance(d, dict):
            raise ModelError(where(source, "model card is not a JSON object"))
        if d.get("format_version") != FORMAT_VERSION:
            raise ModelError(where(source, f"model card format_version {d.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"))
        required = ("kind", "model_type", "bin_s", "channel_names", "outputs", "units", "states")
        missing = [k for k in required if k not in d]
        if missing:
            raise ModelError(where(source, f"model card is missing {', '.join(missing)}"))
        known = set(cls.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in known}
        try:
            d["states"] = [StateSpec(name=str(s["name"]), shape=[int(x) for x in s["shape"]]) for s in d["states"]]
            card = cls(**d)
        except (TypeError, KeyError, ValueError) as e:
            raise ModelError(where(source, f"model card is malformed ({e})")) from None
        card.check(source)
        return card

    def check(self, source: str = "<card>") -> None:
        """Internal consistency; raises ModelError saying what is wrong."""
        def bad(msg: str) -> None:
            raise ModelError(where(source, f"inconsistent model card: {msg}"))

        if self.kind not in KINDS:
            bad(f"kind {self.kind!r} not in {KINDS}")
        if not (isinstance(self.bin_s, (int, float)) and self.bin_s > 0):
            bad(f"bin_s must be positive, got {self.bin_s!r}")
        if not self.channel_names:
            bad("no channel_names")
        if not self.outputs:
            bad("no outputs")
        if len(self.units) != len(self.outputs):
            bad(f"{len(self.units)} units for {len(self.outputs)} outputs")
        if self.kind == "generative" and len(self.outputs) != len(self.channel_names):
            bad("a generative model outputs one rate per channel")
        if self.lag_bins < 0:
            bad(f"lag_bins must be >= 0, got {self.lag_bins}")
        if self.model_type.startswith("retention"):
            if not self.decays or any(not (0 <= g < 1) for g in self.decays):
                bad(f"decays must be in [0, 1), got {self.decays}")
            if len(self.canvas) != 2:
                bad(f"canvas must be [H, W], got {self.canvas}")
            pix = self.layout.get("pixels", [])
            readin = self.layout.get("readin")
            if readin is not None:
                # a multi-session model: the D recorded channels pass a read-in to P virtual channels
                names = readin.get("names", []) if isinstance(readin, dict) else []
                if len(pix) != len(names):
                    bad(f"layout places {len(pix)} virtual channels, the read-in names {len(names)}")
            elif len(pix) != len(self.channel_names):
                bad(f"layout places {len(pix)} channels, the card names {len(self.channel_names)}")


def attach(model: Any, card: ModelCard) -> Any:
    """Store the card in an onnx.ModelProto's metadata_props (replacing any earlier card)."""
    card.check()
    keep = [p for p in model.metadata_props if p.key != CARD_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key = CARD_KEY
    entry.value = card.to_json()
    return model


def read_card(path: str | Path) -> ModelCard:
    """Read the card from an .onnx file's metadata_props (before any session is built, so a file
    without a card is refused with a clear message rather than an onnxruntime error)."""
    import onnx

    from .filekind import describe_file

    expected = "not a readable ONNX model (expected a protobuf ModelProto with a graph)"

    path = Path(path)
    if not path.exists():
        raise ModelError(where(path, "no such model file"))
    if path.is_dir():
        raise ModelError(where(path, "is a folder; expected an ONNX model file"))
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises protobuf DecodeError and others
        raise ModelError(where(path, f"{expected}: it is {describe_file(path)} ({type(e).__name__})")) from None
    if not m.graph.node and not m.opset_import:   # empty or foreign bytes can parse as an empty message
        raise ModelError(where(path, f"{expected}: it is {describe_file(path)}"))
    props = {p.key: p.value for p in m.metadata_props}
    if CARD_KEY not in props:
        raise ModelError(where(path, f"ONNX model has no model card (metadata_props[{CARD_KEY!r}]); was it exported by rt-decoder?"))
    return ModelCard.from_json(props[CARD_KEY], str(path))
