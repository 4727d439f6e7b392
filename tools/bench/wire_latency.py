#!/usr/bin/env python3
"""Where a balancer's added latency goes, read off the wire.

Input: `tcpdump -tt -nn -S` text (absolute sequence numbers) of a capture on the bridge every
namespace of the benchmark topology hangs off, taken while one connection at a time sends its
requests in turn (the e2e bench's latency workload, or one kept-alive connection). Every frame
between the client, the balancer and the backends crosses that bridge once per hop, and every
timestamp comes from one kernel clock.

A request starts where a connection's data turns towards the server (its first data after the
SYN, or the first after the other side's data), a response where it turns back. For each client
request to FRONT, the request the balancer sent on to a backend is the first request start from
BALANCER to a backend port between the client's request and the client's response (one of the
same length first: the balancer forwards the request unchanged; health checks differ), the
backend's response the first response start on that backend connection after it, and the
client's the first response start from FRONT on the client's connection. Per request:
  request path    client's request -> the balancer's request to the backend
  response path   the backend's first answer byte -> the client's
  added           the two together: what the balancer adds to the request's latency, without
                  subtracting a separate direct run (whose machine state differs)
Retransmissions (data below what the direction already sent) are skipped. Prints one JSON object.

Usage: wire_latency.py CAPTURE.txt FRONT_ADDR.PORT BALANCER_ADDR [BACKEND_PORT]
"""
import bisect
import json
import os
import re
import sys

LINE = re.compile(r"(\d+\.\d+) IP (\S+) > (\S+): Flags \[([^\]]*)\], (.*)")


def split_ep(ep):
    addr, _, port = ep.rpartition(".")
    return addr, port


def pct(xs, p):
    xs = sorted(xs)
    return xs[int(p * (len(xs) - 1))] if xs else None


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().splitlines()[-1])
    if not os.path.isfile(sys.argv[1]):
        sys.exit(f"wire_latency.py: cannot read {sys.argv[1]}")
    path, front, bal = sys.argv[1], sys.argv[2], sys.argv[3]
    be_port = sys.argv[4] if len(sys.argv) == 5 else "8000"
    front = front.replace(":", ".") if front.count(":") == 1 else front
    creq, breq, bresp, cresp = [], [], {}, {}
    last = {}  # connection -> the direction of its last data ("up": towards the server)
    high = {}  # (src, dst) -> the end of the highest data sent that way
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            t = float(m.group(1))
            src, dst, flags, rest = m.group(2), m.group(3), m.group(4), m.group(5)
            if dst == front or (split_ep(src)[0] == bal and split_ep(dst)[1] == be_port):
                conn, up = (src, dst), True
            elif src == front or (split_ep(src)[1] == be_port and split_ep(dst)[0] == bal):
                conn, up = (dst, src), False
            else:
                continue
            if "S" in flags:  # a new connection on these ports
                last.pop(conn, None)
                high.pop((src, dst), None)
                continue
            sq = re.search(r"seq (\d+):(\d+)", rest)
            if not sq:
                continue
            end = int(sq.group(2))
            prev = high.get((src, dst))
            if prev is not None and (end == prev or (end - prev) % (1 << 32) >= 1 << 31):
                continue  # nothing new: a retransmission
            high[(src, dst)] = end
            turn = last.get(conn) != up
            last[conn] = up
            if not turn:
                continue
            n = int(sq.group(2)) - int(sq.group(1))
            if dst == front:
                creq.append((t, src, n))
            elif src == front:
                cresp.setdefault(dst, []).append(t)
            elif up:
                breq.append((t, conn, n))
            else:
                bresp.setdefault(conn, []).append(t)

    def after(lst, t):
        i = bisect.bisect_left(lst, t)
        return lst[i] if i < len(lst) else None

    used, rows = set(), []
    for t, cli, n in creq:
        c = after(cresp.get(cli, []), t)
        if c is None:
            continue
        # The balancer's request lies between the client's request and the client's answer.
        pick = None
        for k in range(bisect.bisect_left(breq, (t,)), len(breq)):
            if breq[k][0] > c:
                break
            if k in used:
                continue
            if breq[k][2] == n:
                pick = k
                break
            if pick is None:
                pick = k
        if pick is None:
            continue
        used.add(pick)
        tb, leg, _ = breq[pick]
        r = after(bresp.get(leg, []), tb)
        if r is None or not (r <= c):
            continue
        rows.append(((tb - t) * 1e6, (c - r) * 1e6))
    out = {"requests": len(creq), "matched": len(rows)}
    for name, idx in (("req_path", 0), ("resp_path", 1)):
        xs = [r[idx] for r in rows]
        for p in (50, 90, 99):
            v = pct(xs, p / 100)
            if v is not None:
                out[f"{name}_p{p}_us"] = round(v, 1)
    added = [r[0] + r[1] for r in rows]
    for p in (50, 90, 99):
        v = pct(added, p / 100)
        if v is not None:
            out[f"added_p{p}_us"] = round(v, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
