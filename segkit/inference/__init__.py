"""Inference: a trained checkpoint rebuilt as a model (:mod:`.trained`), the predictor
(``segkit.Predictor``) with tiling and native-resolution evaluation, and export to ONNX or
TorchScript."""
