"""Find exact and near-duplicate images within and across the splits, and the test images that leak.

The public brain-tumor MRI set merges three older sources and ships some slices several times,
sometimes in both Training and Testing, sometimes under different labels. A test image that also
sits in Training measures memory, not generalisation, so evaluation reads the leakage-free list
written here (``clean_test.txt``, readable with ``training.data.read_path_list``).

- Exact duplicates: equal sha256 of the file bytes.
- Near duplicates: perceptual hashes (``imagehash.phash``, 256 bits by default) of the grayscale
  image decoded by ``runtime.imageio`` like everywhere else, at most ``near_threshold`` bits apart.
  They catch re-encoded, resized, re-windowed and re-brightened copies; they do not catch
  neighbouring slices of one patient's scan (patient-level leakage needs patient IDs).

No TensorFlow here; ``imagehash`` (the ``train`` extra) is imported only when an audit runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from brainedge.errors import ConfigError, ImageDecodeError, requires
from brainedge.manifest import atomic_path, write_json
from runtime.imageio import decode_image
from training.data import DatasetIndex

log = logging.getLogger(__name__)

SPLIT_TITLES = {"train": "Training", "test": "Testing"}
CLEAN_TEST_NAME = "clean_test.txt"
# Rows of the pairwise distance matrix computed at once: 512 x 7000 uint64 XORs are ~29 MB.
_BLOCK_ROWS = 512
_EXAMPLES = 8

Progress = Callable[[int, int], None]


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


# --- hashing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hashed:
    sha256: str | None
    words: np.ndarray | None  # the pHash bits packed into uint64 words
    error: str | None


def _phash_words(gray: np.ndarray, hash_size: int) -> np.ndarray:
    imagehash = requires("imagehash", "train")
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(gray), hash_size=hash_size).hash.ravel()
    packed = np.packbits(bits)
    # Pad to whole 64-bit words so any hash size compares with the same XOR + popcount code.
    padded = np.zeros(-(-packed.size // 8) * 8, dtype=np.uint8)
    padded[: packed.size] = packed
    return padded.view(">u8").astype(np.uint64)


def _hash_file(path: Path, rel: str, hash_size: int) -> _Hashed:
    try:
        # One read serves both hashes; decode_image is what read_image uses.
        data = path.read_bytes()
    except OSError as exc:
        return _Hashed(None, None, f"cannot read ({exc.strerror})")
    sha = hashlib.sha256(data).hexdigest()
    try:
        return _Hashed(sha, _phash_words(decode_image(data, rel), hash_size), None)
    except (ImageDecodeError, cv2.error, ValueError, OSError) as exc:
        return _Hashed(sha, None, str(exc))


def _hash_all(
    paths: list[Path], rels: list[str], hash_size: int, progress: Progress | None
) -> list[_Hashed]:
    requires("imagehash", "train")  # fail once, up front, not once per file
    # Threads, not processes: OpenCV decoding and scipy's DCT release the GIL for most of the work.
    workers = min(8, os.cpu_count() or 1)
    out = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(
            lambda pr: _hash_file(pr[0], pr[1], hash_size), zip(paths, rels, strict=True)
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


# --- the audit -----------------------------------------------------------------------------


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


def _exact_groups(members: list[Member], shas: list[str]) -> list[ExactGroup]:
    by_sha: dict[str, list[Member]] = defaultdict(list)
    for member, sha in zip(members, shas, strict=True):
        by_sha[sha].append(member)
    groups = [
        ExactGroup(sha, tuple(sorted(ms, key=lambda m: m.path)))
        for sha, ms in by_sha.items()
        if len(ms) >= 2
    ]
    return sorted(groups, key=lambda g: g.members[0].path)


def _exact_pairs(groups: Iterable[ExactGroup]) -> list[Pair]:
    return [
        Pair(*_ordered(a, b), "exact", 0)
        for g in groups
        for k, a in enumerate(g.members)
        for b in g.members[k + 1 :]
    ]


def _near_pairs(
    members: list[Member], shas: list[str], words: np.ndarray, threshold: int
) -> list[Pair]:
    ii, jj, dd = hamming_pairs(words, threshold)
    pairs = [
        Pair(*_ordered(members[i], members[j]), "near", int(d))
        for i, j, d in zip(ii.tolist(), jj.tolist(), dd.tolist(), strict=True)
        if shas[i] != shas[j]  # byte-identical pairs are already exact groups
    ]
    return sorted(pairs, key=lambda p: (p.scope, p.a.path, p.b.path))


def _leaks(pairs: Iterable[Pair]) -> list[Leak]:
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


def _dedupe_test(
    candidates: list[Member], pairs: Iterable[Pair]
) -> tuple[list[Member], list[Member]]:
    """Keep each within-test duplicate once: walk by sorted path, drop copies of a kept image."""
    neighbours: dict[str, set[str]] = defaultdict(set)
    for p in pairs:
        if p.scope == "test":
            neighbours[p.a.path].add(p.b.path)
            neighbours[p.b.path].add(p.a.path)
    kept: list[Member] = []
    dropped: list[Member] = []
    kept_paths: set[str] = set()
    for member in sorted(candidates, key=lambda m: m.path):
        if neighbours[member.path] & kept_paths:
            dropped.append(member)
        else:
            kept.append(member)
            kept_paths.add(member.path)
    return kept, dropped


def audit_dataset(
    index: DatasetIndex, config: AuditConfig = AuditConfig(), progress: Progress | None = None
) -> AuditResult:
    """Hash every image of ``index``, find duplicates and leaks; ``progress(done, total)``."""
    started = time.perf_counter()
    samples = [("train", s) for s in index.train] + [("test", s) for s in index.test]
    members = [
        Member(_relative(s.path, index.root), split, index.class_names[s.label])
        for split, s in samples
    ]
    hashed = _hash_all(
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

    groups = _exact_groups(good, shas)
    exact = _exact_pairs(groups)
    near = _near_pairs(good, shas, words, config.near_threshold)
    conflicts = [p for p in exact + near if p.a.label != p.b.label]
    leaks = _leaks(exact + near)

    leaked = {k.test.path for k in leaks}
    candidates = [m for m in good if m.split == "test" and m.path not in leaked]
    clean, dropped = _dedupe_test(candidates, exact + near)
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


# --- writing -------------------------------------------------------------------------------


def clean_test_header(result: AuditResult) -> str:
    c = result.config
    return (
        f"# BrainEdge audit: {len(result.clean_test)} of {sum(result.counts['test'].values())} "
        f"test images of {result.root} with no exact (sha256) or near (pHash Hamming distance "
        f"<= {c.near_threshold}, hash_size {c.hash_size}) duplicate in the training split; "
        "within-test duplicates kept once (first by sorted path); unreadable files left out. "
        "Paths are relative to the dataset root."
    )


def write_audit(result: AuditResult, out_dir: Path) -> dict[str, Path]:
    """Write audit.json, audit.md and clean_test.txt into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    paths = {
        "json": out_dir / "audit.json",
        "markdown": out_dir / "audit.md",
        "clean_test": out_dir / CLEAN_TEST_NAME,
    }
    write_json(paths["json"], result.to_dict())
    _write_text(paths["markdown"], render_markdown(result))
    lines = [clean_test_header(result), *(m.path for m in result.clean_test)]
    _write_text(paths["clean_test"], "\n".join(lines))
    return paths


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text.rstrip("\n") + "\n")


