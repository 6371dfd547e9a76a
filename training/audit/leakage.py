"""From duplicate pairs to the leakage list: which test images have a copy in Training, and the
test images that remain once leaks and within-test copies are taken out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from training.audit.findings import Leak, Member, Pair


def find_leaks(pairs: Iterable[Pair]) -> list[Leak]:
    """Each test image with a Training copy, matched to its closest one (exact before near)."""
    best: dict[str, Pair] = {}
    for p in pairs:
        if p.scope != "cross":
            continue
        rank = (p.kind != "exact", p.distance, p.a.path)
        held = best.get(p.b.path)
        if held is None or rank < (held.kind != "exact", held.distance, held.a.path):
            best[p.b.path] = p
    return [Leak(p.b, p.a, p.kind, p.distance) for _, p in sorted(best.items())]


def clean_test_split(
    test: Iterable[Member], leaks: Iterable[Leak], pairs: Iterable[Pair]
) -> tuple[list[Member], list[Member]]:
    """(clean, dropped): the test images without a leak, each within-test duplicate kept once.

    Walks by sorted path and drops an image when a copy of it was already kept, so the first
    of each group by path stays: the same list on every run.
    """
    leaked = {k.test.path for k in leaks}
    neighbours: dict[str, set[str]] = defaultdict(set)
    for p in pairs:
        if p.scope == "test":
            neighbours[p.a.path].add(p.b.path)
            neighbours[p.b.path].add(p.a.path)
    kept: list[Member] = []
    dropped: list[Member] = []
    kept_paths: set[str] = set()
    for member in sorted((m for m in test if m.path not in leaked), key=lambda m: m.path):
        if neighbours[member.path] & kept_paths:
            dropped.append(member)
        else:
            kept.append(member)
            kept_paths.add(member.path)
    return kept, dropped
