"""rt-decoder: a real-time streaming BCI decoder (retention + UNet + FC, ONNX, LSL).

The online side: numpy, onnxruntime and pylsl only. It never imports torch.
"""

__version__ = "0.1.0"
