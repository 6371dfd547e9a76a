"""Grad-CAM heat maps of a float32 Keras classifier (server side only, never on the edge).

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last convolutional feature map
by the mean gradient of one class score over the map's positions, sums the channels, keeps the
positive part and resizes it to the input: where evidence *for* that class sits in the image.

BrainEdge's models nest the backbone as one sub-model (``training.models.build_model``), so
its feature maps cannot be taken from the outer model's graph; ``GradCam`` rebuilds the model
as input -> backbone (returning the feature map too) -> the outer model's head. The score is
the class logit, not the softmax probability: a confident model's probability saturates at
1.0 in float32, where its gradient, and with it the map, would vanish.

TensorFlow is imported when a ``GradCam`` is built, not with this module (edge imports stay
TF-free, ``tests/test_edge_imports.py``); ``overlay`` needs only NumPy and OpenCV.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import cv2
import numpy as np

from brainedge.errors import ModelLoadError, ShapeMismatchError

# Layers that only downsample: a map taken after them has fewer positions, no new features.
_POOLING = ("MaxPooling2D", "AveragePooling2D")
# A map whose positive part is this small, relative to the size of the terms it was summed
# from, is rounding noise (float32 gradients), not evidence: it is reported as all zero.
_RELATIVE_ZERO = 1e-6
# The rebuilt model must reproduce the model's own probabilities, or it explains another one.
_CHECK_ATOL = 1e-4


def require_tensorflow() -> Any:
    """The ``tensorflow`` module, or a ``MissingDependencyError`` naming brainedge[train]."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    # Looked up on the module at call time, so a test can make TensorFlow unavailable.
    from brainedge import errors

    return errors.requires("tensorflow", "train")


def _is_4d(layer: Any) -> bool:
    try:
        shape = layer.output_shape
    except (AttributeError, RuntimeError):  # never called, or outputs of different shapes
        return False
    return isinstance(shape, tuple) and len(shape) == 4


def _is_softmax(activation: Any) -> bool:
    return getattr(activation, "__name__", str(activation)) == "softmax"


