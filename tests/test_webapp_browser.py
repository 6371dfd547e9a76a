"""End to end in a real headless browser: Debian's chromium, driven by Selenium through
Debian's matching chromedriver, against the production server (gunicorn, two workers, via
``brainedge serve``) on loopback.

What only a browser shows: the form posts a real multipart upload with its CSRF token and
session cookie (across two worker processes), ``app.js`` runs under the page's Content
Security Policy, the preview's data URI renders, and the result and refusals read as a
clinician sees them.

Nothing is downloaded: the driver's path is given to Selenium, so Selenium Manager (which
fetches drivers and browsers) is never started; the test replaces it with a failure to prove
it, and sets ``SE_OFFLINE`` as well. ``make browser-deps`` installs the two Debian packages.
Without them (a laptop) the tests skip, saying why; with ``CI`` set they fail instead, so CI
cannot skip them silently.

The screenshot of a prediction goes to ``tmp_path``; with ``BRAINEDGE_UPDATE_SCREENSHOT=1``
it is taken from the real model on a real slice and written to ``docs/screenshot.png`` (the
README's), see ``test_screenshot_of_a_prediction``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from benchmarks.loadtest import RunningServer, serve_artifacts
from brainedge import MEDICAL_NOTICE
from tests.conftest import PROJECT_ROOT, SHARED_DATASET
from tests.test_webapp_support import (
    CLASSES,
    PATIENT_ID,
    PATIENT_NAME,
    dicom_bytes,
    encode,
    make_artifact,
    need_onnxruntime,
    phantom,
)

CHROMIUM = Path(os.environ.get("BRAINEDGE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("BRAINEDGE_CHROMEDRIVER", "/usr/bin/chromedriver"))
# Chromium's own calls home (component updates, sign-in, variations) are switched off, and
# every host name but loopback resolves to nothing: the browser can reach only the server
# under test, which also proves that the page needs nothing from the internet (no CDN).
OFFLINE_SWITCHES = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--disable-domain-reliability", "--disable-breakpad",
    "--disable-client-side-phishing-detection", "--metrics-recording-only",
    "--password-store=basic",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
)
WINDOW = (1280, 900)
# Bounds on waiting, so a broken page fails instead of hanging; nothing asserts a duration.
PAGE_WAIT_S = 60.0

SCREENSHOT = PROJECT_ROOT / "docs" / "screenshot.png"
UPDATE_SCREENSHOT = os.environ.get("BRAINEDGE_UPDATE_SCREENSHOT") == "1"
SCREENSHOT_ARTIFACT = Path(os.environ.get(
    "BRAINEDGE_SCREENSHOT_ARTIFACT",
    PROJECT_ROOT / "runs" / "shared-densenet121-150" / "optimized" / "tflite-int8"))
SCREENSHOT_IMAGE = Path(os.environ.get(
    "BRAINEDGE_SCREENSHOT_IMAGE", SHARED_DATASET / "Testing" / "glioma" / "Te-gl_0010.jpg"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where the browser tests must run."""
    if _in_ci():
        pytest.fail(f"{reason}; CI must run the browser tests (CI is set): install them with "
                    "`make browser-deps` before `make test`", pytrace=False)
    pytest.skip(f"{reason}; install them with `make browser-deps` (Debian packages chromium "
                "and chromium-driver)")


def _clean_env() -> dict[str, str]:
    """The developer's BRAINEDGE_* (token, config file, artifacts) must not reach the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BRAINEDGE_")}


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.selenium_manager import SeleniumManager
    except ImportError:
        _unavailable("selenium is not installed (pip install -c constraints.txt '.[dev]')")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.is_file() and os.access(path, os.X_OK)):
            _unavailable(f"{path} is missing")

    def no_downloads(self: Any, args: list[str]) -> dict[str, str]:
        raise AssertionError(f"Selenium Manager was asked for {args}: it may download a "
                             "driver or browser; the test must use the Debian ones")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--force-device-scale-factor=1",
                "--hide-scrollbars", "--lang=en-US", *OFFLINE_SWITCHES,
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # chromium refuses to run its sandbox as root
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")
        mp.setattr(SeleniumManager, "binary_paths", no_downloads)
        browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                                   options=options)
        try:
            browser.set_page_load_timeout(PAGE_WAIT_S)
            yield browser
        finally:
            browser.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The production server, two workers: the page and its POST may reach different ones."""
    need_onnxruntime()
    artifact = make_artifact(tmp_path_factory.mktemp("browser") / "onnx-fp32")
    with serve_artifacts([artifact], workers=2, env=_clean_env()) as running:
        yield running


@pytest.fixture
def slice_png(tmp_path: Path) -> Path:
    path = tmp_path / "phantom-glioma.png"
    path.write_bytes(encode(phantom("glioma", seed=0, size=256)))
    return path


# --- helpers ----------------------------------------------------------------------------------

def _by_id(driver: Any, element_id: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.ID, element_id)


