"""Stage 4: latency, throughput, memory, size and accuracy across artifacts, runtimes and
devices. Not built yet: see issue #4."""
