"""Errors that the command line turns into one clear line and a non-zero exit status."""

from __future__ import annotations


class RtDecoderError(Exception):
    """Base: a user-facing problem (bad file, bad config, missing stream). Never a bug."""

    exit_code = 2


class DataError(RtDecoderError):
    """A recording that cannot be read or is malformed; the message names the file."""


class ConfigError(RtDecoderError):
    """A YAML config that is missing, malformed or has a bad value."""


class ModelError(RtDecoderError):
    """An ONNX model whose file, graph or model card is missing or inconsistent."""


class OutputError(RtDecoderError):
    """An output file or folder that cannot be created or written (bad folder, no permission, disk full)."""


class StreamError(RtDecoderError):
    """An LSL stream that is not found or does not match the model card."""


def where(path: object, problem: str) -> str:
    """Format "<path>: <problem>" so every error line names the file first."""
    return f"{path}: {problem}"
