"""``make arm64-check``: BrainEdge on a Raspberry Pi's CPU, emulated, against x86_64.

For each QEMU CPU model (cortex-a72 = Pi 4, cortex-a76 = Pi 5), with TensorFlow absent:

1. import ``runtime``, ``webapp`` and the CLI;
2. run the tests marked ``arm64``;
3. start ``brainedge serve --dev``, ask /readyz and POST /api/v1/predict;
4. trace decoding and preprocessing of the fixed inputs, step by step (arm64_trace.py);
5. ``brainedge predict --format json`` with each model artifact on the fixed inputs;

then compare 4 and 5 with the same commands run natively, print the table and write it to
REPORTS/comparison.{md,json}. Exit 1 if anything failed, 2 if the check could not run.
Emulation is hundreds to thousands of times slower than the host (float convolutions
worst): this proves equivalence, never latency.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import arm64_compare as cmp
import arm64_steps as steps
import arm64_trace
from arm64_apt import MirrorError
from arm64_emulator import CPU_MODELS, NATIVE, emulated, native
from arm64_env import BuildError, build
from arm64_steps import REPO, Checks, Side, say

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "brain-tumor-mri"
IMAGE_LIST = HERE / "test_images.txt"
DICOM_SAMPLES = ("MR_small.dcm", "MR_small_jp2klossless.dcm")  # shipped inside pydicom


class CheckError(Exception):
    """The check cannot run as asked (bad arguments, missing inputs): a message, no trace."""


# --- inputs -------------------------------------------------------------------------------------

def find_models(paths: list[str]) -> list[Path]:
    """The artifact folders to check: those given, or every models/*/ with a manifest.json."""
    if paths:
        folders = [Path(p) for p in paths]
        missing = [str(f) for f in folders if not (f / "manifest.json").is_file()]
        if missing:
            raise CheckError(f"not an artifact folder (no manifest.json): {', '.join(missing)}")
        return [f.resolve() for f in folders]
    folders = sorted(p.parent for p in (REPO / "models").glob("*/manifest.json"))
    if not folders:
        raise CheckError("no model to check: models/ has no folder with a manifest.json. Ship "
                         "the models first, or name artifact folders with "
                         "ARM64_MODELS='runs/x/optimized/tflite-int8 ...' (make) or --models")
    return folders


def model_info(folder: Path, taken: set[str]) -> tuple[cmp.ModelInfo, dict[str, Any]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    name = folder.name if folder.name not in taken else f"{folder.parent.name}/{folder.name}"
    spec = manifest["preprocessing"]
    return cmp.ModelInfo(name, str(manifest.get("precision", "?")),
                         arm64_trace.spec_key(spec)), spec


def read_image_list(path: Path, data: Path) -> list[Path]:
    if not (data / "Testing").is_dir():
        raise CheckError(f"the dataset is not at {data}; set ARM64_DATA (make) or --data to the "
                         "Brain Tumor MRI dataset root (the folder holding Testing/)")
    lines = [line.strip() for line in path.read_text().splitlines()]
    files = [data / line for line in lines if line and not line.startswith("#")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CheckError(f"{len(missing)} listed image(s) missing under {data}, e.g. "
                         f"{missing[0]}; is it the Brain Tumor MRI dataset?")
    return files


def stage_inputs(images: list[Path], folder: Path) -> list[Path]:
    """Copy the images and pydicom's DICOM samples into one folder, with unique names."""
    from pydicom.data import get_testdata_file

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    staged = [Path(shutil.copy2(image, folder / f"{image.parent.name}-{image.name}"))
              for image in images]
    for name in DICOM_SAMPLES:
        sample = get_testdata_file(name, download=False)
        if sample is None:
            raise CheckError(f"pydicom's bundled test file {name} is missing")
        staged.append(Path(shutil.copy2(sample, folder / f"dicom-{name}")))
    return staged


# --- comparison ---------------------------------------------------------------------------------

def compare(sides: dict[str, Side], models: dict[str, cmp.ModelInfo], min_images: int,
            checks: Checks) -> tuple[list[cmp.Row], dict[str, cmp.TraceDiff]]:
    """One row per model x emulated CPU that both sides traced and predicted (a step that
    failed is already a failed check), and per CPU the preprocessing steps that differ."""
    rows: list[cmp.Row] = []
    per_cpu: dict[str, cmp.TraceDiff] = {}
    done = {(c["cpu"], c["check"]) for c in checks if c["passed"]}
    ref = sides[NATIVE]
    if (NATIVE, "trace") not in done:
        return rows, per_cpu
    ref_trace = arm64_trace.load(ref.out / "trace.npz")
    for cpu, side in sides.items():
        if cpu == NATIVE or (cpu, "trace") not in done:
            continue
        cand_trace = arm64_trace.load(side.out / "trace.npz")
        merged = cmp.TraceDiff()
        for name, info in models.items():
            trace = cmp.compare_traces(*ref_trace, *cand_trace, info.spec_key)
            cmp.merge_steps(merged, trace)
            if {(NATIVE, f"predict {name}"), (cpu, f"predict {name}")} - done:
                continue
            reports = [json.loads(steps.report_file(s, name).read_text()) for s in (ref, side)]
            predictions = cmp.compare_predictions(*reports)
            rows.append(cmp.evaluate(info, cpu, predictions, trace, min_images=min_images))
        per_cpu[cpu] = merged
        answer = side.out / "serve-answer.json"
        default = next(iter(models))  # the server answers with the first model
        if answer.is_file() and (NATIVE, f"predict {default}") in done:
            reference = json.loads(steps.report_file(ref, default).read_text())
            passed, detail = cmp.compare_served(json.loads(answer.read_text()), reference)
            checks.add(cpu, "served class = x86_64 predict", passed, detail)
    return rows, per_cpu


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=[],
                        help="artifact folders [default: every models/*/ with a manifest.json]")
    parser.add_argument("--cpus", default=",".join(CPU_MODELS),
                        help="QEMU CPU models, comma-separated [default: %(default)s]")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="Brain Tumor MRI dataset root [default: %(default)s]")
    parser.add_argument("--limit", type=int, default=None,
                        help="development only: N of the listed images (spread over the "
                             "classes); the gate then asks for N images instead of 50")
    parser.add_argument("--threads", type=int, default=2, help="inference threads, both sides")
    parser.add_argument("--allow-failed-gate", action="store_true",
                        help="also run artifacts that failed their parity gate (development "
                             "artifacts; shipped models have passed theirs)")
    parser.add_argument("--jobs", type=int, default=min(len(CPU_MODELS), os.cpu_count() or 1),
                        help="CPU models emulated at once [default: %(default)s]")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="fail, instead of running on, past this time (downloads included)")
    parser.add_argument("--base", type=Path, default=REPO / ".arm64",
                        help="the cached environment and the runs' outputs")
    parser.add_argument("--reports", type=Path, default=REPO / "reports" / "arm64")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        code = check(args, started)
    except (CheckError, MirrorError, BuildError) as exc:
        say(f"error: {exc}")
        return 2
    say(f"done in {time.monotonic() - started:.0f} s")
    return code


