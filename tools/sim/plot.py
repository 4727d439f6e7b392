#!/usr/bin/env python3
"""Plot a kvsteer-sim --sweep JSON: hit rate, throughput and TTFT against the swept parameter."""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = [
    ("hit_rate", "token hit rate (servers' counters)", 100.0, "%"),
    ("req_per_s", "throughput", 1.0, "req/s"),
    ("ttft_p50_s", "TTFT p50", 1e3, "ms"),
    ("ttft_p99_s", "TTFT p99", 1e3, "ms"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("json", help="kvsteer-sim --json output of a --sweep run")
    ap.add_argument("png", help="image to write")
    ap.add_argument("--title", default="")
    ap.add_argument("--xlabel", default="")
    ap.add_argument("--logx", action="store_true")
    a = ap.parse_args()
    try:
        with open(a.json) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"plot.py: cannot read {a.json}: {e}")
    if "sweep" not in d:
        sys.exit(f"plot.py: {a.json} is not a --sweep run")
    param = d["sweep"]["param"]
    series = {}
    for r in d["runs"]:
        series.setdefault(r["policy"], []).append(r)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    for ax, (key, label, scale, unit) in zip(axes, METRICS):
        for pol, runs in series.items():
            runs = sorted(runs, key=lambda r: r["sweep_value"])
            xs = [r["sweep_value"] for r in runs]
            ys = [r[key] * scale for r in runs]
            style = "-o" if pol.startswith("kvsteer") else "--."
            ax.plot(xs, ys, style, label=pol, linewidth=2 if pol == "kvsteer" else 1)
        ax.set_title(label)
        ax.set_xlabel(a.xlabel or param)
        ax.set_ylabel(unit)
        if a.logx:
            ax.set_xscale("log", base=2)
        if key.startswith("ttft"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(a.title or f"{d['workload']['name']}: sweep over {param}", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.png, dpi=90)


if __name__ == "__main__":
    main()
