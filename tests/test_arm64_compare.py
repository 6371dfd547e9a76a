"""The comparison behind ``make arm64-check`` (deploy/arm64-check/), without QEMU.

Predictions: the gate on top-1 and on float probabilities. Traces: both sides are traced here,
natively, once as they are and once with one preprocessing step perturbed, and the
comparison must name that step, by how much, and fail the row.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parents[1] / "deploy" / "arm64-check"
sys.path.insert(0, str(TOOLS))

import arm64_compare as cmp  # noqa: E402
import arm64_trace  # noqa: E402

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
FLOAT = cmp.ModelInfo("densenet121-fp32", "fp32", "k")
INT8 = cmp.ModelInfo("densenet121-int8", "int8", "k")


def report(rows: dict[str, tuple[str, list[float]] | str]) -> dict[str, Any]:
    """A ``brainedge predict --format json`` report: file -> (label, probabilities) or error."""
    predictions = []
    for name, row in rows.items():
        if isinstance(row, str):
            predictions.append({"file": f"/in/{name}", "error": row})
        else:
            label, probs = row
            predictions.append({"file": f"/in/{name}", "label": label, "error": None,
                                "probabilities": dict(zip(CLASSES, probs, strict=True))})
    return {"notice": "...", "model": {}, "predictions": predictions}


def many(n: int, dp: float = 0.0, flip: int | None = None) -> tuple[dict, dict]:
    ref = {f"img{i:02d}.jpg": ("glioma", [0.7, 0.1, 0.1, 0.1]) for i in range(n)}
    cand = {name: ("glioma", [0.7 - dp, 0.1 + dp, 0.1, 0.1]) for name in ref}
    if flip is not None:
        cand[f"img{flip:02d}.jpg"] = ("meningioma", [0.1, 0.7, 0.1, 0.1])
    return report(ref), report(cand)


def no_trace_diff(images: int) -> cmp.TraceDiff:
    return cmp.TraceDiff(images=images, input_identical=images, prepared_identical=images)


# --- predictions --------------------------------------------------------------------------------

def test_identical_predictions_agree_everywhere():
    diff = cmp.compare_predictions(*many(52))
    assert (diff.images, diff.top1_agree, diff.max_abs_dp) == (52, 52, 0.0)
    assert not diff.top1_mismatches and not diff.failures


def test_the_largest_probability_difference_and_its_file_are_found():
    ref, cand = many(3)
    cand["predictions"][1]["probabilities"]["notumor"] = 0.1 + 4e-4
    diff = cmp.compare_predictions(ref, cand)
    assert diff.max_abs_dp == pytest.approx(4e-4)
    assert diff.worst_file == "img01.jpg"


def test_a_changed_top1_class_is_named_with_both_labels():
    diff = cmp.compare_predictions(*many(5, flip=3))
    assert diff.top1_agree == 4
    assert diff.top1_mismatches == ["img03.jpg: glioma on x86_64, meningioma on aarch64"]


def test_missing_and_failed_files_are_failures_not_silently_skipped():
    ref = report({"a.jpg": ("glioma", [1, 0, 0, 0]), "b.jpg": ("glioma", [1, 0, 0, 0]),
                  "c.dcm": ("glioma", [1, 0, 0, 0])})
    cand = report({"a.jpg": ("glioma", [1, 0, 0, 0]), "c.dcm": "not a readable image"})
    diff = cmp.compare_predictions(ref, cand)
    assert diff.images == 1
    assert diff.failures == ["b.jpg: only on x86_64", "c.dcm: not a readable image"]


def test_a_report_that_is_not_predict_json_is_refused():
    with pytest.raises(ValueError, match="no 'predictions' list"):
        cmp.compare_predictions({"rows": []}, {"rows": []})


# --- the gate -----------------------------------------------------------------------------------

def test_float_models_pass_within_1e3_and_fail_beyond_it():
    ok = cmp.evaluate(FLOAT, "cortex-a72", cmp.compare_predictions(*many(52, dp=9e-4)),
                      no_trace_diff(52))
    bad = cmp.evaluate(FLOAT, "cortex-a72", cmp.compare_predictions(*many(52, dp=2e-3)),
                       no_trace_diff(52))
    assert ok.passed and not ok.reasons
    assert not bad.passed
    assert "max |Δp| 2.00e-03 > 0.001" in bad.reasons[0]


def test_int8_probability_differences_are_measured_not_gated():
    row = cmp.evaluate(INT8, "cortex-a76", cmp.compare_predictions(*many(52, dp=0.05)),
                       no_trace_diff(52))
    assert row.passed
    assert row.max_abs_dp == pytest.approx(0.05)
    assert not row.gated_probabilities


def test_a_top1_flip_fails_even_an_int8_model():
    row = cmp.evaluate(INT8, "cortex-a76", cmp.compare_predictions(*many(52, flip=7)),
                       no_trace_diff(52))
    assert not row.passed
    assert "top-1 differs on 1 image(s): img07.jpg" in row.reasons[0]


def test_fewer_than_50_images_never_pass_vacuously():
    row = cmp.evaluate(FLOAT, "cortex-a72", cmp.compare_predictions(*many(3)), no_trace_diff(3))
    assert not row.passed
    assert "only 3 images compared; the check needs at least 50" in row.reasons


@pytest.mark.parametrize(("precision", "is_float"), [("fp32", True), ("fp16", True),
                                                     ("float32", True), ("int8", False),
                                                     ("int8-dynamic", False),
                                                     ("uint8", False)])
def test_which_precisions_are_held_to_the_float_tolerance(precision, is_float):
    assert cmp.ModelInfo("m", precision, "k").is_float is is_float


def test_the_served_answer_must_have_x86s_class():
    ref = report({"a.jpg": ("glioma", [0.7, 0.1, 0.1, 0.1])})
    same = {"file": "a.jpg", "class": "glioma",
            "probabilities": dict(zip(CLASSES, [0.7, 0.1, 0.1, 0.1], strict=True))}
    assert cmp.compare_served(same, ref)[0]
    assert not cmp.compare_served({**same, "class": "notumor"}, ref)[0]
    assert not cmp.compare_served({**same, "file": "b.jpg"}, ref)[0]


# --- traces -------------------------------------------------------------------------------------

SPEC = {"image_size": 48, "scaling": "torch"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three head-like slices, one of them colour, as files."""
    folder = tmp_path_factory.mktemp("arm64_inputs")
    files = []
    for i, (h, w) in enumerate([(120, 100), (90, 90), (64, 80)]):
        yy, xx = np.mgrid[:h, :w]
        head = (((yy - h / 2) / (h * 0.4)) ** 2 + ((xx - w / 2) / (w * 0.35)) ** 2) < 1
        rng = np.random.default_rng(i)
        gray = np.where(head, 90 + rng.integers(0, 120, (h, w)), 0).astype(np.uint8)
        image = cv2.merge([gray, gray, gray]) if i == 1 else gray
        path = folder / f"slice{i}.png"
        cv2.imwrite(str(path), image)
        files.append(path)
    return files


