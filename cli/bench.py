"""``brainedge bench``: quick latency of one artifact, the full sweep, its report, and the
lock-vs-pool question for concurrent LiteRT callers.

Thin commands over ``benchmarks.worker``, ``benchmarks.sweep`` and ``benchmarks.report``; every
runtime is imported inside a command, so ``--help`` loads none of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from brainedge.errors import ConfigError
from cli.errors import friendly_errors

E2E_MAX_FILES = 100




class IntList(click.ParamType):
    """``"1,2,4"`` -> ``(1, 2, 4)``: positive integers, each once."""

    name = "N,N,..."

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        items = [v.strip() for v in str(value).split(",")]
        try:
            numbers = tuple(int(v) for v in items)
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers (e.g. 1,2,4)",
                      param, ctx)
        if any(n < 1 for n in numbers):
            self.fail(f"{value!r}: every value must be >= 1", param, ctx)
        if len(set(numbers)) != len(numbers):
            self.fail(f"{value!r} lists a value twice", param, ctx)
        return numbers


INT_LIST = IntList()
# Under an emulator, time nothing (benchmarks/emulation.py) but still load and evaluate.
ALLOW_EMULATED = click.option(
    "--allow-emulated", is_flag=True,
    help="Under a CPU emulator (QEMU user-mode), measure what does not depend on speed instead "
         "of refusing; no latency is written (rows say 'emulated, not timed').")


def _image_files(path: Path) -> list[Path]:
    """One image, or up to E2E_MAX_FILES spread over a folder's images (sorted, recursive)."""
    from runtime.imageio import is_image_name

    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p))
    if not files:
        raise ConfigError(f"{path} holds no .jpg/.jpeg/.png/.bmp/.tif images for --e2e")
    step = max(1, len(files) // E2E_MAX_FILES)
    return files[::step][:E2E_MAX_FILES]


def _stats_line(label: str, stats: dict[str, float], unit_per_s: float | None = None) -> str:
    line = (f"{label:<10} p50 {stats['p50']:8.3f}  p90 {stats['p90']:8.3f}  "
            f"p99 {stats['p99']:8.3f}  mean {stats['mean']:8.3f} ± {stats['std']:.3f} ms  "
            f"(n={stats['runs']})")
    if unit_per_s is not None:
        line += f"  {unit_per_s:.1f} img/s"
    return line


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.1f} MB"


@click.group("bench")
def bench() -> None:
    """Latency, throughput, memory and accuracy of artifacts on this device.

    \b
      latency      one artifact, in this process (like TFLite's benchmark_model)
      run          the sweep: run folders x variants x threads, one process each, to JSON
      report       Markdown tables from sweep JSON files
      concurrency  LiteRT under concurrent clients: one locked interpreter vs a pool
      http         load test of a running server (or one it starts) over loopback HTTP
      footprint    start-up time and memory (master and workers) of brainedge serve
    """


@bench.command("latency")
@click.option("--model", "artifact", required=True, type=click.Path(path_type=Path),
              help="Artifact folder (e.g. runs/densenet121/optimized/tflite-int8) or a run "
                   "folder (the Keras FP32 baseline).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Runtime threads [default: the runtime's own].")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True,
              help="Minimum number of timed runs.")
