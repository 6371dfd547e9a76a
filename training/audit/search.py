"""The audit itself: hash every image of a dataset, group exact copies, pair near ones, and
derive the leaks and the clean test list."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from training.audit.config import AuditConfig
from training.audit.findings import AuditResult, ExactGroup, Member, Pair
from training.audit.hashing import Progress, hamming_pairs, hash_all
from training.audit.leakage import clean_test_split, find_leaks
from training.data import DatasetIndex

log = logging.getLogger(__name__)
# Frozen, so one shared default is safe.
DEFAULT_CONFIG = AuditConfig()


def audit_dataset(
    index: DatasetIndex, config: AuditConfig = DEFAULT_CONFIG, progress: Progress | None = None
) -> AuditResult:
    """Hash every image of ``index``, find duplicates and leaks; ``progress(done, total)``."""
    started = time.perf_counter()
    samples = [("train", s) for s in index.train] + [("test", s) for s in index.test]
    members = [
        Member(_relative(s.path, index.root), split, index.class_names[s.label])
        for split, s in samples
    ]
    hashed = hash_all(
        [s.path for _, s in samples], [m.path for m in members], config.hash_size, progress
    )

    unreadable = tuple(
        sorted(
            ((m, h.error) for m, h in zip(members, hashed, strict=True) if h.error),
            key=lambda u: u[0].path,
        )
    )
    if unreadable:
        log.warning(
            "skipped %d unreadable image file(s) under %s (corrupt, empty or not an image); "
            "they are listed in the audit report",
            len(unreadable),
            index.root,
        )
    ok = [k for k, h in enumerate(hashed) if h.error is None]
    good = [members[k] for k in ok]
    shas = [hashed[k].sha256 or "" for k in ok]
    n_words = -(-(config.hash_size**2) // 64)
    words = (
        np.stack([hashed[k].words for k in ok]) if ok else np.zeros((0, n_words), dtype=np.uint64)
    )

    groups = exact_groups(good, shas)
    exact = exact_pairs(groups)
    near = near_pairs(good, shas, words, config.near_threshold)
    conflicts = [p for p in exact + near if p.a.label != p.b.label]
    leaks = find_leaks(exact + near)
    clean, dropped = clean_test_split([m for m in good if m.split == "test"], leaks, exact + near)
    return AuditResult(
        root=Path(index.root),
        class_names=tuple(index.class_names),
        config=config,
        counts=index.counts(),
        unreadable=unreadable,
        exact_groups=tuple(groups),
        near_pairs=tuple(near),
        label_conflicts=tuple(sorted(conflicts, key=lambda p: (p.scope, p.a.path, p.b.path))),
        leaks=tuple(leaks),
        within_test_dropped=tuple(dropped),
        clean_test=tuple(clean),
        seconds=time.perf_counter() - started,
    )


def exact_groups(members: list[Member], shas: list[str]) -> list[ExactGroup]:
    """Members sharing a sha256, two or more per group, groups sorted by their first path."""
    by_sha: dict[str, list[Member]] = defaultdict(list)
    for member, sha in zip(members, shas, strict=True):
        by_sha[sha].append(member)
    groups = [
        ExactGroup(sha, tuple(sorted(ms, key=lambda m: m.path)))
        for sha, ms in by_sha.items()
        if len(ms) >= 2
    ]
    return sorted(groups, key=lambda g: g.members[0].path)


def exact_pairs(groups: Iterable[ExactGroup]) -> list[Pair]:
    return [
        Pair(*_ordered(a, b), "exact", 0)
        for g in groups
        for k, a in enumerate(g.members)
        for b in g.members[k + 1 :]
    ]


def near_pairs(
    members: list[Member], shas: list[str], words: np.ndarray, threshold: int
) -> list[Pair]:
    ii, jj, dd = hamming_pairs(words, threshold)
    pairs = [
        Pair(*_ordered(members[i], members[j]), "near", int(d))
        for i, j, d in zip(ii.tolist(), jj.tolist(), dd.tolist(), strict=True)
        if shas[i] != shas[j]  # byte-identical pairs are already exact groups
    ]
    return sorted(pairs, key=lambda p: (p.scope, p.a.path, p.b.path))


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        try:
            return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            return Path(path).as_posix()  # outside the root: keep it usable as given


def _ordered(a: Member, b: Member) -> tuple[Member, Member]:
    """Training member first across splits, else sorted by path, so reports read the same way."""
    if a.split != b.split:
        return (a, b) if a.split == "train" else (b, a)
    return (a, b) if a.path <= b.path else (b, a)