def upload(driver: Any, url: str, file: Path) -> None:
    """Open the page, choose ``file`` in ``#file``, click ``#submit``, wait for the answer."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.get_log("browser")  # start the console log afresh for this page
    (chooser,) = _by_id(driver, "file")
    chooser.send_keys(str(file))
    # app.js (script-src 'self' under the page's CSP) shows the chosen file's name.
    assert _by_id(driver, "file-name")[0].text == file.name
    _by_id(driver, "submit")[0].click()
    WebDriverWait(driver, PAGE_WAIT_S).until(
        lambda d: _by_id(d, "prediction-label") or _by_id(d, "error"))


def assert_notice_visible(driver: Any) -> None:
    (notice,) = _by_id(driver, "notice")
    assert notice.is_displayed()
    assert "Decision support, not a diagnosis." in notice.text
    assert MEDICAL_NOTICE in " ".join(notice.text.split())


def read_prediction(driver: Any) -> tuple[str, dict[str, float]]:
    """The label, and every class's probability as the page's meters show it."""
    from selenium.webdriver.common.by import By

    assert not _by_id(driver, "error"), _by_id(driver, "error")[0].text
    (label,) = _by_id(driver, "prediction-label")
    assert label.is_displayed()
    rows = driver.find_elements(By.CSS_SELECTOR, "#probabilities tr[data-class]")
    probabilities = {}
    for row in rows:
        meter = row.find_element(By.TAG_NAME, "meter")
        assert meter.is_displayed()
        probabilities[row.get_attribute("data-class")] = float(meter.get_attribute("value"))
    return label.text, probabilities


def console_errors(driver: Any) -> list[str]:
    """SEVERE console messages: failed scripts or styles, CSP violations, JS exceptions.
    The favicon's 404 is the browser asking for a file the app does not have."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]


def full_page_screenshot(driver: Any, path: Path) -> tuple[int, int]:
    """The whole page at WINDOW's width, one CSS pixel per image pixel; returns its size."""
    width = WINDOW[0]
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    # A viewport as tall as the page, set through the DevTools protocol: the window size
    # would include browser chrome that differs between chromium versions.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return width, height


# --- tests ------------------------------------------------------------------------------------

def test_an_uploaded_slice_is_classified_with_every_probability_and_the_notice(
        driver: Any, server: RunningServer, slice_png: Path) -> None:
    upload(driver, server.url, slice_png)
    label, probabilities = read_prediction(driver)
    assert label in CLASSES
    assert list(probabilities) == list(CLASSES)  # four bars, in the model's class order
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=4e-4)  # shown to 4 decimals
    assert max(probabilities, key=probabilities.__getitem__) == label
    assert_notice_visible(driver)
    (preview,) = _by_id(driver, "preview")
    assert driver.execute_script("return arguments[0].naturalWidth", preview) > 0
    assert console_errors(driver) == []


def test_a_file_that_is_not_an_image_shows_an_error_and_no_prediction(
        driver: Any, server: RunningServer, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Patient notes, not an MRI slice.\n")
    upload(driver, server.url, notes)
    (error,) = _by_id(driver, "error")
    assert error.is_displayed() and error.text.startswith("Not classified.")
    assert not _by_id(driver, "prediction-label")
    assert_notice_visible(driver)


def test_a_dicom_slice_is_classified_without_showing_patient_data(
        driver: Any, server: RunningServer, tmp_path: Path) -> None:
    path = tmp_path / "slice.dcm"
    path.write_bytes(dicom_bytes(phantom("meningioma", seed=1, size=128)))
    upload(driver, server.url, path)
    label, probabilities = read_prediction(driver)
    assert label in CLASSES and len(probabilities) == len(CLASSES)
    assert "DICOM" in driver.find_element("css selector", "#result figcaption").text
    page = driver.page_source
    assert PATIENT_NAME not in page and PATIENT_ID not in page
    assert_notice_visible(driver)


def test_screenshot_of_a_prediction(driver: Any, server: RunningServer, slice_png: Path,
                                    tmp_path: Path) -> None:
    """Writes ``docs/screenshot.png`` only with BRAINEDGE_UPDATE_SCREENSHOT=1, so that CI
    never dirties the tree; it then serves BRAINEDGE_SCREENSHOT_ARTIFACT (default: the shared
    DenseNet121 int8 model) on BRAINEDGE_SCREENSHOT_IMAGE (default: a glioma test slice of the
    shared dataset). Otherwise the tiny model's page goes to tmp_path."""
    if not UPDATE_SCREENSHOT:
        target = tmp_path / "screenshot.png"
        upload(driver, server.url, slice_png)
        read_prediction(driver)
        size = full_page_screenshot(driver, target)
    else:
        for path in (SCREENSHOT_ARTIFACT, SCREENSHOT_IMAGE):
            if not path.exists():
                pytest.fail(f"BRAINEDGE_UPDATE_SCREENSHOT=1 but {path} does not exist; set "
                            "BRAINEDGE_SCREENSHOT_ARTIFACT / BRAINEDGE_SCREENSHOT_IMAGE")
        target = SCREENSHOT
        with serve_artifacts([SCREENSHOT_ARTIFACT], workers=1, env=_clean_env()) as real:
            upload(driver, real.url, SCREENSHOT_IMAGE)
            label, _ = read_prediction(driver)
            size = full_page_screenshot(driver, target)
        print(f"wrote {target}: {SCREENSHOT_ARTIFACT} says {label} for {SCREENSHOT_IMAGE}")
    shot = cv2.imread(str(target))
    assert shot is not None and (shot.shape[1], shot.shape[0]) == size
    assert float(np.std(shot)) > 10  # a rendered page, not a blank image
