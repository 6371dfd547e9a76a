"""The audit's settings: how close two perceptual hashes must be to call images near duplicates."""

from __future__ import annotations

from dataclasses import dataclass

from brainedge.errors import ConfigError


@dataclass(frozen=True)
class AuditConfig:
    # Max Hamming distance between two pHashes to call the images near duplicates.
    near_threshold: int = 12
    # pHash side: hash_size**2 bits. Why 16 (256 bits) and 12, not 8 (64 bits): brain slices all
    # share a dark background and an oval head, so 64-bit hashes of *neighbouring slices of one
    # scan*, even of different patients, are often 0-2 bits apart, as close as a re-encoded copy;
    # no 64-bit threshold is free of false positives (checked by eye on the Kaggle set). At 256
    # bits, pairs up to 12 apart were the same slice re-encoded, re-windowed or sharpened; from
    # about 14, neighbouring slices appear. pHash distances are always even (half the bits set).
    hash_size: int = 16

    def __post_init__(self) -> None:
        if not _is_int(self.near_threshold) or not 0 <= self.near_threshold <= 32:
            raise ConfigError(
                f"near_threshold must be an integer Hamming distance from 0 to 32 bits, got "
                f"{self.near_threshold!r}; 0 matches only images with identical pHashes"
            )
        if not _is_int(self.hash_size) or not 4 <= self.hash_size <= 16:
            raise ConfigError(f"hash_size must be an integer from 4 to 16, got {self.hash_size!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
