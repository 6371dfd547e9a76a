"""Stage 1: train the full-precision VGG16 and DenseNet121 classifiers, audit data, evaluate.

Modules that need TensorFlow (``models``, ``train``, ``evaluate``) import it themselves; the
data, audit, metrics and phantom modules do not.
"""
