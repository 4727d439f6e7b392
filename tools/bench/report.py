#!/usr/bin/env python3
"""Writes BENCH_DIR/REPORT.md (and PNG plots next to it) from results.json, meta.json and the raw
records the benchmark scripts leave under BENCH_DIR/{xdp,e2e,llm}/. Missing parts are skipped,
so a smoke run or a KVB_ONLY subset still gets a report. Plots need matplotlib (the system
python3-matplotlib); without it the report has tables only.

Usage: report.py BENCH_DIR
"""
import datetime
import glob
import json
import os
import platform
import re
import statistics
import sys

if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
    print(__doc__.strip())
    sys.exit(0)
out = sys.argv[1] if len(sys.argv) > 1 else "build/bench"
if not os.path.isdir(out):
    sys.exit(f"report.py: no benchmark directory {out} (run make bench first)")
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # tables only
    plt = None


def load(path, default=None):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return default


def jsonl(path):
    try:
        with open(path) as fh:
            return [json.loads(l) for l in fh if l.strip()]
    except OSError:
        return []


res = load(os.path.join(out, "results.json"), {})
meta = load(os.path.join(out, "meta.json"), {})
lines = []
w = lines.append
plots = []


def fmt(v, nd=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{nd}g}"
    return str(v)


def savefig(fig, name, caption):
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    plots.append(name)
    w(f"![{caption}]({name})\n")


# ---- header -------------------------------------------------------------------------------
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
mem_gb = 0
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem_gb = int(line.split()[1]) / 1024 / 1024
except OSError:
    pass
w(f"# kvsteer benchmark report ({meta.get('mode', '?')})\n")
w(f"- machine (every figure below ran here): {cpu}, {os.cpu_count()} CPUs, {mem_gb:.0f} GiB, "
  f"kernel {platform.release()}, virtual NICs only (veth in network namespaces)")
w(f"- run: {meta.get('start', '?')} -> {meta.get('end', '?')} ({meta.get('wall_s', '?')} s), git {meta.get('git', '?')}"
  + (f", subset: {meta['only']}" if meta.get("only") else ""))
w(f"- load average (1/5/15 min) at start: {meta.get('load_start', '?')}, at end: {meta.get('load_end', '?')} "
  f"(the machine is shared; a load well above 0 means other work competed for its {os.cpu_count()} CPUs)")
w(f"- raw records: `xdp/`, `e2e/`, `llm/` next to this file; all figures: `results.json`\n")

# ---- 1. packet path -----------------------------------------------------------------------
live_all = [json.loads(l)["r"] for l in open(os.path.join(out, "xdp", "live.jsonl"))] if os.path.exists(
    os.path.join(out, "xdp", "live.jsonl")) else []
live = [r for r in live_all if r["mode"] == "live"]
floor = [r for r in live_all if r["mode"] == "live-floor"]
testrun = jsonl(os.path.join(out, "xdp", "testrun.jsonl"))
WIRE_OVERHEAD = 4 + 20  # FCS + preamble/SFD + inter-frame gap
SPEEDS = (10, 25, 100)


def line_rate_mpps(gbps, frame):
    return gbps * 1e9 / ((max(frame, 60) + WIRE_OVERHEAD) * 8) / 1e6


w("## 1. Packet path: established flows through the XDP program\n")
w("How: `kvsteer-xdp-live` loads the appliance's XDP program (`kvsteer.bpf.o`, private maps), installs "
  "established-flow entries in its LRU flow map and injects real frames with `BPF_PROG_TEST_RUN` + "
  "`BPF_F_TEST_XDP_LIVE_FRAMES` (batch 64) as if they were received on a veth. The program rewrites them "
  "(addresses, ports, seq/ack deltas, timestamps, window, checksums) and returns XDP_TX, so they leave by "
  "that veth; its peer runs a counting XDP program that drops them. **Mpps is counted at the receiving "
  "peer**; the program's own forward counters agree (lost = forwarded - received). The injecting core also "
  "does the peer's receive (veth delivers on the sending CPU), so a per-core figure is a lower bound for a "
  "NIC that receives on its own. Frame sizes are without FCS: 1514 B = full-size data segment (MSS 1448 + "
  "timestamps), 66 B = pure ACK with timestamps, the two packets an established LLM stream consists of "
  "(response data backend->client = s2c, ACKs client->backend = c2s).\n")
