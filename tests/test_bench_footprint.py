"""``brainedge bench footprint``: the real server (gunicorn, two workers) started on loopback
with a tiny ONNX artifact, its start-up time and the memory of each process measured.

Asserted: the figures exist, belong to the right processes and are consistent with each other
and with /proc. Printed, never asserted: how large or fast they are, which is the machine's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.footprint import format_footprint, measure_footprint
from cli.bench import bench
from tests.test_webapp_support import encode, make_artifact, need_onnxruntime, phantom

WORKERS = 2


@pytest.fixture(autouse=True)
def _no_brainedge_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's BRAINEDGE_* (token, artifacts, config file) must not reach the server."""
    for name in [k for k in os.environ if k.startswith("BRAINEDGE_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_onnxruntime()
    return make_artifact(tmp_path_factory.mktemp("footprint") / "onnx-fp32")


def test_footprint_measures_start_up_and_each_process_then_stops_the_server(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/proc/self/status").is_file():
        pytest.skip("process memory is read from /proc (Linux)")
    result = measure_footprint([artifact], workers=WORKERS, threads=1,
                               image=encode(phantom("glioma", seed=2, size=128)), requests=6)
    with capsys.disabled():
        print(f"\n--- footprint of a tiny model (printed, not asserted) ---\n"
              f"{format_footprint(result)}", flush=True)

    assert result.ready_s > 0
    roles = sorted(p.role for p in result.at_ready)
    assert roles == ["master"] + ["worker"] * WORKERS, "the master and every worker"
    assert result.workers == WORKERS
    for process in (*result.at_ready, *result.after_requests):
        assert process.rss_bytes > 1024 * 1024
        if process.pss_bytes is not None:  # None only on kernels without smaps_rollup
            assert 0 < process.pss_bytes <= process.rss_bytes
    assert (result.requests, result.request_errors) == (6, 0)
    assert {p.pid for p in result.after_requests} == {p.pid for p in result.at_ready}
    # The server is gone afterwards: no process of it is left behind.
    assert not any(Path(f"/proc/{p.pid}").exists() for p in result.at_ready)
    assert result.device["emulated"] is False

    data = result.to_dict()
    totals = data["at_ready_total"]
    assert totals["rss_bytes"] == sum(p.rss_bytes for p in result.at_ready)
    text = format_footprint(result)
    assert f"measured on  {result.device['id']}" in text and "ready in" in text
    assert "after 6 requests" in text


def test_footprint_command_prints_json_and_needs_image_and_requests_together(
    artifact: Path, tmp_path: Path
) -> None:
    image = tmp_path / "slice.png"
    image.write_bytes(encode(phantom("meningioma", seed=3, size=96)))
    alone = CliRunner().invoke(bench, ["footprint", "--artifact", str(artifact), "--image",
                                       str(image)])
    assert alone.exit_code == 2 and "go together" in alone.output

    out = CliRunner().invoke(bench, ["footprint", "--artifact", str(artifact), "--workers", "1",
                                     "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["workers"] == 1 and data["artifacts"] == [str(artifact)]
    assert [p["role"] for p in data["at_ready"]].count("master") == 1
    assert data["after_requests_total"] is None and data["device"]["id"]
