"""BrainEdge: brain-tumor MRI classification from training to the edge.

The pipeline lives in one top-level package per stage: ``training``, ``optimize``, ``runtime``,
``benchmarks`` and ``webapp``. This package is the ground they all stand on, and must stay free
of TensorFlow and of the stages themselves: errors, artifact manifests, Markdown tables, the
medical notice. The command line that drives every stage is the ``cli`` package.
"""

import os

__version__ = "0.1.0"

# ONNX Runtime (1.31) otherwise sends telemetry to Microsoft from any process that imports it and
# lives a few seconds: a clinic server must not call out. Set before anything imports it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

MEDICAL_NOTICE = (
    "BrainEdge output is decision support for qualified clinicians, not a diagnosis. "
    "It is not a medical device and its labels were not reviewed by a radiologist."
)
