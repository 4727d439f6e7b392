#!/usr/bin/env python3
"""Side-by-side table (and plot) of two replay summaries: round-robin vs kvsteer.

Hit rates come from the backends' own prefix-cache counters (delta of vllm:prefix_cache_hits /
vllm:prefix_cache_queries scraped before and after each arm), never from routing.
"""
import argparse
import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"report: cannot read {path}: {e}")


def fmt_pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fmt_ms(x):
    return "n/a" if x is None or x < 0 else f"{1000 * x:.0f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("baseline", help="summary JSON of the round-robin arm")
    ap.add_argument("kvsteer", help="summary JSON of the prefix-steering arm")
    ap.add_argument("--keep-alive", help="summary JSON of the prefix-steering arm whose client "
                    "kept its connections alive (per-request steering)")
    ap.add_argument("--plot", help="write a PNG here")
    ap.add_argument("--json", help="write the combined figures here")
    ap.add_argument("--workload", default="", help="workload description for the title")
    a = ap.parse_args()
    arms = {"round-robin": load(a.baseline), "kvsteer": load(a.kvsteer)}
    if a.keep_alive:
        arms["kvsteer keep-alive"] = load(a.keep_alive)
    names = list(arms)

    rows = [
        ("requests ok / sent", lambda s: f"{s['ok']} / {s['sent']}"),
        ("prefix cache hit rate (backends' counters)", lambda s: fmt_pct(s.get("prefix_cache_hit_rate"))),
        ("requests/s", lambda s: f"{s['req_per_s']:.2f}"),
        ("input tokens/s", lambda s: f"{s['input_tokens_per_s']:.0f}"),
        ("TTFT p50", lambda s: fmt_ms(s.get("ttft_p50_s"))),
        ("TTFT p99", lambda s: fmt_ms(s.get("ttft_p99_s"))),
        ("E2E p50", lambda s: fmt_ms(s.get("e2e_p50_s"))),
    ]
    w0 = max(len(r[0]) for r in rows) + 2
    print()
    print(f"kvsteer demo — {a.workload}")
    print(f"{'':{w0}}" + "".join(f"{n:>20}" for n in names))
    for name, f in rows:
        print(f"{name:{w0}}" + "".join(f"{f(arms[n]):>20}" for n in names))

    # Per-server load and hit rate, as each server counted them.
    def per_server(s):
        out = {}
        for m in s.get("backend_metrics", []):
            host = m["url"].split("//", 1)[-1].split("/", 1)[0]
            out[host] = m
        return out

    per = {n: per_server(arms[n]) for n in names}
    hosts = sorted(set().union(*(set(p) for p in per.values())))
    short = {"round-robin": "rr", "kvsteer": "kv", "kvsteer keep-alive": "ka"}
    print()
    print(f"{'server':<22}" + "".join(f"{short[n] + ' queries':>12}{short[n] + ' hit':>9}" for n in names)
          + "   (prompt tokens looked up / hit rate)")
    for host in hosts:
        print(f"{host:<22}" + "".join(f"{per[n].get(host, {}).get('queries', 0):>12.0f}"
                                      f"{fmt_pct(per[n].get(host, {}).get('hit_rate')):>9}" for n in names))
    fails = {n: s["failed"] for n, s in arms.items() if s.get("failed")}
    if fails:
        print(f"\nfailed requests: {fails}")

    combined = {"workload": a.workload, "arms": arms}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(combined, f, indent=1)
    if a.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("report: matplotlib missing, no plot", file=sys.stderr)
            return
        fig, ax = plt.subplots(1, 3, figsize=(13, 4))
        colors = ["#999999", "#2a7ab9", "#5fa55a"][: len(names)]
        hit = [100 * (arms[n].get("prefix_cache_hit_rate") or 0) for n in names]
        ax[0].bar(names, hit, color=colors)
        ax[0].set_title("prefix cache hit rate (%)\ncounted by the servers")
        ttft = [[1000 * max(0, arms[n].get(k, 0)) for k in ("ttft_p50_s", "ttft_p99_s")] for n in names]
        x = range(2)
        wd = 0.8 / len(names)
        for j, n in enumerate(names):
            ax[1].bar([i - 0.4 + wd * (j + 0.5) for i in x], ttft[j], wd, label=n, color=colors[j])
        ax[1].set_xticks(list(x), ["p50", "p99"])
        ax[1].set_title("TTFT (ms, model time)")
        ax[1].legend()
        for j, n in enumerate(names):
            ax[2].bar([i - 0.4 + wd * (j + 0.5) for i in range(len(hosts))],
                      [per[n].get(h, {}).get("queries", 0) for h in hosts], wd, color=colors[j], label=n)
        ax[2].set_xticks(range(len(hosts)), [h.split(":")[0].split(".")[-1] for h in hosts])
        ax[2].set_title("prompt tokens per server")
        ax[2].legend()
        fig.suptitle(f"kvsteer vs round-robin — {a.workload}", fontsize=9)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)


if __name__ == "__main__":
    main()