def render_markdown(result: AuditResult) -> str:
    s = result.summary()
    c = result.config
    lines = [
        "# Duplicate and leakage audit",
        "",
        f"Dataset: `{result.root}`  ",
        f"Exact duplicates: equal sha256 of the file bytes. Near duplicates: pHash "
        f"({c.hash_size**2} bits) Hamming distance <= {c.near_threshold}, not byte-identical.  ",
        f"Took {result.seconds:.1f} s.",
        "",
        *_summary_table(result, s),
        "",
        *_leak_section(result, s),
        "",
        *_examples(result),
    ]
    return "\n".join(lines)


def _summary_table(result: AuditResult, s: dict[str, Any]) -> list[str]:
    unread = Counter(m.split for m, _ in result.unreadable)
    groups, redundant = s["exact_groups"], s["exact_redundant_copies"]
    near = s["near_pairs"]
    conflicts = {
        sc: f"{sum(p.kind == 'exact' for p in result.conflicts_in(sc))} / "
        f"{sum(p.kind == 'near' for p in result.conflicts_in(sc))}"
        for sc in ("train", "test", "cross")
    }
    return [
        "## Summary",
        "",
        "| | Training | Testing | Across splits |",
        "|---|---:|---:|---:|",
        f"| Images listed | {s['images']['train']} | {s['images']['test']} | |",
        f"| Unreadable (skipped) | {unread['train']} | {unread['test']} | |",
        f"| Exact-duplicate groups | {groups['train']} | {groups['test']} | {groups['cross']} |",
        f"| Redundant exact copies | {redundant['train']} | {redundant['test']} | |",
        f"| Near-duplicate pairs (not exact) | {near['train']} | {near['test']} "
        f"| {near['cross']} |",
        f"| Label conflicts, pairs (exact / near) | {conflicts['train']} | {conflicts['test']} "
        f"| {conflicts['cross']} |",
        "",
        "An exact group counts under Training or Testing when it has 2+ copies in that split, and "
        "across splits when it has a copy in each, so one group can count twice.",
    ]