class GradCam:
    """Grad-CAM of ``model``, a loaded tf_keras classifier (one (H, W, 3) input, one (K,)
    softmax or score output), e.g. ``runtime.keras.KerasPredictor(...).model``.

    ``layer`` names the feature map to explain [default: the last layer with a 4-D output that
    is not a pooling layer, searched inside the nested backbone when there is one: VGG16's
    ``block5_conv3``, DenseNet121's final ``relu``]. ``heatmap`` is serialised by a lock: it is
    called from a web server's threads, and one map at a time is plenty for a page.
    """

    def __init__(self, model: Any, layer: str | None = None) -> None:
        tf = require_tensorflow()
        from brainedge.tf_compat import keras

        self._tf = tf
        self._lock = threading.Lock()
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelLoadError(f"{model.name}: Grad-CAM needs one input and one output, found "
                                 f"{len(model.inputs)} and {len(model.outputs)}")
        shape = tuple(model.inputs[0].shape[1:])
        if len(shape) != 3 or any(d is None for d in shape) or len(model.outputs[0].shape) != 2:
            raise ModelLoadError(f"{model.name}: Grad-CAM needs a fixed (H, W, C) input and a "
                                 f"(K,) output, found {shape} and "
                                 f"{tuple(model.outputs[0].shape[1:])}")
        height, width, channels = (int(d) for d in shape)
        self.input_shape = (height, width, channels)
        backbone = self._backbone(model, keras)
        target = self._target(backbone, layer)
        self.layer_name: str = target.name
        self._strips_softmax = False
        self._grad_model = self._rebuild(model, backbone, target, keras)
        self.num_classes = int(self._grad_model.outputs[1].shape[-1])
        self._check_reproduces(model)

    # --- building -------------------------------------------------------------------------

    @staticmethod
    def _backbone(model: Any, keras: Any) -> Any:
        """The nested sub-model holding the convolutions, or ``model`` itself when it is flat
        (``training.models.build_flat_model``, a SavedModel)."""
        nested = [layer for layer in model.layers
                  if isinstance(layer, keras.Model) and _is_4d(layer)]
        if len(nested) > 1:
            raise ModelLoadError(f"{model.name}: {len(nested)} nested convolutional sub-models "
                                 f"({', '.join(m.name for m in nested)}); Grad-CAM expects one "
                                 "backbone, as brainedge train builds it")
        return nested[0] if nested else model

    @staticmethod
    def _target(backbone: Any, name: str | None) -> Any:
        if name is not None:
            try:
                layer = backbone.get_layer(name)
            except ValueError as exc:
                raise ModelLoadError(f"{backbone.name}: no layer {name!r} to explain") from exc
            if not _is_4d(layer):
                raise ModelLoadError(f"{backbone.name}: layer {name!r} has no 4-D feature map")
            return layer
        for layer in reversed(backbone.layers):
            if _is_4d(layer) and type(layer).__name__ not in _POOLING:
                return layer
        raise ModelLoadError(f"{backbone.name}: no layer with a 4-D feature map; Grad-CAM needs "
                             "a convolutional model")

    def _rebuild(self, model: Any, backbone: Any, target: Any, keras: Any) -> Any:
        """``keras.Model(image, [feature map, class scores])`` sharing ``model``'s weights."""
        last = model.layers[-1]
        if backbone is model:  # flat: the feature map is in the model's own graph
            return keras.Model(model.inputs,
                               [target.output, self._scores(last, last.input, keras)],
                               name=f"{model.name}_gradcam")
        # The nested backbone's inner tensors belong to its own graph, not to the outer
        # model's, so a model of both is "disconnected"; instead the backbone is wrapped to
        # return the feature map too, and the outer model's layers are replayed after it.
        layers = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
        if layers[0] is not backbone:
            raise ModelLoadError(f"{model.name}: the backbone {backbone.name} is not the first "
                                 "layer after the input; Grad-CAM cannot rebuild the model")
        features = keras.Model(backbone.inputs, [target.output, backbone.output],
                               name=f"{backbone.name}_gradcam")
        image = keras.Input(shape=self.input_shape, name="gradcam_image")
        fmap, y = features(image)
        # build_model's head is a chain (pool -> dropout -> dense); replaying the layers in
        # order is right only for a chain, which _check_reproduces verifies numerically.
        try:
            for layer in layers[1:-1]:
                y = layer(y)
            y = self._scores(last, y, keras)
        except (TypeError, ValueError) as exc:  # e.g. a layer that wants several inputs
            raise ModelLoadError(f"{model.name}: Grad-CAM cannot rebuild its head as a chain "
                                 f"of layers ({exc})") from exc
        return keras.Model(image, [fmap, y], name=f"{model.name}_gradcam")

    def _scores(self, last: Any, y: Any, keras: Any) -> Any:
        """Apply the model's last layer to ``y``, stopping before its softmax (module doc)."""
        if isinstance(last, keras.layers.Softmax) or (
                isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)):
            self._strips_softmax = True
            return y  # a separate softmax layer: its input are the logits
        if not _is_softmax(getattr(last, "activation", None)):
            return last(y)  # no softmax: the outputs already are scores
        self._strips_softmax = True
        # A copy without the activation, not the layer itself: switching the shared layer's
        # softmax off would change the predictions of the model being served.
        logits = type(last).from_config({**last.get_config(), "activation": "linear",
                                         "name": f"{last.name}_logits"})
        out = logits(y)
        logits.set_weights(last.get_weights())
        return out

    def _check_reproduces(self, model: Any) -> None:
        # Random pixels at the scales of preprocessed images (torch-style ~1, caffe-style ~50);
        # a fixed seed keeps start-up repeatable.
        noise = np.random.default_rng(0).normal(0.0, 1.0, (2, *self.input_shape))
        x = (noise * np.array([1.0, 50.0])[:, None, None, None]).astype(np.float32)
        expected = model(x, training=False).numpy()
        scores = self._grad_model(x, training=False)[1]
        if self._strips_softmax:
            scores = self._tf.nn.softmax(scores)
        got = scores.numpy()
        if got.shape != expected.shape or not np.allclose(got, expected, atol=_CHECK_ATOL):
            raise ModelLoadError(f"{model.name}: the model rebuilt for Grad-CAM does not "
                                 "reproduce its predictions; its head is not a simple chain")

    # --- explaining -----------------------------------------------------------------------

    def heatmap(self, x: np.ndarray, class_index: int) -> np.ndarray:
        """Preprocessed float32 (H, W, 3) input (``runtime.preprocess.scale``) -> float32 (H, W)
        map in [0, 1] of the evidence for ``class_index``; all zero when there is none."""
        x = np.asarray(x)
        if x.shape != self.input_shape or x.dtype.kind != "f":
            raise ShapeMismatchError(f"Grad-CAM expects a float32 {self.input_shape} input "
                                     f"from runtime.preprocess.scale, received {x.dtype} "
                                     f"{x.shape}")
        if not np.isfinite(x).all():
            raise ShapeMismatchError("Grad-CAM expects finite input values")
        if not 0 <= class_index < self.num_classes:
            raise ValueError(f"class_index must be 0..{self.num_classes - 1}, got {class_index}")
        tf = self._tf
        with self._lock:
            batch = tf.convert_to_tensor(x[None].astype(np.float32))
            with tf.GradientTape() as tape:
                fmap, scores = self._grad_model(batch, training=False)
                score = scores[:, class_index]
            grads = tape.gradient(score, fmap)
        fmap_np = fmap.numpy()[0].astype(np.float64)
        grads_np = (np.zeros_like(fmap_np) if grads is None
                    else grads.numpy()[0].astype(np.float64))
        # Channel weights: the gradient averaged over the map's positions (Grad-CAM eq. 1).
        weights = grads_np.mean(axis=(0, 1))
        terms = fmap_np * weights
        cam = terms.sum(axis=-1)
        scale = float(np.abs(terms).sum(axis=-1).max())
        cam = np.maximum(cam, 0.0)
        peak = float(cam.max())
        height, width = self.input_shape[:2]
        if not np.isfinite(peak) or scale == 0.0 or peak <= _RELATIVE_ZERO * scale:
            return np.zeros((height, width), np.float32)
        cam = cv2.resize(cam / peak, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.clip(cam, 0.0, 1.0).astype(np.float32)


def overlay(image_rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4,
            colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Blend ``heatmap`` (float (H, W) in [0, 1], e.g. ``GradCam.heatmap``) as a colour map
    over ``image_rgb`` (uint8 (H, W, 3), the prepared model input); return uint8 RGB."""
    image = np.asarray(image_rgb)
    heat = np.asarray(heatmap, dtype=np.float32)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay expects a uint8 (H, W, 3) RGB image, got {image.dtype} "
                         f"{image.shape}")
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heat map {heat.shape} does not match the image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    levels = np.round(np.clip(np.nan_to_num(heat), 0.0, 1.0) * 255).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, colormap), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)
