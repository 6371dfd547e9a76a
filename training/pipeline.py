"""Decoded, prepared images in memory, and the batches that feed ``model.fit``.

Images go through ``runtime.preprocess.prepare`` once (decode, brain crop, bilateral filter,
gray to RGB, resize) and stay in memory as uint8; every epoch then augments them in NumPy and
applies ``runtime.preprocess.scale``, the same function the runtimes call, so training and
serving cannot drift apart.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from brainedge.errors import DatasetError, ImageDecodeError, ShapeMismatchError
from runtime.imageio import read_image
from runtime.preprocess import PreprocessSpec, prepare, scale
from training.config import AugmentConfig
from training.data import Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSet:
    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64
    paths: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (path, reason) of unreadable files

    def __len__(self) -> int:
        return len(self.labels)


def load_prepared(
    samples: Sequence[Sample],
    spec: PreprocessSpec,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PreparedSet:
    """Decode and prepare every sample; unreadable files are skipped and counted, not fatal."""

    def one(sample: Sample) -> np.ndarray | str:
        try:
            return prepare(read_image(sample.path), spec)
        except ImageDecodeError as exc:
            return str(exc)

    results: list[np.ndarray | str] = []
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for i, result in enumerate(pool.map(one, samples), 1):
            results.append(result)
            if progress and (i % 500 == 0 or i == len(samples)):
                progress(i, len(samples))
    keep = [i for i, r in enumerate(results) if not isinstance(r, str)]
    skipped = tuple((str(samples[i].path), str(r)) for i, r in enumerate(results)
                    if isinstance(r, str))
    if skipped:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(skipped), skipped[0][1])
    if not keep:
        raise DatasetError(f"none of the {len(samples)} images could be read")
    images = np.stack([results[i] for i in keep])
    labels = np.array([samples[i].label for i in keep], dtype=np.int64)
    return PreparedSet(images, labels, tuple(str(samples[i].path) for i in keep), skipped)


def augment(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random rotation, shift, flips and brightness on one (S, S, 3) image; float32 0..255."""
    size = image.shape[0]
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    dx, dy = rng.uniform(-cfg.shift, cfg.shift, size=2) * size
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    matrix[:, 2] += (dx, dy)
    # Black borders: outside the head an MRI slice is background.
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)
    if cfg.hflip and rng.random() < 0.5:
        out = out[:, ::-1]
    if cfg.vflip and rng.random() < 0.5:
        out = out[::-1]
    out += rng.uniform(-cfg.brightness, cfg.brightness) * 255.0
    return np.clip(out, 0.0, 255.0)


def iterate_batches(
    data: PreparedSet,
    spec: PreprocessSpec,
    num_classes: int,
    batch_size: int,
    augment_cfg: AugmentConfig | None,
    seed: int,
    epoch: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (scaled float32 images, one-hot labels); shuffled and augmented if training."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(data)) if augment_cfg else np.arange(len(data))
    eye = np.eye(num_classes, dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = data.images[idx]
        if augment_cfg:
            batch = np.stack([augment(img, rng, augment_cfg) for img in batch])
        yield scale(batch, spec), eye[data.labels[idx]]


def predict_prepared(
    predict: Callable[[np.ndarray], np.ndarray],
    data: PreparedSet,
    spec: PreprocessSpec,
    num_classes: int,
    batch_size: int = 32,
) -> np.ndarray:
    """Probabilities for every image of ``data`` through the shared scaling, in order.

    ``predict`` is a Keras ``predict_on_batch`` or a runtime predictor's ``predict``; an output
    of the wrong shape is a ``ShapeMismatchError``, never silently reshaped.
    """
    outputs = []
    for x, _ in iterate_batches(data, spec, num_classes, batch_size, None, 0):
        probs = np.asarray(predict(x))
        if probs.shape != (len(x), num_classes):
            raise ShapeMismatchError(f"model returned shape {probs.shape} for a batch of "
                                     f"{len(x)}; expected ({len(x)}, {num_classes})")
        outputs.append(probs.astype(np.float64))
    return np.concatenate(outputs)


def to_tf_dataset(
    data: PreparedSet,
    spec: PreprocessSpec,
    num_classes: int,
    batch_size: int,
    augment_cfg: AugmentConfig | None,
    seed: int,
):
    """Wrap ``iterate_batches`` as a repeatable tf.data pipeline (a new shuffle each epoch)."""
    from brainedge.tf_compat import tf

    epochs = iter(range(1 << 30))

    def generator() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield from iterate_batches(data, spec, num_classes, batch_size, augment_cfg, seed,
                                   next(epochs))

    size = spec.image_size
    dataset = tf.data.Dataset.from_generator(
        generator,
        output_signature=(
            tf.TensorSpec((None, size, size, 3), tf.float32),
            tf.TensorSpec((None, num_classes), tf.float32),
        ),
    )
    # A known length: Keras shows "152/152" from the first epoch, and after a resume too (an
    # unknown one made it count every batch since the process started: 912/912 at epoch 7).
    dataset = dataset.apply(
        tf.data.experimental.assert_cardinality(math.ceil(len(data) / batch_size)))
    options = tf.data.Options()
    # A generator cannot be sharded by file; multi-worker training shards its batches instead.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(2)


def keras_verbosity() -> int:
    """A progress bar on a terminal, one line per epoch in logs: long fits stay visible."""
    return 1 if sys.stdout.isatty() else 2


def log_progress(what: str) -> Callable[[int, int], None]:
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        log.info("%s: %d/%d images (%.0f s)", what, done, total, time.monotonic() - start)

    return report