if live:
    cells = {}
    for r in live:
        cells.setdefault((r["dir"], r["size"], r["flows"], r["cpus"]), []).append(r)
    w("| direction | frame | flows | cores | Mpps received (median) | per core | min..max | lost frames | "
      + " | ".join(f"1 core vs {g} GbE line rate" for g in SPEEDS) + " |")
    w("|---|---|---|---|---|---|---|---|" + "---|" * len(SPEEDS))
    for (d, size, flows, n), rs in sorted(cells.items(), key=lambda kv: (kv[0][2], -kv[0][1], kv[0][0], kv[0][3])):
        rx = [r["mpps_received"] for r in rs]
        m = statistics.median(rx)
        lost = sum(r["forwarded_xdp"] - r["received_peer"] for r in rs)
        frac = " | ".join(f"{100 * (m / n) / line_rate_mpps(g, size):.0f}%" for g in SPEEDS)
        w(f"| {d} | {size} B | {flows:,} | {n} | {m:.2f} | {m / n:.2f} | {min(rx):.2f}..{max(rx):.2f} | {lost} | {frac} |")
    w("")
    if floor:
        fc = {}
        for r in floor:
            fc.setdefault((r["dir"], r["size"], r["cpus"]), []).append(r["mpps_received"])
        w("The rig's floor, the same injection through a do-nothing XDP_TX program (what injector, veth and the "
          "counting peer cost without kvsteer): " + "; ".join(
            f"{d} {s_} B {n} core(s) {statistics.median(v):.2f} Mpps" for (d, s_, n), v in sorted(fc.items())) +
          ". Where kvsteer comes close to it, the figure above is bounded by the rig, not the program; the "
          "kernel-timed test-run cost below is the program's own.\n")
    w("Line rate (Mpps) at these frame sizes (+4 B FCS +20 B preamble/gap on the wire): "
      + "; ".join(f"{size} B: " + ", ".join(f"{g} GbE {line_rate_mpps(g, size):.2f}" for g in SPEEDS)
                  for size in sorted({r['size'] for r in live}, reverse=True)) + ". "
      "Cores for line rate = line-rate Mpps / per-core Mpps:\n")
    one = {(d, s): statistics.median([r["mpps_received"] for r in rs]) for (d, s, fl, n), rs in cells.items() if n == 1 and fl == 1}
    if one:
        w("| direction, frame | " + " | ".join(f"cores for {g} GbE" for g in SPEEDS) + " |")
        w("|---|" + "---|" * len(SPEEDS))
        for (d, s), m in sorted(one.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
            w(f"| {d} {s} B | " + " | ".join(f"{line_rate_mpps(g, s) / m:.1f}" if m > 0 else "–" for g in SPEEDS) + " |")
        w("")
    # The program's own cost (test-run, no transmit) bounds what a core could do with a NIC whose
    # receive/transmit cost less than this rig's veth path; the rewrite touches headers only, so the
    # cost does not depend on the frame size.
    prog = {}
    for r in testrun:
        if r["all_forwarded"] and r["flows"] in (1, 1000000) and r.get("family", 4) == 4:
            prog[(r["dir"], r["flows"])] = r["ns_per_pkt"]
    if prog:
        w("Program-only bound (kernel-timed test-run ns/packet below, no receive/transmit cost): cores needed for "
          "line rate if the NIC path cost nothing:\n")
        w("| direction, flows in table | ns/packet | Mpps/core | " + " | ".join(
            f"cores for {g} GbE at {sz} B" for sz in (1514, 66) for g in SPEEDS) + " |")
        w("|---|---|---|" + "---|" * (2 * len(SPEEDS)))
        for (d, fl), ns in sorted(prog.items()):
            mpps = 1000 / ns
            w(f"| {d}, {fl:,} | {ns:.0f} | {mpps:.1f} | " + " | ".join(
                f"{line_rate_mpps(g, sz) / mpps:.2f}" for sz in (1514, 66) for g in SPEEDS) + " |")
        w("")
    if plt:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for (d, s, fl) in sorted({(k[0], k[1], k[2]) for k in cells}):
            ns = sorted({k[3] for k in cells if k[:3] == (d, s, fl)})
            ax.plot(ns, [statistics.median([r["mpps_received"] for r in cells[(d, s, fl, n)]]) for n in ns], "o-",
                    label=f"{d} {s} B, {fl:,} flow(s)")
        ax.set_xlabel("cores injecting + forwarding")
        ax.set_ylabel("Mpps received at peer")
        ax.set_xticks(sorted({k[3] for k in cells}))
        ax.set_title("XDP established-flow forwarding (live frames)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        savefig(fig, "xdp_cores.png", "XDP forwarding vs cores")
else:
    w("_not run_\n")
w("Kernel-timed cost of one packet (`BPF_PROG_TEST_RUN` repeat, no transmit), from kvsteer-bpf-bench: "
  + ", ".join(f"{k} = {fmt(res[k])} ns (~{1000 / res[k]:.1f} Mpps per core)" for k in
              ("xdp_fastpath_c2s_ns", "xdp_fastpath_s2c_ns", "xdp_fastpath_c2s_v6_ns", "xdp_fastpath_s2c_v6_ns",
               "xdp_syncookie_ns", "xdp_punt_ns", "xdp_pass_floor_ns")
              if k in res and res[k] > 0) + ".\n")
v6 = [(k, k.replace("_ns", "_v6_ns")) for k in ("xdp_fastpath_c2s_ns", "xdp_fastpath_s2c_ns")]
v6 = [(a, b) for a, b in v6 if res.get(a, 0) > 0 and res.get(b, 0) > 0]
if v6 or "dp_bind_v6_vs_v4_ratio" in res:
    parts = [f"{b} {res[b] / res[a]:.2f}x {a}" for a, b in v6]
    for k in ("dp_bind_v6_vs_v4_ratio", "dp_bind_xdp_v6_vs_v4_ratio"):
        if k in res:
            parts.append(f"{k} = {fmt(res[k])}")
    w("IPv6 beside IPv4 (target: within 10%): " + ", ".join(parts) + ".\n")
if "xdp_fleet_redirect_ns" in res or "fleet_scaleout_sends_on_per_client_packet" in res:
    parts = []
    if "xdp_fleet_redirect_ns" in res:
        parts.append(f"one send-on between appliances (second chance) {fmt(res['xdp_fleet_redirect_ns'])} ns")
    if "fleet_scaleout_sends_on_per_client_packet" in res:
        parts.append(f"during a 1 -> 2 -> 3 -> 2 scale-out under {fmt(res.get('fleet_scaleout_streams'))} streams: "
                     f"{fmt(res['fleet_scaleout_sends_on_per_client_packet'])} sends-on per client packet, "
                     f"{fmt(res.get('fleet_scaleout_streams_broken'))} streams broken")
    w("Fleet: " + "; ".join(parts) + ".\n")

# ---- 2. e2e vs HAProxy ---------------------------------------------------------------------
w("## 2. Requests: kvsteer vs HAProxy 2.6 (L7, hash on the body prefix)\n")
e2e = load(os.path.join(out, "e2e", "summary.json"))
if e2e:
    w(f"Setup: {e2e['backends']} kvsteer-gpu-emu backends (time scale 1000: the model costs ~30 us), client wrk "
      f"(1 thread) and backends on CPU(s) {e2e['load_cpus']}; the balancer pinned with taskset to CPU {e2e['balancer_cpu']}: "
      f"kvsteer = kvsteer-dataplane (1 lcore on that CPU, af_xdp, `--idle adaptive`) + kvsteerd, XDP program on the "
      f"appliance veth; HAProxy {e2e['haproxy_version']} `nbthread 1`, `mode http`, `option http-buffer-request`, "
      f"`balance hash req.body,bytes(0,{e2e['haproxy_hash_bytes']})`, `hash-type consistent`, in its own namespace on "
      f"the same bridge. Same-prefix -> same-server check (8 prefixes x 3 different tails): HAProxy "
      f"{'passed' if res.get('haproxy_hash_same_prefix_same_server') else 'FAILED'} "
      f"({fmt(res.get('haproxy_hash_servers_used_by_8_prefixes'))} servers used), kvsteer "
      f"{'passed' if res.get('e2e_same_prefix_same_server') else 'FAILED'} "
      f"({fmt(res.get('e2e_servers_used_by_8_prefixes'))} servers used).\n")
    w("Workloads: **close** 512 B chat bodies, one request per connection (16 connections) = new connections/s; "
      "**keepalive** the same on 16 kept-alive connections (both steer every request: kvsteer moved "
      f"{fmt(100 * res['e2e_keepalive_moved_fraction']) + '%' if isinstance(res.get('e2e_keepalive_moved_fraction'), (int, float)) else 'some'} "
      "of them to another backend, onto backend connections earlier requests left when it had one, "
      "HAProxy hashes each onto its reused server connections); "
      "**latency** one connection at a time, one request each; **large** 16 KB bodies with 2 MB streamed "
      "responses, one per connection (4 connections). wrk's latency runs from writing the request to the last "
      "response byte (connect time excluded for every arm). Arms alternate within each repetition (the first arm "
      "rotates); medians over repetitions, min..max in brackets.\n")
    w("CPU accounting, per 1,000 requests: **balancer CPU** = utime+stime from /proc/PID/stat of the balancer's "
      "processes (kvsteer-dataplane + kvsteerd; haproxy). **Its CPU busy** = everything that ran on the balancer's "
      "pinned CPU (elapsed minus /proc/stat's idle, which the kernel keeps exactly): its processes and the kernel's "
      "work there. That includes the transmit half of what each balancer sends: HAProxy's sends are passed through "
      "the bridge into the receiver's TCP stack inside its own system calls (in its process time); kvsteer's frames "
      "(XDP_TX and AF_XDP) wait in the NAPI ring of the veth peer, whose thread the benchmark pins to the same CPU "
      "(not in the dataplane's process time). So *its CPU busy* is the like-for-like figure; process time flatters "
      "kvsteer on this rig. On a NIC the transmit half and the receivers' stacks leave the appliance. What lands on "
      "the *sender's* CPU (veth delivers there: the XDP program, each balancer's TCP receive path) is in neither. "
      "**Machine marginal CPU** = busy time of all CPUs (elapsed x CPUs minus idle) minus the same for the direct "
      "arm: everything the balancer adds anywhere. Other load on the machine lands in it too.\n")
    cells = e2e["cells"]
    w("| workload | arm | req/s [min..max] | p50 us | p99 us | added p50 us | added p99 us | balancer CPU s/1k req | its CPU busy s/1k req | machine marginal CPU s/1k req | errors |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for wl in ("close", "keepalive", "latency", "large"):
        for arm in ("direct", "kvsteer", "kvsteer_busy", "haproxy"):
            c = cells.get(f"{wl}/{arm}")
            if not c:
                continue
            w(f"| {wl} | {arm} | {c['req_per_s']:,.0f} [{c['req_per_s_min']:,.0f}..{c['req_per_s_max']:,.0f}] | "
              f"{c['lat_p50_us']:,.0f} | {c['lat_p99_us']:,.0f} | {fmt(c.get('added_p50_us'))} | {fmt(c.get('added_p99_us'))} | "
              f"{fmt(c['app_cpu_s_per_1k']) if arm != 'direct' else '–'} | {fmt(c.get('lb_busy_s_per_1k'))} | "
              f"{fmt(c.get('marginal_cpu_s_per_1k'))} | {c['errors']} |")
    w("")
    cyc = [(arm, cells[f"latency/{arm}"]) for arm in ("direct", "kvsteer", "kvsteer_busy", "haproxy") if f"latency/{arm}" in cells]
    if cyc and all(c.get("cycle_us") == c.get("cycle_us") and c.get("cycle_us") is not None for _, c in cyc):
        w("wrk's latency leaves out connect and close. Whole cycle per connection in the latency workload (1 / req/s, one "
          "connection at a time: connect + request + response + close), median over repetitions: " + ", ".join(
            f"{arm} {c['cycle_us']:,.0f} us" + (f" (+{c['added_cycle_us']:,.0f})" if c.get("added_cycle_us") is not None else "")
            for arm, c in cyc) + ". A cycle much longer than p50 means some connections stalled outside the request, "
          "e.g. a lost SYN-ACK (1 s SYN retransmission) or a first flight retransmitted while binding.\n")
    if "large/kvsteer" in cells:
        w("Large workload throughput (response bytes, Gbit/s): " + ", ".join(
            f"{arm} {cells[f'large/{arm}']['gbit_per_s']:.2f}" for arm in ("direct", "kvsteer", "kvsteer_busy", "haproxy") if f"large/{arm}" in cells) + ".\n")
        drops = cells["large/kvsteer"].get("veth_xdp_tx_errors", 0)
        if drops:
            w(f"In the kvsteer arm the appliance veth dropped {drops:,} XDP_TX frames in the large workload: its peer's "
              "ring (256 frames) filled while the NAPI thread that empties it, pinned to the balancer's CPU, also ran the "
              "client's TCP receive; the backend's retransmissions make the tail (tools/bench/README.md, \"CPU "
              "accounting\"). A NIC's transmit ring is not emptied by the appliance's CPU.\n")
    # Delivery to the dataplane: everything XDP redirected to the AF_XDP socket (its punt_* counters,
    # cumulative in the pinned map over the whole run) against what the dataplane's port received
    # (one "dataplane port" line per dataplane instance, logged when it stopped). The dataplane's
    # own punt_first_flight counts flows, XDP's counts segments: they are not comparable.
    sect, cur, port_rx, port_missed = {}, None, 0, 0
    try:
        text = open(os.path.join(out, "e2e", "counters.txt")).read()
        for m in re.finditer(r"^== dataplane port \d+: rx (\d+) missed (\d+)", text, re.M):
            port_rx += int(m.group(1))
            port_missed += int(m.group(2))
        for line in text.split("== after dataplane")[-1].splitlines():
            if line.endswith(":") and not line.startswith(" "):
                cur = sect.setdefault(line[:-1], {})
            elif cur is not None and len(line.split()) == 2 and line.split()[1].isdigit():
                cur[line.split()[0]] = int(line.split()[1])
    except OSError:
        pass
    xdp_c = sect.get("xdp", {})
    punted = sum(v for k, v in xdp_c.items() if k.startswith("punt_") and k != "punt_no_xsk")
    if punted and port_rx:
        lost = punted - port_rx
        w(f"**Delivery to the dataplane**: XDP redirected {punted:,} frames to the AF_XDP socket over the run, the "
          f"dataplane's port received {port_rx:,} ({port_missed:,} counted missed by the PMD)"
          + (f": {lost:,} ({100 * lost / punted:.2f}%) never arrived (AF_XDP RX ring full)." if lost > 0 else
             ": none lost.") + "\n")
    reused = xdp_c.get("flow_reused_by_syn", 0)
    if reused:
        w(f"Clients reopened {reused:,} connections on a 4-tuple whose previous connection had just closed (its flow "
          "entries still lingering): XDP deleted the old entries and answered the SYN with a cookie.\n")
    kc = e2e.get("kvsteer_counters", {})
    if kc:
        binds = kc.get("dp_bind_ok", 0)
        tmo = kc.get("dp_backend_timeout", 0)
        other = kc.get("punt_backend_other", 0)
        w(f"kvsteer's own counters over the whole e2e run (both kvsteer arms and warm-ups): {binds:,} flows bound, "
          f"{tmo:,} backend SYN timeouts ({100 * tmo / max(1, binds):.1f}% of binds, each costs "
          f"`--backend-syn-timeout-ms` 300 ms before a retry), {other:,} backend answers to our SYN that were not a "
          f"SYN-ACK, {kc.get('dp_dup_segment', 0):,} retransmitted first segments absorbed while binding, "
          f"{kc.get('dp_snat_ports_exhausted', 0):,} SNAT-port exhaustions. "
          + ("Timeouts follow non-SYN-ACK answers: the backend still held the SNAT 4-tuple in TIME_WAIT "
             "(backends close first on `Connection: close`) and answered our SYN with a challenge ACK. " if tmo else "")
          + ("The backends answered our SYN with something other than a SYN-ACK (a TIME_WAIT challenge ACK) and the "
             "dataplane recovered without a SYN timeout (RST + new SYN at once). " if other and not tmo else "")
          + "Between arms that restart the dataplane (adaptive <-> busy) the benchmark clears the backends' TIME_WAIT "
            "entries towards the appliance (`ss -K`), so every arm starts from the same state.\n")
    goal = []
    for p, label in (("e2e", "kvsteer (adaptive idle)"), ("e2e_pool", "kvsteer (adaptive idle, backend pool)"),
                     ("e2e_busy", "kvsteer (busy poll)")):
        parts = []
        r = res.get(f"{p}_vs_haproxy_req_per_balancer_cpu_s_ratio")
        if r is not None:
            parts.append(f"requests per balancer process CPU-second {r:.2f}x HAProxy's (goal >= 3x)")
        r = res.get(f"{p}_vs_haproxy_req_per_balancer_cpu_busy_s_ratio")
        if r is not None:
            parts.append(f"per second of its CPU busy (like for like) {r:.2f}x")
        r = res.get(f"{p}_vs_haproxy_req_per_marginal_cpu_s_ratio")
        if r is not None:
            parts.append(f"per machine-marginal CPU-second {r:.2f}x")
        r = res.get(f"{p}_vs_haproxy_conn_per_s_ratio")
        if r is not None:
            parts.append(f"new connections/s {r:.2f}x")
        a, b = res.get(f"{p}_added_latency_p50_us"), res.get("haproxy_added_latency_p50_us")
        if a is not None and b:
            parts.append(f"added p50 latency {a:.0f} vs {b:.0f} us = {a / b:.2f} of HAProxy's (goal <= 0.2)")
        a, b = res.get(f"{p}_wire_added_p50_us"), res.get("haproxy_wire_added_p50_us")
        if a is not None and b:
            parts.append(f"on the wire {a:.0f} vs {b:.0f} us = {a / b:.2f} (request path "
                         f"{res.get(f'{p}_wire_req_path_p50_us', float('nan')):.0f} us, response path "
                         f"{res.get(f'{p}_wire_resp_path_p50_us', float('nan')):.0f} us)")
        a, b = res.get(f"{p}_wire_ka_added_p50_us"), res.get("haproxy_wire_ka_added_p50_us")
        if a is not None and b:
            parts.append(f"on a kept-alive connection {a:.0f} vs {b:.0f} us = {a / b:.2f}")
        if parts:
            goal.append(f"**{label}**: " + "; ".join(parts))
    if goal:
        w("Against the goals (close workload for CPU and connections, latency workload for latency):\n")
        for g_ in goal:
            w(f"- {g_}")
        w("")
    if plt:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
        wls = [wl for wl in ("close", "keepalive", "large") if f"{wl}/kvsteer" in cells]
        arms = [a for a in ("direct", "kvsteer", "kvsteer_busy", "haproxy") if any(f"{wl}/{a}" in cells for wl in wls)]
        bw = 0.8 / max(1, len(arms))
        for j, arm in enumerate(arms):
            xs = [i + (j - (len(arms) - 1) / 2) * bw for i in range(len(wls))]
            ys = [cells.get(f"{wl}/{arm}", {}).get("req_per_s", 0) for wl in wls]
            lo = [y - cells.get(f"{wl}/{arm}", {}).get("req_per_s_min", y) for wl, y in zip(wls, ys)]
            hi = [cells.get(f"{wl}/{arm}", {}).get("req_per_s_max", y) - y for wl, y in zip(wls, ys)]
            axes[0].bar(xs, ys, bw, yerr=[lo, hi], label=arm, color=f"C{j}")
        axes[0].set_xticks(range(len(wls)))
        axes[0].set_xticklabels(wls)
        axes[0].set_ylabel("requests/s")
        axes[0].set_yscale("log")
        axes[0].legend(fontsize=7)
        axes[0].set_title("throughput")
        lb = [a for a in arms if a != "direct"]
        for j, arm in enumerate(lb):
            c = cells.get(f"latency/{arm}", {})
            col = f"C{arms.index(arm)}"
            axes[1].bar([j - 0.2], [c.get("added_p50_us", 0)], 0.4, color=col, label=f"{arm} p50")
            axes[1].bar([j + 0.2], [c.get("added_p99_us", 0)], 0.4, color=col, alpha=0.5, label=f"{arm} p99")
        axes[1].set_xticks(range(len(lb)))
        axes[1].set_xticklabels(lb, fontsize=7)
        axes[1].set_yscale("symlog")
        axes[1].set_ylabel("added latency vs direct (us)")
        axes[1].set_title("added latency (1 conn, close)")
        axes[1].legend(fontsize=7)
        bw2 = 0.8 / max(1, len(lb))
        for j, arm in enumerate(lb):
            ys = [cells.get(f"{wl}/{arm}", {}).get("app_cpu_s_per_1k", 0) for wl in wls]
            ms = [max(0, cells.get(f"{wl}/{arm}", {}).get("marginal_cpu_s_per_1k", 0)) for wl in wls]
            xs = [i + (j - (len(lb) - 1) / 2) * bw2 for i in range(len(wls))]
            col = f"C{arms.index(arm)}"
            axes[2].bar(xs, ms, bw2, color=col, alpha=0.35, label=f"{arm} machine marginal")
            axes[2].bar(xs, ys, bw2 / 2, color=col, label=f"{arm} balancer procs")
        axes[2].set_xticks(range(len(wls)))
        axes[2].set_xticklabels(wls)
        axes[2].set_ylabel("CPU s per 1,000 requests")
        axes[2].set_yscale("log")
        axes[2].set_title("CPU cost")
        axes[2].legend(fontsize=6)
        savefig(fig, "e2e.png", "kvsteer vs HAProxy: throughput, added latency, CPU")
else:
    w("_not run_\n")

# ---- 3. LLM level ----------------------------------------------------------------------------
w("## 3. LLM level: prefix steering vs round-robin through the real packet path\n")
llm = load(os.path.join(out, "llm", "summary.json"))
if llm:
    if res.get("llm_trace_workload", 1):
        llm_wl = (f"the Mooncake synthetic trace's first {fmt(res.get('llm_requests_per_arm'))} requests replayed "
                  f"at their recorded times (`--speed 1`)")
    else:
        llm_wl = (f"{fmt(res.get('llm_requests_per_arm'))} requests of SGLang's generated shared-prefix shape "
                  f"(16 groups x 16 prompts, a 2,048-token system prompt, 8 req/s: no trace was found)")
    w(f"{fmt(res.get('llm_backends'))} kvsteer-gpu-emu servers (calibrated H200 8B cost model, 430k-token prefix "
      f"cache each), {llm_wl} by kvsteer-replay through the appliance (XDP + dataplane + kvsteerd) with emulators and "
      f"replayer at time scale {fmt(res.get('llm_time_scale'))}; arms alternate, each on fresh servers (empty caches) "
      f"and a fresh appliance. Hit rate = delta `vllm:prefix_cache_hits_total` / delta "
      f"`vllm:prefix_cache_queries_total` summed over the servers (their own counters). TTFT in model seconds "
      f"(wall x time scale).\n")
    if res.get("llm_oracle_hit_rate_bound") is not None:
        w(f"For scale: one unlimited cache seeing every replayed request (longest prefix of 512-token blocks seen "
          f"before, computed from the trace's hash ids) would reach a hit rate of "
          f"**{res['llm_oracle_hit_rate_bound']:.3f}** on these requests: the most any routing can get from this "
          f"part of the trace.\n")
    w("| arm | runs | hit rate | req/s | TTFT p50 s | TTFT p99 s | E2E p50 s | failed |")
    w("|---|---|---|---|---|---|---|---|")
    for arm, p in (("round-robin", "llm_rr"), ("prefix", "llm_prefix")):
        ds = llm.get(arm)
        if not ds:
            continue

        def rng(k, nd=3):
            xs = [d[k] for d in ds if d.get(k) is not None]
            if not xs:
                return "–"
            m = statistics.median(xs)
            return f"{m:.{nd}f}" + (f" [{min(xs):.{nd}f}..{max(xs):.{nd}f}]" if len(xs) > 1 else "")

        w(f"| {arm} | {len(ds)} | {rng('prefix_cache_hit_rate')} | {rng('req_per_s', 2)} | {rng('ttft_p50_s')} | "
          f"{rng('ttft_p99_s')} | {rng('e2e_p50_s')} | {sum(d.get('failed', 0) for d in ds)} |")
    w("")
    if plt:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for arm, color in (("round-robin", "C0"), ("prefix", "C1")):
            files = sorted(glob.glob(os.path.join(out, "llm", f"{arm}.*.requests.jsonl")))
            for k, path in enumerate(files):
                t = sorted(r["ttft_s"] for r in jsonl(path) if r.get("ok") and r.get("ttft_s", -1) >= 0)
                if t:
                    axes[0].plot(t, [(i + 1) / len(t) for i in range(len(t))], color=color, alpha=0.8,
                                 label=arm if k == 0 else None)
        axes[0].set_xscale("log")
        axes[0].set_xlabel("TTFT (model s)")
        axes[0].set_ylabel("CDF")
        axes[0].legend()
        axes[0].set_title("TTFT distribution (every repetition)")
        arms = [a for a in ("round-robin", "prefix") if llm.get(a)]
        hr = [statistics.median([d["prefix_cache_hit_rate"] for d in llm[a] if d.get("prefix_cache_hit_rate") is not None] or [0]) for a in arms]
        axes[1].bar(arms, hr, color=["C0", "C1"][: len(arms)])
        if res.get("llm_oracle_hit_rate_bound") is not None:
            axes[1].axhline(res["llm_oracle_hit_rate_bound"], color="k", ls="--", lw=1, label="unlimited-cache bound")
            axes[1].legend(fontsize=7)
        axes[1].set_ylim(0, max(0.3, 1.3 * max(hr + [res.get("llm_oracle_hit_rate_bound") or 0])))
        axes[1].set_ylabel("backend-counted prefix cache hit rate")
        axes[1].set_title("hit rate")
        savefig(fig, "llm.png", "LLM level: TTFT CDF and hit rate")
else:
    w("_not run_\n")

# ---- 3b. saturated, closed loop ---------------------------------------------------------------
w("## 3b. Saturated, closed loop: the founding experiment through the real packet path\n")
sat_wls = [wl for wl in ("shared", "mooncake") if f"sat_{wl}_rr_req_per_s" in res]
if sat_wls:
    w(f"`saturation_bench.sh`: {fmt(res.get('sat_backends'))} kvsteer-gpu-emu servers, "
      f"{fmt(res.get('sat_concurrency'))} requests in flight at all times (closed loop: req/s is what the "
      f"routing lets the servers do), time scale {fmt(res.get('sat_time_scale'))}, "
      f"{fmt(res.get('sat_reps'))} repetition(s) with the arms' order rotated, fresh servers for every arm; "
      f"medians. `shared`: {fmt(res.get('sat_shared_groups'))} groups x {fmt(res.get('sat_shared_per_group'))} "
      f"requests sharing a {fmt(res.get('sat_shared_system_tokens'))}-token system prompt (at the full run's 128 x 8 "
      f"and 4,096 tokens the groups' prefixes overflow one server's cache, not the fleet's); `mooncake`: the "
      f"demo's Mooncake trace's first {fmt(res.get('sat_mooncake_requests'))} requests, timestamps "
      f"ignored. HAProxy hashes the body's first bytes (`balance hash req.body`, consistent).\n")
    w("| workload | arm | hit rate | req/s | vs round-robin | vs HAProxy | TTFT p50 s | TTFT p99 s | failed |")
    w("|---|---|---|---|---|---|---|---|---|")
    for wl in sat_wls:
        for arm in ("rr", "kvsteer", "kvsteer_keepalive", "haproxy"):
            p = f"sat_{wl}_{arm}"
            if f"{p}_req_per_s" not in res:
                continue
            g = res.get(f"{p}_req_gain_over_rr")
            h = res.get(f"{p}_over_haproxy_req_ratio")
            w(f"| {wl} | {arm} | {fmt(res.get(f'{p}_hit_rate'))} | {fmt(res.get(f'{p}_req_per_s'))} | "
              f"{'–' if g is None else f'{100 * g:+.1f}%'} | {'–' if h is None else f'{h:.3f}x'} | "
              f"{fmt(res.get(f'{p}_ttft_p50_s'))} | {fmt(res.get(f'{p}_ttft_p99_s'))} | {fmt(res.get(f'{p}_failed'))} |")
    w("")
    for wl in sat_wls:
        g = res.get(f"sat_{wl}_kvsteer_req_gain_over_rr")
        h = res.get(f"sat_{wl}_kvsteer_over_haproxy_req_ratio")
        if g is None:
            continue
        w(f"- {wl}: kvsteer's req/s gain over round-robin is {100 * g:+.1f}% (target >= +22% where requests "
          f"share prefixes: {'met' if g >= 0.22 else 'not met'})"
          + ("" if h is None else f"; {h:.3f}x HAProxy's (target > 1: {'met' if h > 1 else 'not met'})") + ".")
    w("")
else:
    w("_not run_\n")

# ---- 4. scaling ----------------------------------------------------------------------------
w("## 4. Scaling\n")
w("**Cores**: section 1 (XDP live, 1..N injecting cores; on this 2-CPU machine 2 cores also carry everything "
  "else). The end-to-end and LLM runs use one balancer core and one dataplane worker: on veth with DPDK 22.11 no "
  "end-to-end path with several AF_XDP workers exists (dataplane/README.md, \"Several workers end to end\"); the "
  "binding with 1..N workers in one process is in section 5 (`dp_bind_scaling_w*`, `dp_bind_dpdk_scaling_w*`).\n")
if testrun:
    w("**Flows in the table** (kernel-timed ns/packet, 66 B ACK/data on an established flow, the packet walking a random "
      "cycle through every flow of the LRU map, so lookups miss the caches as real traffic of many flows would):\n")
    w("| flows | c2s ns/packet | s2c ns/packet | c2s IPv6 | s2c IPv6 | c2s Mpps/core equivalent |")
    w("|---|---|---|---|---|---|")
    by = {}
    for r in testrun:
        if r["all_forwarded"]:
            v6 = "_v6" if r.get("family", 4) == 6 else ""
            by.setdefault(r["flows"], {})[r["dir"] + v6] = r["ns_per_pkt"]
    for fl in sorted(by):
        c = by[fl].get("c2s")
        w(f"| {fl:,} | {fmt(c)} | {fmt(by[fl].get('s2c'))} | {fmt(by[fl].get('c2s_v6'))} | "
          f"{fmt(by[fl].get('s2c_v6'))} | {fmt(1000 / c) if c else '–'} |")
    w("")
    if plt and by:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for d in ("c2s", "s2c", "c2s_v6", "s2c_v6"):
            xs = [fl for fl in sorted(by) if d in by[fl]]
            ax.plot(xs, [by[fl][d] for fl in xs], "o-", label=d)
        ax.set_xscale("log")
        ax.set_xlabel("established flows in the LRU flow map")
        ax.set_ylabel("ns / packet (test-run)")
        ax.set_title("XDP forwarding cost vs flow-table size")
        ax.grid(alpha=0.3)
        ax.legend()
        savefig(fig, "xdp_flows.png", "XDP cost vs flows")
sc = sorted({int(k.rsplit("_", 1)[1][:-2]) for k in res if k.startswith("scale_maglev_build_ms_")})
if sc:
    w("**Backends** (kvsteer-scale-bench, one core): Maglev table build (65,537 slots; what kvsteerd pays per membership/"
      "weight change), rendezvous table build (the lower-disruption alternative), bounded-load choice per new flow:\n")
    w("| backends | Maglev build ms | rendezvous build ms | bounded choice ns |")
    w("|---|---|---|---|")
    for n in sc:
        w(f"| {n} | {fmt(res.get(f'scale_maglev_build_ms_{n}be'))} | {fmt(res.get(f'scale_rendezvous_build_ms_{n}be'))} | "
          f"{fmt(res.get(f'scale_bounded_choice_ns_{n}be'))} |")
    w("")
    if plt:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(sc, [res.get(f"scale_maglev_build_ms_{n}be") for n in sc], "o-", label="Maglev build (ms)")
        ax.plot(sc, [res.get(f"scale_rendezvous_build_ms_{n}be") for n in sc], "s-", label="rendezvous build (ms)")
        ax.plot(sc, [res.get(f"scale_bounded_choice_ns_{n}be") for n in sc], "^-", label="bounded choice (ns)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("backends")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Control and steering cost vs backends")
        savefig(fig, "backends.png", "cost vs backends")

# ---- microbenchmarks + everything ------------------------------------------------------------
w("## 5. All figures (results.json)\n")
w("| figure | value |\n|---|---|")
for k in sorted(res):
    w(f"| {k} | {fmt(res[k], 4)} |")
w("")
w("## How to run\n")
w(f"`make bench` (full; this run took {meta.get('wall_s', '?')} s) or `make bench-smoke` (< 2 min, what CI runs); both call "
  "`BUILD=build tools/bench/run.sh full|smoke` as root. `KVB_ONLY=\"xdp_bench e2e_bench\"` runs a subset; the "
  "scripts' headers list their knobs (KVB_XDP_CORES, KVB_E2E_REPS, KVB_LLM_LIMIT, ...). No figure is a pass/fail test.\n")

with open(os.path.join(out, "REPORT.md"), "w") as fh:
    fh.write("\n".join(lines) + "\n")
print(f"[bench] report -> {os.path.join(out, 'REPORT.md')} ({len(plots)} plot(s))")
