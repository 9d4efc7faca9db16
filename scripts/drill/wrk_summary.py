#!/usr/bin/env python3
"""wrk's output (run with --latency) as one JSON object: the rate, the
requests and non-2xx answers, the seconds, p50 and p99 in ms. Used by the
drill's baselines and by accept-ab.sh.

    python3 scripts/drill/wrk_summary.py WRK_OUTPUT [--only-2xx] [--cpu-ticks N]

--only-2xx: the rate counts 2xx answers only (the accept path).
--cpu-ticks N: the measured process' CPU ticks (1/100 s) over the run; adds
  `cpu_us_per_request`, per counted request.
"""
import argparse
import json
import re


def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def summary(text, only_2xx=False, cpu_ticks=None):
    def pct(p):
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return ms(*m.groups()) if m else None

    total = int(re.search(r"(\d+) requests in", text).group(1))
    secs = re.search(r"requests in ([\d.]+)(ms|s|m)", text)
    secs = float(secs.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[secs.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    bad = int(bad.group(1)) if bad else 0
    counted = total - bad if only_2xx else total
    out = {"per_sec": counted / secs, "requests": total, "non_2xx": bad, "seconds": secs,
           "p50_ms": pct(50), "p99_ms": pct(99)}
    if cpu_ticks is not None:
        out["cpu_us_per_request"] = cpu_ticks * 10000.0 / max(counted, 1)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--only-2xx", action="store_true")
    parser.add_argument("--cpu-ticks", type=float)
    args = parser.parse_args()
    with open(args.output) as f:
        print(json.dumps(summary(f.read(), args.only_2xx, args.cpu_ticks)))


if __name__ == "__main__":
    main()
