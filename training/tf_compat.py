"""Import TensorFlow and tf_keras (Keras 2) in one place.

TFMOT's pruning and quantization-aware training work only with tf_keras, so every module that
needs Keras imports it from here, and ``TF_USE_LEGACY_KERAS`` is set before TensorFlow loads.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from brainedge.errors import requires

tf = requires("tensorflow", "train")
keras = requires("tf_keras", "train")

__all__ = ["keras", "tf"]
