"""The audit written out: ``audit.json`` (everything), ``audit.md`` (summary, leakage table and
examples) and ``clean_test.txt``, the leakage-free test list ``brainedge evaluate`` reads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from brainedge.manifest import atomic_path, write_json
from training.audit.findings import AuditResult, Pair
from training.audit.search import exact_pairs

CLEAN_TEST_NAME = "clean_test.txt"
_EXAMPLES = 8


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
    return [p for p in exact_pairs(result.exact_groups_in("cross")) if p.scope == "cross"]


def _spread(pairs: list[Pair], n: int) -> list[Pair]:
    """``n`` pairs evenly spaced through the sorted list, so examples span classes and folders."""
    if len(pairs) <= n:
        return pairs
    return [pairs[round(k * (len(pairs) - 1) / (n - 1))] for k in range(n)]