@click.option("--min-seconds", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Keep running until this long has passed too (up to 2000 runs or --runs).")
@click.option("--e2e", "e2e_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="An image or a folder of images: also time one request as the web app "
                   "answers it: decode, checks, preprocess, inference "
                   f"(up to {E2E_MAX_FILES} files, cycled).")
@click.option("--pool-size", type=click.IntRange(1), default=1, show_default=True,
              help="LiteRT interpreters in the pool.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@ALLOW_EMULATED
@friendly_errors
def latency(artifact: Path, threads: int | None, batch_size: int, warmup: int, runs: int,
            min_seconds: float, e2e_path: Path | None, pool_size: int, as_json: bool,
            allow_emulated: bool) -> None:
    """Time one artifact in this process: load, warm-up, p50/p90/p99, throughput, peak RSS."""
    from benchmarks.emulation import NOT_TIMED
    from benchmarks.worker import run_job

    job = {"artifact": str(artifact), "threads": threads, "pool_size": pool_size,
           "batch_sizes": [batch_size], "warmup": warmup, "min_runs": runs,
           "min_seconds": min_seconds, "max_runs": max(runs, 2000),
           "e2e_images": [str(p) for p in _image_files(e2e_path)] if e2e_path else [],
           "allow_emulated": allow_emulated}
    result = run_job(job)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    d = result["describe"]
    click.echo(f"model      {d['model']} {result['variant']} ({d['format']} {d['precision']}, "
               f"{d['backend']} {d['runtime_version']}), {_mb(result['size_bytes'])}"
               + (f", gzip {_mb(result['gzip_bytes'])}" if result["gzip_bytes"] else ""))
    click.echo(f"threads    {threads or 'runtime default'}; input {d['image_size']} px")
    if result["timing"] == NOT_TIMED:
        click.echo(f"timing     {NOT_TIMED}: loaded and verified, but an emulator's latency "
                   "describes the emulator (time it on the real device)")
        return
    imported = (f" (of which importing {result['import_library']} "
                f"{result['import_ms']:.1f} ms)" if result["import_ms"] else "")
    click.echo(f"load       {result['load_ms']:.1f} ms, sha256 verified{imported}")
    for b in result["batches"]:
        click.echo(f"warm-up    {warmup} runs, {b['warmup_ms']:.1f} ms")
        click.echo(_stats_line(f"batch {b['batch_size']}", b["latency_ms"], b["throughput_per_s"]))
    if result["e2e_latency_ms"]:
        e2e = result["e2e_latency_ms"]
        click.echo(_stats_line("end-to-end", e2e, 1e3 / e2e["mean"])
                   + f"  decode+checks+preprocess+inference, {result['e2e_images']} image(s)")
        stages = result["e2e_stages_ms"]
        click.echo("stages     " + ", ".join(
            f"{name} {s['mean']:.3f} ms ({s['share']:.0%})" for name, s in stages.items())
                   + "  (mean per request)")
    click.echo(f"peak RSS   {result['peak_rss_mb']:.1f} MB")


@bench.command("run")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--variant", "variants", multiple=True,
              help="Only these optimized variants (repeatable); the Keras baseline always runs.")
@click.option("--threads", type=INT_LIST, default="1,2,4", show_default=True)
@click.option("--batch-sizes", type=INT_LIST, default="1,8", show_default=True)
@click.option("--eval-data", type=click.Path(path_type=Path), default=None,
              help="Dataset folder: accuracy on its test split, and images for end-to-end "
                   "latency (none: both are skipped).")
@click.option("--eval-limit", type=click.IntRange(1), default=200, show_default=True,
              help="Test images evaluated (stratified, the same every time).")
@click.option("--e2e-images", type=click.IntRange(0), default=30, show_default=True,
              help="Test images cycled through for end-to-end latency.")
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True)
@click.option("--min-runs", type=click.IntRange(1), default=50, show_default=True)
@click.option("--min-seconds", type=click.FloatRange(0), default=2.0, show_default=True)
@click.option("--max-runs", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=1800.0,
              show_default=True, help="Seconds one worker (artifact x threads) may take.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("reports/bench"), show_default=True)
@click.option("--device-label", default=None,
              help="Name of this device in the results [default: from the CPU, e.g. "
                   "intel-xeon-8c].")
@ALLOW_EMULATED
@friendly_errors
def run(run_dirs: tuple[Path, ...], variants: tuple[str, ...], threads: tuple[int, ...],
        batch_sizes: tuple[int, ...], eval_data: Path | None, eval_limit: int,
        e2e_images: int, warmup: int, min_runs: int, min_seconds: float, max_runs: int,
        timeout_s: float, out_dir: Path, device_label: str | None,
        allow_emulated: bool) -> None:
    """Benchmark each run (Keras FP32 baseline) and its optimized variants at each thread count,
    every combination in a fresh process; write one JSON file."""
    from benchmarks.sweep import BenchConfig, discover_artifacts, run_sweep

    config = BenchConfig(
        artifacts=tuple(discover_artifacts(run_dirs, variants or None)), threads=threads,
        batch_sizes=batch_sizes, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
        max_runs=max_runs, e2e_images=e2e_images, eval_data=eval_data,
        eval_limit=eval_limit, timeout_s=timeout_s, out_dir=out_dir, device_label=device_label,
        allow_emulated=allow_emulated,
    )
    path = run_sweep(config, progress=lambda msg: click.echo(msg, err=True))
    click.echo(summary_table(json.loads(path.read_text())))
    click.echo(f"wrote {path}")


def summary_table(report: dict[str, Any]) -> str:
    """A short fixed-width table of a sweep's rows (the full report is ``bench report``)."""
    from benchmarks.emulation import NOT_TIMED

    sizes = report["config"]["batch_sizes"]
    small, large = min(sizes), max(sizes)
    header = (f"{'model':<12} {'variant':<26} {'dev':<4} {'thr':>3} {f'p50 b{small}':>9} "
              f"{f'img/s b{large}':>10} {'e2e p50':>8} {'acc':>6} {'size':>9}  error")
    lines = [header, "-" * len(header)]
    for row in report["results"]:
        by_size = {b["batch_size"]: b for b in row["batches"]}
        p50 = by_size[small]["latency_ms"]["p50"] if small in by_size else None
        tput = by_size[large]["throughput_per_s"] if large in by_size else None
        e2e = (row["e2e_latency_ms"] or {}).get("p50")
        cells = [
            "-" if p50 is None else f"{p50:.2f}",
            "-" if tput is None else f"{tput:.1f}",
            "-" if e2e is None else f"{e2e:.2f}",
            "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}",
        ]
        error = (row["error"] or "").splitlines()[0][:60] if row["error"] else ""
        if not error and row.get("timing") == NOT_TIMED:
            error = NOT_TIMED
        lines.append(f"{row['model'] or '?':<12} {row['variant'] or '?':<26} "
                     f"{row['device_kind']:<4} {row['threads']:>3} {cells[0]:>9} {cells[1]:>10} "
                     f"{cells[2]:>8} {cells[3]:>6} {_mb(row['size_bytes']):>9}  {error}")
    overhead = report["harness_overhead_ms"]
    ratio = overhead.get("ratio_to_fastest_p50")
    if overhead["p50"] is None:
        lines.append(f"harness overhead: not measured ({overhead.get('not_measured')})")
    else:
        lines.append(f"harness overhead p50 {overhead['p50'] * 1e3:.2f} µs"
                     + (f" = {ratio:.3%} of the fastest p50" if ratio is not None else ""))
    gpu = report["gpu"]
    lines.append("GPU: " + (f"measured with {gpu.get('provider')}" if gpu["measured"]
                            else f"not measured ({gpu['reason']})"))
    return "\n".join(lines)


@bench.command("report")
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the Markdown report.")
@click.option("--all-runs", is_flag=True,
              help="Keep every run of a device, not only its newest.")
@friendly_errors
def report(inputs: tuple[Path, ...], out_dir: Path, all_runs: bool) -> None:
    """Markdown tables (latency, throughput, memory, size, accuracy) from sweep JSON files or
    folders of them."""
    try:
        from benchmarks.report import write_report
    except ImportError as exc:
        raise click.ClickException(f"benchmarks.report is not available here ({exc})") from exc
    click.echo(f"wrote {write_report(list(inputs), out_dir, latest_per_device=not all_runs)}")


@bench.command("concurrency")
@click.option("--model", "artifact", required=True, type=click.Path(path_type=Path),
              help="A LiteRT artifact folder (e.g. runs/densenet121/optimized/tflite-int8).")
@click.option("--clients", type=click.IntRange(1), required=True,
              help="Concurrent client threads.")
@click.option("--pool-sizes", type=INT_LIST, default="1,2", show_default=True,
              help="Interpreter pool sizes to compare; 1 is a single interpreter behind a lock.")
@click.option("--requests", type=click.IntRange(1), default=200, show_default=True,
              help="Total requests (batch 1), shared by the clients.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Threads of each interpreter.")
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True,
              help="Untimed requests per client before timing starts.")
