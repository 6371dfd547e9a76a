"""Duplicate / leakage audit on a tiny synthetic dataset written with OpenCV."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip(
    "imagehash", reason="imagehash is not installed (pip install 'brainedge[train]')"
)

from brainedge.errors import ConfigError
from training.audit import (
    AuditConfig,
    AuditResult,
    audit_dataset,
    hamming_pairs,
    write_audit,
)
from training.data import read_path_list, scan_dataset

# Paths relative to the dataset root of the files the tests reason about.
EXACT_LEAK = "Testing/glioma/leak_exact.png"  # byte copy of Training/glioma/g0.png
NEAR_LEAK = "Testing/meningioma/leak_near.jpg"  # brightened, JPEG re-encoded Training m0
CONFLICT = "Testing/notumor/conflict.png"  # byte copy of Training/pituitary/p0.png
TEST_KEEP = "Testing/pituitary/a_first.png"
TEST_COPY = "Testing/pituitary/b_copy.png"  # byte copy of TEST_KEEP, sorts after it
CORRUPT = "Testing/notumor/corrupt.jpg"
EMPTY = "Testing/notumor/empty.png"
CLEAN = {
    "Testing/glioma/t0.png",
    "Testing/meningioma/t1.png",
    "Testing/notumor/t2.png",
    TEST_KEEP,
}


def _texture(seed: int, size: int = 128) -> np.ndarray:
    # Noise at several scales: a broad spectrum like a real image, so small edits move a few
    # pHash bits while unrelated textures stay ~100 of 256 bits apart.
    rng = np.random.default_rng(seed)
    image = np.full((size, size), 128.0, np.float32)
    for cells, amplitude in ((4, 90), (8, 60), (16, 40), (32, 25)):
        noise = rng.standard_normal((cells, cells)).astype(np.float32)
        image += amplitude * cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write(root: Path, rel: str, image: np.ndarray) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _copy(root: Path, src: str, dst: str) -> None:
    (root / dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / src, root / dst)


def make_dataset(root: Path) -> Path:
    seed = iter(range(100))
    for cls, names in {
        "glioma": ["g0", "g1"],
        "meningioma": ["m0", "m1"],
        "notumor": ["n0", "n1"],
        "pituitary": ["p0", "p1"],
    }.items():
        for name in names:
            _write(root, f"Training/{cls}/{name}.png", _texture(next(seed)))
    for rel in [*sorted(CLEAN)]:
        _write(root, rel, _texture(next(seed)))
    _copy(root, "Training/glioma/g0.png", EXACT_LEAK)
    _copy(root, "Training/pituitary/p0.png", CONFLICT)
    _copy(root, TEST_KEEP, TEST_COPY)
    brighter = cv2.convertScaleAbs(cv2.imread(str(root / "Training/meningioma/m0.png"), 0), beta=10)
    cv2.imwrite(str(root / NEAR_LEAK), brighter, [cv2.IMWRITE_JPEG_QUALITY, 85])
    (root / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (root / EMPTY).write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("mri"))


@pytest.fixture(scope="module")
def result(dataset: Path) -> AuditResult:
    return audit_dataset(scan_dataset(dataset))


def _near_pair(result: AuditResult):
    return next(
        (
            p
            for p in result.near_pairs
            if {p.a.path, p.b.path} == {"Training/meningioma/m0.png", NEAR_LEAK}
        ),
        None,
    )


def test_exact_copy_across_splits_is_a_leak(result: AuditResult) -> None:
    cross = [{m.path for m in g.members} for g in result.exact_groups_in("cross")]
    assert {"Training/glioma/g0.png", EXACT_LEAK} in cross
    leaks = {k.test.path: k for k in result.leaks}
    assert leaks[EXACT_LEAK].kind == "exact"
    assert leaks[EXACT_LEAK].train.path == "Training/glioma/g0.png"
    assert result.leaked_by_class("exact")["glioma"] == 1


def test_near_duplicate_found_within_default_threshold(result: AuditResult) -> None:
    pair = _near_pair(result)
    assert pair is not None, "brightened JPEG copy not found as a near duplicate"
    assert pair.scope == "cross"
    assert 0 < pair.distance <= AuditConfig().near_threshold
    assert {k.test.path: k.kind for k in result.leaks}[NEAR_LEAK] == "near"


def test_near_duplicate_found_at_exactly_its_distance_but_not_at_zero(
    dataset: Path, result: AuditResult
) -> None:
    distance = _near_pair(result).distance
    index = scan_dataset(dataset)
    at = audit_dataset(index, AuditConfig(near_threshold=distance))
    assert _near_pair(at) is not None
    strict = audit_dataset(index, AuditConfig(near_threshold=0))
    assert _near_pair(strict) is None
    assert NEAR_LEAK not in {k.test.path for k in strict.leaks}
    assert NEAR_LEAK in {m.path for m in strict.clean_test}
    # The exact leak does not depend on the pHash threshold.
    assert EXACT_LEAK in {k.test.path for k in strict.leaks}


def test_distinct_images_are_not_near_duplicates(result: AuditResult) -> None:
    assert [(p.a.path, p.b.path) for p in result.near_pairs] == [
        ("Training/meningioma/m0.png", NEAR_LEAK)
    ]


def test_clean_list_excludes_leaks_and_keeps_the_rest(
    dataset: Path, result: AuditResult, tmp_path: Path
) -> None:
    paths = write_audit(result, tmp_path / "audit")
    lines = paths["clean_test"].read_text().splitlines()
    assert lines[0].startswith("#")
    assert f"<= {AuditConfig().near_threshold}" in lines[0]
    assert read_path_list(paths["clean_test"], dataset) == {
        (dataset / rel).resolve() for rel in CLEAN
    }


def test_within_test_copies_are_kept_once_first_by_path(result: AuditResult) -> None:
    assert [m.path for m in result.within_test_dropped] == [TEST_COPY]
    assert TEST_KEEP in {m.path for m in result.clean_test}
    assert [{m.path for m in g.members} for g in result.exact_groups_in("test")] == [
        {TEST_KEEP, TEST_COPY}
    ]


def test_label_conflict_across_splits_is_reported(result: AuditResult) -> None:
    conflicts = [(p.a.path, p.a.label, p.b.path, p.b.label) for p in result.conflicts_in("cross")]
    assert conflicts == [("Training/pituitary/p0.png", "pituitary", CONFLICT, "notumor")]
    assert result.summary()["leaked_with_label_conflict"] == 1


def test_unreadable_files_are_counted_not_fatal(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="training.audit"):
        result = audit_dataset(scan_dataset(dataset))
    assert sorted(m.path for m, _ in result.unreadable) == [CORRUPT, EMPTY]
    assert "0 bytes" in dict((m.path, r) for m, r in result.unreadable)[EMPTY]
    assert "skipped 2 unreadable" in caplog.text
    assert not {CORRUPT, EMPTY} & {m.path for m in result.clean_test}


def test_reports_hold_the_numbers_with_relative_paths(result: AuditResult, tmp_path: Path) -> None:
    paths = write_audit(result, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["summary"]["leaked_test_images"] == 3
    assert data["summary"]["leaked_by_class"] == {
        "glioma": 1,
        "meningioma": 1,
        "notumor": 1,
        "pituitary": 0,
    }
    assert data["summary"]["unreadable"] == 2
    assert data["config"] == {"near_threshold": 12, "hash_size": 16}
    assert data["dataset_root"] == str(result.root)
    assert sorted(data["clean_test"]) == sorted(CLEAN)
    markdown = paths["markdown"].read_text()
    assert "| Exact-duplicate groups | 0 | 1 | 2 |" in markdown
    assert "3 of 10 test images" in markdown
    assert NEAR_LEAK in markdown


def test_hamming_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    words = rng.integers(0, 2**63, size=(23, 2), dtype=np.uint64)
    words[7] = words[3]
    words[7, 1] ^= np.uint64(0b1011)  # 3 bits from row 3, in the second word
    words[20] = words[3]
    i, j, d = hamming_pairs(words, threshold=3, block_rows=4)  # blocks split the pairs

    def bits(a: np.ndarray, b: np.ndarray) -> int:
        return sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b, strict=True))

    expected = {
        (a, b, bits(words[a], words[b]))
        for a in range(23)
        for b in range(a + 1, 23)
        if bits(words[a], words[b]) <= 3
    }
    assert set(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == expected
    assert expected == {(3, 7, 3), (3, 20, 0), (7, 20, 3)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"near_threshold": -1},
        {"near_threshold": 33},
        {"near_threshold": 2.5},
        {"near_threshold": True},
        {"hash_size": 3},
        {"hash_size": 17},
    ],
)
def test_invalid_config_raises_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        AuditConfig(**kwargs)