def _leak_section(result: AuditResult, s: dict[str, Any]) -> list[str]:
    exact, near = result.leaked_by_class("exact"), result.leaked_by_class("near")
    dropped = Counter(m.label for m in result.within_test_dropped)
    clean = Counter(m.label for m in result.clean_test)
    rows = [
        f"| {name} | {result.counts['test'][name]} | {exact[name]} | {near[name]} "
        f"| {dropped[name]} | {clean[name]} |"
        for name in result.class_names
    ]
    n_test = s["images"]["test"]
    return [
        "## Test images that leak from Training",
        "",
        f"**{s['leaked_test_images']} of {n_test} test images "
        f"({100 * s['leaked_test_fraction']:.1f}%) have an exact or near duplicate in Training**; "
        f"{s['leaked_with_label_conflict']} of them carry a different label there.",
        "",
        "| Class | Test images | Leaked (exact) | Leaked (near only) "
        "| Within-test copies dropped | Clean |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        f"| **Total** | {n_test} | {sum(exact.values())} | {sum(near.values())} "
        f"| {len(result.within_test_dropped)} | {len(result.clean_test)} |",
        "",
        f"`{CLEAN_TEST_NAME}` lists the {len(result.clean_test)} clean test images: leaked ones "
        "removed, each group of within-test duplicates (exact or near) kept once, the first by "
        f"sorted path, and {sum(m.split == 'test' for m, _ in result.unreadable)} unreadable "
        "file(s) left out. Evaluation on it measures generalisation, not memory.",
    ]


def _examples(result: AuditResult) -> list[str]:
    sections = [
        ("Exact duplicates across splits", _cross_pairs(result)),
        ("Near duplicates across splits", result.near_pairs_in("cross")),
        ("Label conflicts", list(result.label_conflicts)),
        ("Near duplicates within Training", result.near_pairs_in("train")),
        ("Near duplicates within Testing", result.near_pairs_in("test")),
    ]
    lines = ["## Examples", ""]
    for title, pairs in sections:
        if not pairs:
            continue
        lines += [
            f"### {title} ({min(len(pairs), _EXAMPLES)} of {len(pairs)} pairs)",
            "",
            "| Image A | Label A | Image B | Label B | Kind | Distance |",
            "|---|---|---|---|---|---:|",
        ]
        lines += [
            f"| `{p.a.path}` | {p.a.label} | `{p.b.path}` | {p.b.label} | {p.kind} | {p.distance} |"
            for p in _spread(pairs, _EXAMPLES)
        ]
        lines.append("")
    if result.unreadable:
        lines += ["### Unreadable files (skipped)", ""]
        lines += [f"- `{m.path}`: {reason}" for m, reason in result.unreadable[: _EXAMPLES * 4]]
        lines.append("")
    lines.append("All groups and pairs are listed in `audit.json`.")
    return lines


def _cross_pairs(result: AuditResult) -> list[Pair]:
    return [p for p in _exact_pairs(result.exact_groups_in("cross")) if p.scope == "cross"]


def _spread(pairs: list[Pair], n: int) -> list[Pair]:
    """``n`` pairs evenly spaced through the sorted list, so examples span classes and folders."""
    if len(pairs) <= n:
        return pairs
    return [pairs[round(k * (len(pairs) - 1) / (n - 1))] for k in range(n)]