@friendly_errors
def concurrency(artifact: Path, clients: int, pool_sizes: tuple[int, ...], requests: int,
                threads: int, warmup: int) -> None:
    """Throughput and p50/p99 of N concurrent clients: one locked interpreter vs a pool."""
    from benchmarks.emulation import refuse_if_emulated
    from benchmarks.harness import measure_concurrent
    from benchmarks.sut import InferenceSUT
    from runtime import load_classifier
    from runtime.artifact import open_artifact

    refuse_if_emulated("time concurrent clients")
    backend = open_artifact(artifact).backend
    if backend != "litert":
        raise ConfigError(f"{artifact} runs on {backend}; the pool-vs-lock comparison is for "
                          "LiteRT (.tflite) artifacts, whose interpreters are not thread-safe")
    click.echo(f"{artifact}: {clients} client(s), {requests} requests of batch 1, "
               f"{threads} thread(s) per interpreter")
    best: tuple[float, int] | None = None
    lock_throughput = None
    for pool_size in pool_sizes:
        classifier = load_classifier(artifact, num_threads=threads, pool_size=pool_size,
                                     allow_failed_gate=True)  # measured, not served
        result = measure_concurrent(InferenceSUT(classifier, 1), clients, requests, warmup)
        name = "pool 1 (lock)" if pool_size == 1 else f"pool {pool_size}"
        click.echo(f"{name:<14} {result.throughput_per_s:8.1f} req/s  "
                   f"p50 {result.latency.p50:8.2f} ms  p99 {result.latency.p99:8.2f} ms")
        if pool_size == 1:
            lock_throughput = result.throughput_per_s
        if best is None or result.throughput_per_s > best[0]:
            best = (result.throughput_per_s, pool_size)
    if best is not None and len(pool_sizes) > 1:
        versus = (f", {best[0] / lock_throughput:.2f}x the lock's throughput"
                  if lock_throughput and best[1] != 1 else "")
        click.echo(f"best: pool {best[1]}{versus} (on this device, under this load)")


