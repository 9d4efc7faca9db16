#!/usr/bin/env python3
"""Where a process' CPU goes, by area of the code: reads `perf script` output
of a recording with DWARF call stacks (`perf record --call-graph dwarf`) on
stdin and prints the share of samples per area.

Each sample is charged to the first frame, from the leaf up, that belongs to
an area (so kernel time and allocations land on the code that asked for
them); a sample with no such frame is "other". Also printed: the share of
samples whose leaf is in the kernel or in the allocator.

    perf script -i perf.data | python3 scripts/drill/profile_by_area.py
"""
import collections
import re
import sys

# In order: the first area whose pattern a frame matches is the frame's area.
AREAS = [
    ("tracing", r"tracing_opentelemetry|tracing_subscriber|tracing_core|opentelemetry"),
    ("metrics", r"metrics_exporter|metrics::|metrics_util"),
    ("jwt", r"jsonwebtoken|(?<![a-z])ring::|aws_lc"),
    ("rate limit", r"governor|rate_limit"),
    ("avro", r"apache_avro|schemas::codec"),
    ("serde_json", r"serde_json"),
    ("redis client", r"redis::|platform::redis|ingest::admission"),
    ("librdkafka", r"rd_kafka|rdkafka|LZ4|(?<![a-z_])rd_"),
    ("ingest handlers", r"ingest::"),
    ("hyper/axum", r"hyper::|axum|tower"),
    ("tokio", r"tokio::"),
]
# Areas that own every sample with one of their frames anywhere on the stack,
# whatever the leaf: receipts are signed by AWS-LC, whose field arithmetic
# at the leaf is the tokens' library too (jwt's HS256 is AWS-LC's as well).
OWNERS = [("receipts", r"ingest::receipts|ed25519_dalek|curve25519")]
ALLOCATOR = re.compile(r"(^|[^a-z])(mi_|_mi_|malloc|free|realloc)")


def frames(sample):
    return [re.sub(r"^\s*[0-9a-f]+\s+", "", line.strip()) for line in sample.strip().split("\n")[1:]]


def main():
    patterns = [(name, re.compile(pattern)) for name, pattern in AREAS]
    owners = [(name, re.compile(pattern)) for name, pattern in OWNERS]
    by_area = collections.Counter()
    total = kernel = allocator = 0
    for sample in sys.stdin.read().split("\n\n"):
        stack = frames(sample)
        if not stack:
            continue
        total += 1
        kernel += "[kernel.kallsyms]" in stack[0]
        allocator += bool(ALLOCATOR.search(stack[0].split(" ")[0]))
        area = next((name for name, p in owners if any(p.search(frame) for frame in stack)), None)
        area = area or next((name for frame in stack for name, p in patterns if p.search(frame)), "other")
        by_area[area] += 1
    if not total:
        sys.exit("no samples on stdin (perf script output of a DWARF recording expected)")
    print(f"{total} samples")
    for area, count in by_area.most_common():
        print(f"{area:16s} {100 * count / total:5.1f} %")
    print(f"{'(leaf in kernel)':16s} {100 * kernel / total:5.1f} %")
    print(f"{'(leaf in malloc)':16s} {100 * allocator / total:5.1f} %")


if __name__ == "__main__":
    main()
