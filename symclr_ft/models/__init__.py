"""Models floor: backbones and model files, losses, batch-norm folding for inference, ONNX export.

Imports only the ground floor (config, errors, io); data never flows back up from here.
"""
