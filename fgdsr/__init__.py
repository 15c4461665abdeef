"""fgdsr: super-resolution with the Fine-Grained Dynamic (FGD) loss.

The science package: data and the evaluation protocol, models, losses, training, checkpoints.
It never imports Ray, MLflow, ONNX or TensorRT (those live in `trt` and `orchestrator`).
"""

__version__ = "0.1.0"
