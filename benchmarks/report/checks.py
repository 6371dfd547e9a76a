"""What the project asks of a sweep: is the int8 speed-up target met, and is the harness's own
overhead small enough to trust the numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks.emulation import NOT_TIMED
from benchmarks.report.formatting import threads_text
from benchmarks.report.rows import Run, baselines, num

# The project's goal for the int8 LiteRT model against the FP32 Keras model, end to end.
TARGET_VARIANT = "tflite-int8"
TARGET_SPEEDUP = 4.0
TARGET_THREADS = (1, 2)
# Above this share of the fastest call, the harness's own cost distorts what it measures.
OVERHEAD_LIMIT_PCT = 2.0


def targets(run: Run) -> str:
    """One line per model and target thread count: the int8 e2e speed-up, met or missed."""
    if run.emulation:
        return f"Target: not checked ({NOT_TIMED})."
    cpu = run.cpu()
    lines = [
        f"Target: {TARGET_VARIANT} e2e p50 at least {TARGET_SPEEDUP:g}x faster than the FP32 "
        "Keras baseline at the same thread count.\n"
    ]
    for model in run.models():
        rows = [r for r in cpu if r["model"] == model]
        int8 = {r["threads"]: r for r in rows if r["variant"] == TARGET_VARIANT}
        base = baselines(rows)
        if not int8:
            lines.append(f"- {model}: no successful {TARGET_VARIANT} row; target not checked.")
            continue
        if not base:
            lines.append(f"- {model}: no FP32 Keras baseline row; target not checked.")
            continue
        for threads in TARGET_THREADS:
            lines.append(
                f"- {model}, {threads_text(threads)}: "
                + target_verdict(int8.get(threads), base.get(threads), threads)
            )
    return "\n".join(lines)


def target_verdict(
    int8: Mapping[str, Any] | None, base: Mapping[str, Any] | None, threads: int
) -> str:
    if int8 is None:
        return f"no successful {TARGET_VARIANT} row at {threads_text(threads)}; not checked."
    if base is None:
        return f"no baseline row at {threads_text(threads)}; not checked."
    if int8["e2e_p50"] is None or base["e2e_p50"] is None:
        return "e2e latency not recorded; not checked."
    speedup = base["e2e_p50"] / int8["e2e_p50"]
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "misses"
    return (
        f"{int8['e2e_p50']:.2f} ms vs baseline {base['e2e_p50']:.2f} ms = {speedup:.2f}x faster: "
        f"{verdict} the ≥ {TARGET_SPEEDUP:g}x target."
    )


def overhead(run: Run) -> str:
    """The harness's own p50 as a share of the fastest p50 measured in the run."""
    if run.emulation:
        return f"Harness overhead: not measured ({NOT_TIMED})."
    recorded = run.doc.get("harness_overhead_ms")
    p50 = num(recorded.get("p50")) if isinstance(recorded, Mapping) else None
    if p50 is None:
        return "Harness overhead: not recorded in this run."
    timed = [(r["fastest"], r) for r in run.ok if r["fastest"] is not None]
    if not timed:
        return f"Harness overhead: p50 {p50:.4f} ms; no successful timed row to compare it with."
    (fastest, batch), row = min(timed, key=lambda t: t[0][0])
    if fastest <= 0:
        return f"Harness overhead: p50 {p50:.4f} ms; the fastest p50 is not positive."
    pct = 100.0 * p50 / fastest
    verdict = (
        f"is under the {OVERHEAD_LIMIT_PCT:g}% limit"
        if pct < OVERHEAD_LIMIT_PCT
        else f"exceeds the {OVERHEAD_LIMIT_PCT:g}% limit, so the fastest latencies are inflated "
        "by the harness itself"
    )
    where = f"{row['model']} {row['variant']}, {threads_text(row['threads'])}, batch {batch}"
    return (
        f"Harness overhead: p50 {p50:.4f} ms = {pct:.2f}% of the fastest p50 in this run "
        f"({fastest:.2f} ms, {where}); it {verdict}."
    )
