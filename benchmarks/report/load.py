"""Reading ``brainedge-bench/1`` run files: which to merge, which to skip, and why."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainedge.errors import BrainEdgeError, ConfigError
from brainedge.manifest import load_manifest

SCHEMA = "brainedge-bench/1"

log = logging.getLogger(__name__)


class _BadRun(Exception):
    """Why a file is not a usable run, and what to do; becomes a ConfigError or a warning."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


def load_runs(
    inputs: Sequence[Path | str], skipped: list[str] | None = None
) -> list[dict[str, Any]]:
    """Read every run named by ``inputs`` (files, or folders whose ``*.json`` are globbed).

    A file named explicitly must be a valid run: anything else is a ``ConfigError``, because the
    user asked for it and a silently shorter report would mislead. A file found by globbing a
    folder may be anything (configs, other reports), so it is skipped and the reason appended to
    ``skipped`` (and logged), for the report to show. Each run gets ``_source``, the path it was
    read from, and ``_gates_from_manifests``, how many rows got their gate verdict from an
    artifact's manifest because the sweep predates recording it. The same file or ``run_id``
    given twice is merged once.
    """
    if not inputs:
        raise ConfigError(
            "no benchmark inputs given; pass result JSON files written by benchmarks/sweep.py, "
            "or folders that hold them"
        )
    runs: list[dict[str, Any]] = []
    seen_files: set[Path] = set()
    seen_ids: dict[str, Path] = {}
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            candidates = [(p, True) for p in sorted(path.glob("*.json"))]
        elif path.is_file():
            candidates = [(path, False)]
        else:
            raise ConfigError(
                f"{path} is neither a file nor a folder; pass benchmark JSON files written by "
                "benchmarks/sweep.py, or folders that hold them"
            )
        for file, globbed in candidates:
            resolved = file.resolve()
            if resolved in seen_files:
                continue
            seen_files.add(resolved)
            try:
                run = _read_run(file)
            except _BadRun as exc:
                if not globbed:
                    raise ConfigError(f"{file} {exc.reason}; {exc.fix}") from None
                _note_skip(skipped, f"skipped {file}: it {exc.reason}")
                continue
            run_id = str(run.get("run_id") or file.stem)
            if run_id in seen_ids:
                _note_skip(
                    skipped,
                    f"skipped {file}: run_id {run_id!r} was already merged from {seen_ids[run_id]}",
                )
                continue
            seen_ids[run_id] = file
            run["_source"] = str(file)
            run["_gates_from_manifests"] = _recover_gates(run["results"])
            runs.append(run)
    if not runs:
        shown = ", ".join(str(p) for p in inputs)
        raise ConfigError(
            f"no {SCHEMA} runs found in {shown} ({len(skipped or [])} file(s) skipped); "
            "run benchmarks/sweep.py on each device first"
        )
    return runs


def latest_per_device(docs: list[dict[str, Any]], skipped: list[str]) -> list[dict[str, Any]]:
    """The newest run of each device (by ``created``); the older ones are noted in ``skipped``."""
    newest: dict[str, dict[str, Any]] = {}
    for doc in docs:
        device = str(doc.get("device", {}).get("id"))
        if device not in newest or str(doc.get("created")) > str(newest[device].get("created")):
            newest[device] = doc
    kept = [doc for doc in docs if newest[str(doc.get("device", {}).get("id"))] is doc]
    skipped.extend(f"older run {doc.get('run_id')} of {doc.get('device', {}).get('id')} "
                   f"({doc.get('created')}): superseded by a newer run of the same device"
                   for doc in docs if all(doc is not k for k in kept))
    return kept


def _recover_gates(results: list[Any]) -> int:
    """Give rows from sweeps that predate the ``gate`` field their artifact's gate verdict;
    return how many rows got one.

    Only when the artifact is still where the sweep found it and its manifest lists the very
    model file that was timed (the row's sha256): the verdict belongs to that file, not to the
    folder name. Otherwise the row keeps no verdict and the report shows none. Each recovered
    verdict says ``"from": "manifest"``, so the report can say the sweep did not record it.
    """
    pending = [row for row in results if isinstance(row, dict) and "gate" not in row
               and isinstance(row.get("artifact"), str) and row.get("sha256")]
    if not pending:
        return 0
    from runtime.gate import read_gate  # only for such old rows: the runtime package loads cv2

    manifests: dict[str, Any] = {}  # one read per artifact, not per thread count
    recovered = 0
    for row in pending:
        folder = row["artifact"]
        if folder not in manifests:
            try:
                manifests[folder] = load_manifest(Path(folder), verify=False)
            except (BrainEdgeError, OSError):
                manifests[folder] = None
        manifest = manifests[folder]
        if manifest is not None and row["sha256"] in manifest.files.values():
            gate = read_gate(manifest)
            row["gate"] = {**gate.to_dict(), "from": "manifest"} if gate else None
            recovered += gate is not None  # a Keras run's manifest records no verdict
    return recovered


def _note_skip(skipped: list[str] | None, message: str) -> None:
    log.warning(message)
    if skipped is not None:
        skipped.append(message)


def _read_run(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _BadRun(f"cannot be read ({exc})", "check the path and its permissions") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadRun(
            f"is not valid JSON ({exc.msg} at line {exc.lineno})",
            "it may be half-written: re-run benchmarks/sweep.py on that device",
        ) from None
    if not isinstance(doc, dict) or "schema" not in doc:
        raise _BadRun(
            f'is not a BrainEdge benchmark result (no "schema": "{SCHEMA}")',
            "pass only result files written by benchmarks/sweep.py",
        )
    if doc["schema"] != SCHEMA:
        raise _BadRun(
            f"has schema {doc['schema']!r} but this report reads {SCHEMA!r}",
            "re-run the sweep with this BrainEdge version, or report it with the version that "
            "wrote it",
        )
    problem = _structure_problem(doc)
    if problem:
        raise _BadRun(
            f"does not follow {SCHEMA}: {problem}",
            "re-run benchmarks/sweep.py; result files are not meant to be edited by hand",
        )
    return doc


def _structure_problem(doc: Mapping[str, Any]) -> str | None:
    # Only what the report cannot do without; every other field may be missing or null.
    device = doc.get("device")
    if not isinstance(device, Mapping) or not isinstance(device.get("id"), str):
        return '"device" must be an object with a string "id"'
    results = doc.get("results")
    if not isinstance(results, list):
        return '"results" must be a list'
    for i, row in enumerate(results):
        if not isinstance(row, Mapping):
            return f"results[{i}] is not an object"
    return None
