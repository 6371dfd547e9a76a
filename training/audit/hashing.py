"""Content hashes of every image (sha256 of the bytes, pHash of the decoded pixels) and the
search for hashes a few bits apart."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from brainedge.errors import ImageDecodeError, requires
from runtime.imageio import decode_image

# Rows of the pairwise distance matrix computed at once: 512 x 7000 uint64 XORs are ~29 MB.
_BLOCK_ROWS = 512

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Hashed:
    sha256: str | None
    words: np.ndarray | None  # the pHash bits packed into uint64 words
    error: str | None


def phash_words(gray: np.ndarray, hash_size: int) -> np.ndarray:
    imagehash = requires("imagehash", "train")
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(gray), hash_size=hash_size).hash.ravel()
    packed = np.packbits(bits)
    # Pad to whole 64-bit words so any hash size compares with the same XOR + popcount code.
    padded = np.zeros(-(-packed.size // 8) * 8, dtype=np.uint8)
    padded[: packed.size] = packed
    return padded.view(">u8").astype(np.uint64)


def hash_file(path: Path, rel: str, hash_size: int) -> Hashed:
    try:
        # One read serves both hashes; decode_image is what read_image uses.
        data = path.read_bytes()
    except OSError as exc:
        return Hashed(None, None, f"cannot read ({exc.strerror})")
    sha = hashlib.sha256(data).hexdigest()
    try:
        return Hashed(sha, phash_words(decode_image(data, rel), hash_size), None)
    except (ImageDecodeError, cv2.error, ValueError, OSError) as exc:
        return Hashed(sha, None, str(exc))


def hash_all(
    paths: list[Path], rels: list[str], hash_size: int, progress: Progress | None
) -> list[Hashed]:
    """``hash_file`` of every path, in order; ``progress(done, total)`` after each."""
    requires("imagehash", "train")  # fail once, up front, not once per file
    # Threads, not processes: OpenCV decoding and scipy's DCT release the GIL for most of the work.
    workers = min(8, os.cpu_count() or 1)
    out = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(
            lambda pr: hash_file(pr[0], pr[1], hash_size), zip(paths, rels, strict=True)
        )
        for done, hashed in enumerate(jobs, start=1):
            out.append(hashed)
            if progress is not None:
                progress(done, len(paths))
    return out


def hamming_pairs(
    words: np.ndarray, threshold: int, block_rows: int = _BLOCK_ROWS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of rows of ``words`` (N x W uint64) at most ``threshold`` bits apart.

    Returns index arrays ``i``, ``j`` and the distances. Rows are compared a block at a time
    against the rows after the block's start, so memory stays at ``block_rows x N`` words.
    """
    n, n_words = words.shape
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, n, block_rows):
        rows, cols = words[start : start + block_rows], words[start:]
        dist = np.zeros((len(rows), len(cols)), dtype=np.uint16)
        for w in range(n_words):
            dist += np.bitwise_count(rows[:, None, w] ^ cols[None, :, w])
        ii, jj = np.nonzero(dist <= threshold)
        upper = jj > ii  # the block's left square holds each pair twice and the diagonal
        ii, jj = ii[upper], jj[upper]
        found.append((ii + start, jj + start, dist[ii, jj].astype(np.int64)))
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    i, j, d = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return i, j, d