def traced(files: list[Path]) -> tuple[dict, dict]:
    index, blobs = arm64_trace.trace_inputs(files, {"m": SPEC})
    return index, blobs


def test_the_same_machine_gives_identical_traces(inputs):
    ref, cand = traced(inputs), traced(inputs)
    diff = cmp.compare_traces(*ref, *cand, arm64_trace.spec_key(SPEC))
    assert diff.images == 3 and diff.input_identical == 3 and diff.prepared_identical == 3
    assert not diff.steps and not diff.failures


def test_the_trace_covers_decoding_every_opencv_call_and_the_exact_steps(inputs):
    index, _ = traced(inputs)
    steps = [s for s, _ in index["traces"]["slice1.png"]["decode"]]
    assert steps[-2:] == ["imageio.decode", arm64_trace.DECODED_STEP]
    assert {"cv2.imdecode", "cv2.cvtColor"} <= set(steps)  # the colour file is reduced to gray
    key = f"spec:{arm64_trace.spec_key(SPEC)}"
    steps = [s for s, _ in index["traces"]["slice1.png"][key]]
    for name in ("cv2.GaussianBlur", "cv2.findContours", "preprocess.crop_to_brain",
                 "preprocess.resize_exact", "preprocess.bilateral_exact",
                 cmp.PREPARED_STEP, cmp.MODEL_INPUT_STEP):
        assert name in steps


def test_tracing_leaves_the_runtime_modules_as_it_found_them(inputs):
    from runtime import imageio, preprocess

    before = (preprocess.cv2, preprocess.resize_exact, imageio.decode_image)
    traced(inputs)
    assert (preprocess.cv2, preprocess.resize_exact, imageio.decode_image) == before


def test_a_perturbed_step_is_named_first_with_its_size(inputs, monkeypatch):
    from runtime import preprocess

    ref = traced(inputs)
    original = preprocess.bilateral_exact

    @functools.wraps(original)
    def off_by_one(*args: Any, **kwargs: Any) -> np.ndarray:
        out = original(*args, **kwargs).copy()
        out[0, 0] = min(int(out[0, 0]) + 1, 255)
        return out

    monkeypatch.setattr(preprocess, "bilateral_exact", off_by_one)
    cand = traced(inputs)
    diff = cmp.compare_traces(*ref, *cand, arm64_trace.spec_key(SPEC))
    assert diff.input_identical == 0 and diff.prepared_identical == 0
    assert diff.max_prepared_delta == 1
    first = [s for s in diff.steps.values() if s.first_in]
    assert [s.step for s in first] == ["preprocess.bilateral_exact"]
    assert first[0].first_in == 3 and first[0].max_abs == 1
    assert "cv2.GaussianBlur" not in diff.steps  # steps before it were identical
    row = cmp.evaluate(FLOAT, "cortex-a72", cmp.compare_predictions(*many(52)), diff)
    assert not row.passed
    assert any("first differing step: preprocess.bilateral_exact" in r for r in row.reasons)