def check(args: argparse.Namespace, started: float) -> int:
    cpus = [c.strip() for c in args.cpus.split(",") if c.strip()]
    unknown = [c for c in cpus if c not in CPU_MODELS]
    if unknown or not cpus:
        raise CheckError(f"unknown CPU model(s) {unknown}; choose from {', '.join(CPU_MODELS)}")
    infos: dict[str, cmp.ModelInfo] = {}
    specs: dict[str, Any] = {}
    folders: dict[str, Path] = {}
    for folder in find_models(args.models):
        info, spec = model_info(folder, set(infos))
        infos[info.name], specs[info.name], folders[info.name] = info, spec, folder
    images = read_image_list(IMAGE_LIST, args.data)
    min_images = cmp.MIN_IMAGES
    if args.limit is not None:
        images = images[:: max(1, len(images) // args.limit)][: args.limit]
        min_images = len(images)
        say(f"development run: {len(images)} images, not the check's {cmp.MIN_IMAGES}")
    deadline = started + (args.budget_minutes * 60 if args.budget_minutes else 1e9)

    timings: dict[str, float] = {}
    layout = build(args.base, REPO)
    timings["environment"] = time.monotonic() - started
    out = args.base / "out"
    shutil.rmtree(out, ignore_errors=True)
    staged = stage_inputs(images, args.base / "inputs")
    out.mkdir(parents=True)
    (out / "specs.json").write_text(json.dumps(specs, indent=2))
    say(f"{len(folders)} model(s) x {len(staged)} inputs ({len(images)} images + "
        f"{len(DICOM_SAMPLES)} DICOM) on {NATIVE}, {', '.join(cpus)}")

    checks = Checks()
    template = Side(native(REPO), out / NATIVE, args.base / "inputs", folders,
                    out / "specs.json", args.threads, checks, deadline,
                    ("--allow-failed-gate",) if args.allow_failed_gate else ())
    sides = {NATIVE: template, **{cpu: replace(template, py=emulated(layout, REPO, cpu),
                                               out=out / cpu) for cpu in cpus}}

    def run(name: str) -> None:
        t = time.monotonic()
        side = sides[name]
        side.out.mkdir()
        if name != NATIVE:
            steps.imports_and_tests(side)
            steps.serve_and_ask(side, staged[0])
        steps.trace_and_predict(side)
        timings[name] = time.monotonic() - t

    run(NATIVE)
    # One emulated CPU model per host core: each QEMU process mostly keeps one core busy.
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(run, cpus))
    checks.sort(key=lambda c: [NATIVE, *cpus].index(c["cpu"]))

    rows, per_cpu = compare(sides, infos, min_images, checks)
    differing = cmp.step_table(per_cpu)
    markdown = cmp.render_markdown(rows, differing, checks)
    passed = bool(rows) and all(r.passed for r in rows) and all(c["passed"] for c in checks)
    timings = {k: round(v, 1) for k, v in timings.items()}
    write_report(args.reports, markdown, {
        "passed": passed, "cpus": cpus, "inputs": [p.name for p in staged],
        "development_run": args.limit is not None,
        "models": {n: {**asdict(i), "folder": str(folders[n])} for n, i in infos.items()},
        "rows": [asdict(r) for r in rows], "differing_steps": differing,
        "checks": list(checks), "timings_s": timings})
    print(markdown)
    print(f"wall time per side (s): {timings}; emulated times are not latency figures")
    say(f"{'PASSED' if passed else 'FAILED'}; report in {args.reports}/comparison.md")
    return 0 if passed else 1


def write_report(folder: Path, markdown: str, data: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.md").write_text("# arm64 equivalence check (emulated)\n\n" + markdown
                                          + "\n")
    (folder / "comparison.json").write_text(json.dumps(data, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
