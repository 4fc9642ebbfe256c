"""Closed-loop experiments (DESIGN §9): task, simulated participant, calibration, metrics.

numpy, onnxruntime and pylsl only (never torch). Stream names and layouts live in streams.py.
"""