def test_a_different_crop_is_a_difference_in_shape(inputs, monkeypatch):
    from runtime import preprocess

    ref = traced(inputs)
    original = preprocess.crop_to_brain

    @functools.wraps(original)
    def tighter(gray: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        return original(gray, *args, **kwargs)[1:]

    monkeypatch.setattr(preprocess, "crop_to_brain", tighter)
    diff = cmp.compare_traces(*ref, *traced(inputs), arm64_trace.spec_key(SPEC))
    assert math.isinf(diff.steps["preprocess.crop_to_brain"].max_abs)
    assert diff.steps["preprocess.crop_to_brain"].first_in == 3


def test_a_pipeline_that_takes_another_path_is_a_failure(inputs, monkeypatch):
    from runtime import preprocess

    ref = traced(inputs)
    monkeypatch.setattr(preprocess, "crop_to_brain", lambda gray, *a, **k: gray)
    diff = cmp.compare_traces(*ref, *traced(inputs), arm64_trace.spec_key(SPEC))
    assert any("the pipeline diverged at cv2.GaussianBlur / preprocess.<lambda>" in f
               for f in diff.failures)
    assert diff.input_identical == 0 and math.isinf(diff.max_input_delta)


def test_a_file_that_fails_to_decode_on_one_side_is_reported(inputs, tmp_path):
    ref = traced(inputs)
    broken = tmp_path / inputs[0].name
    broken.write_bytes(b"not an image")
    cand = traced([broken, *inputs[1:]])
    diff = cmp.compare_traces(*ref, *cand, arm64_trace.spec_key(SPEC))
    assert diff.images == 2
    assert any(f.startswith("slice0.png: could not be decoded on aarch64") for f in diff.failures)


def test_traces_survive_the_file_round_trip(inputs, tmp_path):
    index, blobs = traced(inputs)
    arm64_trace.save(tmp_path / "t.npz", index, blobs)
    loaded_index, loaded_blobs = arm64_trace.load(tmp_path / "t.npz")
    assert loaded_index == index
    diff = cmp.compare_traces(index, blobs, loaded_index, loaded_blobs,
                              arm64_trace.spec_key(SPEC))
    assert diff.input_identical == 3 and not diff.steps


@pytest.mark.parametrize(("a", "b"), [((np.arange(4), np.arange(2)), (np.arange(2), np.arange(4))),
                                      ((1.0, np.zeros(3)), (0.0, np.zeros(3)))])
def test_tuples_are_flattened_so_that_any_change_shows(a, b):
    x, y = arm64_trace.as_array(a), arm64_trace.as_array(b)
    assert x.shape != y.shape or not np.array_equal(x, y)


def test_max_abs_delta_is_infinite_for_different_shapes():
    assert math.isinf(cmp.max_abs_delta(np.zeros((2, 2)), np.zeros((2, 3))))
    assert cmp.max_abs_delta(np.array([1, 5], np.uint8), np.array([3, 4], np.uint8)) == 2


# --- the report ---------------------------------------------------------------------------------

def test_the_markdown_table_shows_each_row_the_failures_and_the_differing_steps():
    good = cmp.evaluate(INT8, "cortex-a72", cmp.compare_predictions(*many(52, dp=0.01)),
                        no_trace_diff(52))
    bad = cmp.evaluate(FLOAT, "cortex-a76", cmp.compare_predictions(*many(52, flip=0)),
                       no_trace_diff(52))
    steps = [{"cpu": "cortex-a76", "step": "cv2.imdecode", "images": 2, "max_abs": 3.0,
              "first_in": 2}]
    checks = [{"cpu": "cortex-a72", "check": "pytest -m arm64", "passed": False,
               "seconds": 61.2, "cpu_seconds": 57.0, "detail": "1 failed"}]
    text = cmp.render_markdown([good, bad], steps, checks)
    assert "| densenet121-int8 | int8 | cortex-a72 | 52 | 52/52 | 1.00e-02 (measured) |" in text
    assert "| densenet121-fp32 | fp32 | cortex-a76 | 52 | 51/52 |" in text and "FAIL" in text
    assert "| cortex-a76 | cv2.imdecode | 2 | 3.00e+00 | 2 |" in text
    assert "**densenet121-fp32 on cortex-a76 failed:**" in text
    assert "| cortex-a72 | pytest -m arm64 | FAIL | 61 | 57 | 1 failed |" in text


def test_the_markdown_says_so_when_every_step_was_identical():
    row = cmp.evaluate(FLOAT, "cortex-a72", cmp.compare_predictions(*many(52)),
                       no_trace_diff(52))
    assert "Every decoding and preprocessing step gave identical results" in \
        cmp.render_markdown([row], [], [])


def test_runs_of_different_runtime_code_are_not_compared(inputs):
    ref, (cand_index, cand_blobs) = traced(inputs), traced(inputs)
    diff = cmp.compare_traces(*ref, {**cand_index, "code": "edited"}, cand_blobs,
                              arm64_trace.spec_key(SPEC))
    assert any("runtime/ changed between" in f for f in diff.failures)
