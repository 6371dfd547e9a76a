"""Import TensorFlow and tf_keras (Keras 2) in one place, for every stage that needs them.

It sits in the shared ground, below training/, optimize/ and runtime/keras.py, so the runtime
never reaches up into training/ for it. Importing it imports TensorFlow: only modules that
run Keras import it, never the edge path.

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