@bench.command("http")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="A running server (ignored with --serve).")
@click.option("--serve", "serve_artifact", type=click.Path(exists=True, path_type=Path),
              default=None,
              help="Start `brainedge serve --artifact ARTIFACT` (gunicorn) on a free loopback "
                   "port, load it, then stop it: one command measures an artifact.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="With --serve: gunicorn workers [default: the server's, min(2, CPUs)].")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="With --serve: inference threads per model [default: the server's].")
@click.option("--image", "image", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The image (PNG, JPEG or DICOM) every request POSTs as its raw body.")
@click.option("--clients", type=click.IntRange(1), default=8, show_default=True,
              help="Concurrent clients, each with its own keep-alive connection.")
@click.option("--requests", "total", type=click.IntRange(1), default=2000, show_default=True,
              help="Timed requests, shared by the clients.")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop starting requests after this many seconds, even if fewer were sent.")
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True,
              help="Untimed requests per client before the clock starts.")
@click.option("--model", default=None, help="Model name to ask for [default: the server's].")
@click.option("--server-pid", type=click.IntRange(1), default=None,
              help="gunicorn master's PID, to sample its process tree's memory (automatic "
                   "with --serve).")
@click.option("--token", envvar="BRAINEDGE_API_TOKEN", default=None,
              help="API token, if the server wants one [default: BRAINEDGE_API_TOKEN].")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@friendly_errors
def loadtest(url: str, serve_artifact: Path | None, workers: int | None, threads: int | None,
         image: Path, clients: int, total: int, duration: float | None, warmup: int,
         model: str | None, server_pid: int | None, token: str | None, as_json: bool) -> None:
    """Load test over HTTP: N clients POST one image to /api/v1/predict; report throughput,
    latency percentiles, errors and the server's memory before, during and after.

    Figures depend on everything else running on the machine (the clients share its CPU with
    the server); they are printed, never judged.
    """
    import contextlib

    from benchmarks.emulation import refuse_if_emulated
    from benchmarks.loadtest import LoadConfig, format_result, run_load, serve_artifacts

    refuse_if_emulated("load-test a server")
    if serve_artifact is None and (workers is not None or threads is not None):
        raise click.UsageError("--workers and --threads configure the server --serve starts; "
                               "a server started elsewhere keeps its own")
    body = image.read_bytes()
    with contextlib.ExitStack() as stack:
        if serve_artifact is not None:
            if not as_json:
                click.echo(f"starting brainedge serve --artifact {serve_artifact} ...", err=True)
            server = stack.enter_context(serve_artifacts([serve_artifact], workers=workers,
                                                         threads=threads))
            url, server_pid = server.url, server.pid
        config = LoadConfig(url=url, body=body, clients=clients, requests=total,
                            duration_s=duration, warmup=warmup, model=model,
                            server_pid=server_pid, token=token)
        result = run_load(config)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_result(result))


@bench.command("footprint")
@click.option("--artifact", "artifacts", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Artifact folder to serve (repeatable), e.g. "
                   "runs/densenet121/optimized/tflite-int8 [default: the shipped DenseNet121].")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="gunicorn workers [default: the server's, min(2, CPUs)].")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Inference threads per model [default: the server's].")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="With --requests: the image to POST to /api/v1/predict.")
@click.option("--requests", type=click.IntRange(0), default=0, show_default=True,
              help="Requests (one client) before measuring memory a second time.")
@click.option("--device-label", default=None,
              help="Name of this device in the output [default: from the CPU].")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@friendly_errors
def footprint(artifacts: tuple[Path, ...], workers: int | None, threads: int | None,
              image: Path | None, requests: int, device_label: str | None,
              as_json: bool) -> None:
    """Start brainedge serve with the artifacts, then report the time until it is ready and
    the RSS and PSS of its master and each worker; stop it. Figures are this machine's."""
    from benchmarks.footprint import format_footprint, measure_footprint

    if (image is None) != (requests == 0):
        raise click.UsageError("--image and --requests go together: pass both, or neither")
    if not artifacts:
        from runtime.shipped import default_artifact

        artifacts = (default_artifact(),)
    if not as_json:
        click.echo(f"starting brainedge serve with {len(artifacts)} artifact(s) ...", err=True)
    result = measure_footprint(list(artifacts), workers=workers, threads=threads,
                               image=image.read_bytes() if image else None, requests=requests,
                               device_label=device_label)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_footprint(result))
