"""What an audit finds: duplicate groups and pairs, leaked test images, the clean test list."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.audit.config import AuditConfig

SPLIT_TITLES = {"train": "Training", "test": "Testing"}


@dataclass(frozen=True)
class Member:
    """One image in a finding: its path relative to the dataset root, split and class name."""

    path: str
    split: str
    label: str


@dataclass(frozen=True)
class ExactGroup:
    """Files with identical bytes (two or more), sorted by path."""

    sha256: str
    members: tuple[Member, ...]

    def count(self, split: str) -> int:
        return sum(m.split == split for m in self.members)


@dataclass(frozen=True)
class Pair:
    """Two images found to be duplicates; across splits ``a`` is the Training one."""

    a: Member
    b: Member
    kind: str  # "exact" or "near"
    distance: int  # pHash Hamming distance (0 for exact duplicates)

    @property
    def scope(self) -> str:
        return self.a.split if self.a.split == self.b.split else "cross"


@dataclass(frozen=True)
class Leak:
    """A test image with a duplicate in Training; ``train`` is its closest copy there."""

    test: Member
    train: Member
    kind: str
    distance: int


@dataclass(frozen=True)
class AuditResult:
    root: Path
    class_names: tuple[str, ...]
    config: AuditConfig
    counts: Mapping[str, Mapping[str, int]]  # split -> class -> images listed
    unreadable: tuple[tuple[Member, str], ...]  # (image, reason); skipped from everything below
    exact_groups: tuple[ExactGroup, ...]
    near_pairs: tuple[Pair, ...]  # near but not byte-identical
    label_conflicts: tuple[Pair, ...]  # exact or near duplicates whose labels differ
    leaks: tuple[Leak, ...]
    within_test_dropped: tuple[Member, ...]  # test images left out as copies of a kept one
    clean_test: tuple[Member, ...]
    seconds: float

    def exact_groups_in(self, scope: str) -> list[ExactGroup]:
        """Groups with 2+ copies in ``scope`` ("train"/"test"), or in both splits ("cross")."""
        if scope == "cross":
            return [g for g in self.exact_groups if g.count("train") and g.count("test")]
        return [g for g in self.exact_groups if g.count(scope) >= 2]

    def near_pairs_in(self, scope: str) -> list[Pair]:
        return [p for p in self.near_pairs if p.scope == scope]

    def conflicts_in(self, scope: str) -> list[Pair]:
        return [p for p in self.label_conflicts if p.scope == scope]

    def leaked_by_class(self, kind: str | None = None) -> dict[str, int]:
        tally = Counter(k.test.label for k in self.leaks if kind in (None, k.kind))
        return {name: tally.get(name, 0) for name in self.class_names}

    def summary(self) -> dict[str, Any]:
        n_test = sum(self.counts["test"].values())
        return {
            "images": {s: sum(self.counts[s].values()) for s in SPLIT_TITLES},
            "unreadable": len(self.unreadable),
            "exact_groups": {s: len(self.exact_groups_in(s)) for s in ("train", "test", "cross")},
            "exact_redundant_copies": {
                "train": sum(g.count("train") - 1 for g in self.exact_groups_in("train")),
                "test": sum(g.count("test") - 1 for g in self.exact_groups_in("test")),
            },
            "near_pairs": {s: len(self.near_pairs_in(s)) for s in ("train", "test", "cross")},
            "label_conflicts": {s: len(self.conflicts_in(s)) for s in ("train", "test", "cross")},
            "leaked_test_images": len(self.leaks),
            "leaked_test_fraction": round(len(self.leaks) / n_test, 4) if n_test else 0.0,
            "leaked_by_class": self.leaked_by_class(),
            "leaked_exact_by_class": self.leaked_by_class("exact"),
            "leaked_near_only_by_class": self.leaked_by_class("near"),
            "leaked_with_label_conflict": sum(k.test.label != k.train.label for k in self.leaks),
            "within_test_duplicates_dropped": len(self.within_test_dropped),
            "clean_test_images": len(self.clean_test),
            "seconds": round(self.seconds, 2),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_root": str(self.root),
            "class_names": list(self.class_names),
            "config": asdict(self.config),
            "counts": {s: dict(c) for s, c in self.counts.items()},
            "summary": self.summary(),
            "unreadable": [{**asdict(m), "reason": r} for m, r in self.unreadable],
            "exact_groups": [asdict(g) for g in self.exact_groups],
            "near_pairs": [_pair_dict(p) for p in self.near_pairs],
            "label_conflicts": [_pair_dict(p) for p in self.label_conflicts],
            "leaks": [asdict(k) for k in self.leaks],
            "within_test_dropped": [m.path for m in self.within_test_dropped],
            "clean_test": [m.path for m in self.clean_test],
        }


def _pair_dict(pair: Pair) -> dict[str, Any]:
    return {**asdict(pair), "scope": pair.scope}
