#!/usr/bin/env python3
"""Side-by-side table (and plot) of two replay summaries: round-robin vs kvsteer.

Hit rates come from the backends' own prefix-cache counters (delta of vllm:prefix_cache_hits /
vllm:prefix_cache_queries scraped before and after each arm), never from routing. With --sim, the
simulator's hit rates on the same workload (kvsteer-sim --json: its servers' own counters) are
printed beside them, with the difference in points.
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


# The bar: kvsteer's real-path hit rate within this many points of the simulator's.
SIM_TOLERANCE_POINTS = 2.0
# Real-path arm -> the simulator policy it is compared with (keep-alive: the same policy, each
# request steered at its boundary instead of at its connection's first flight).
SIM_POLICY = {"round-robin": "rr", "kvsteer": "kvsteer", "kvsteer keep-alive": "kvsteer"}


def sim_comparison(arms, sim_path, sim_error):
    """The simulator block's figures: {"available": False, "reason"} or the hit rates and the
    differences (points, real minus simulator). Never raises on a bad or partial file."""
    if not sim_path:
        return {"available": False, "reason": sim_error or "the simulator was not run"}
    try:
        with open(sim_path) as f:
            sim = json.load(f)
        runs = {r["policy"]: r for r in sim["runs"]}
        hit = {p: float(runs[p]["hit_rate"]) for p in ("rr", "kvsteer")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {"available": False, "reason": f"cannot read the simulator's results {sim_path}: {e!r}"}
    out = {"available": True, "file": sim_path, "workload": sim.get("workload"),
           "config": sim.get("config"), "tolerance_points": SIM_TOLERANCE_POINTS,
           "hit_rate": hit, "requests": {p: runs[p].get("requests") for p in hit},
           "arms": {}}
    for arm, s in arms.items():
        real = s.get("prefix_cache_hit_rate")
        simv = hit[SIM_POLICY[arm]]
        out["arms"][arm] = {
            "sim_policy": SIM_POLICY[arm], "sim_hit_rate": simv, "real_hit_rate": real,
            "real_minus_sim_points": None if real is None else 100 * (real - simv),
            "real_requests": s.get("sent")}
    d = out["arms"]["kvsteer"]["real_minus_sim_points"]
    out["kvsteer_within_tolerance"] = None if d is None else abs(d) <= SIM_TOLERANCE_POINTS
    return out


def print_sim(cmp):
    print()
    if not cmp["available"]:
        print(f"simulator (same trace, same scale): comparison unavailable: {cmp['reason']}")
        return
    w = cmp.get("workload") or {}
    c = cmp.get("config") or {}
    print(f"simulator (same trace, same scale): kvsteer-sim, {w.get('requests', '?')} requests, "
          f"{c.get('servers', '?')} servers, speed {w.get('speed', '?')}, qps {w.get('qps', '?')}")
    head = "hit rate (servers' counters)"
    print(f"{head:<36}{'simulator':>11}{'real path':>11}{'real - sim':>15}")
    for arm, a in cmp["arms"].items():
        d = a["real_minus_sim_points"]
        label = arm if arm in ("round-robin", "kvsteer") else f"{arm} (sim: {a['sim_policy']})"
        print(f"{label:<36}{fmt_pct(a['sim_hit_rate']):>11}{fmt_pct(a['real_hit_rate']):>11}"
              + f"{'n/a' if d is None else f'{round(d, 2) + 0.0:+.2f} points':>15}")
    mism = [f"{arm}: {a['real_requests']} sent, simulator {cmp['requests'][a['sim_policy']]}"
            for arm, a in cmp["arms"].items() if a["real_requests"] != cmp["requests"][a["sim_policy"]]]
    if mism:
        print("note: the request counts differ (" + "; ".join(mism) + ")")
    d = cmp["arms"]["kvsteer"]["real_minus_sim_points"]
    tol = cmp["tolerance_points"]
    if d is None:
        print("kvsteer: no real-path hit rate (backend metrics missing): cannot compare")
    elif cmp["kvsteer_within_tolerance"]:
        print(f"kvsteer: the real path's hit rate is within {tol:g} points of the simulator's "
              f"({abs(d):.2f} points apart)")
    else:
        print(f"kvsteer: the real path's hit rate is NOT within {tol:g} points of the simulator's "
              f"({abs(d):.2f} points apart)")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("baseline", help="summary JSON of the round-robin arm")
    ap.add_argument("kvsteer", help="summary JSON of the prefix-steering arm")
    ap.add_argument("--keep-alive", help="summary JSON of the prefix-steering arm whose client "
                    "kept its connections alive (per-request steering)")
    ap.add_argument("--plot", help="write a PNG here")
    ap.add_argument("--json", help="write the combined figures here")
    ap.add_argument("--workload", default="", help="workload description for the title")
    ap.add_argument("--sim", help="kvsteer-sim --json output on the same workload (policies rr, kvsteer)")
    ap.add_argument("--sim-error", help="why there is no simulator output (printed instead)")
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

    sim = sim_comparison(arms, a.sim, a.sim_error)
    print_sim(sim)

    combined = {"workload": a.workload, "arms": arms, "simulator": sim}
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
        if sim["available"]:
            ax[0].scatter(names, [100 * sim["arms"][n]["sim_hit_rate"] for n in names], marker="_",
                          s=900, color="black", zorder=3, label="simulator")
            ax[0].legend(loc="best", fontsize=8)
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
