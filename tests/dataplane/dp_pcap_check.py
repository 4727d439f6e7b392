#!/usr/bin/env python3
"""Checks what a client saw from the appliance, from a capture taken in its namespace (pcap,
Ethernet, IPv4 or IPv6/TCP): for every connection from SERVER:PORT to the client, the byte
stream has no hole that nothing fills (a segment past the stream's end is counted,
early_segments: a loss or reordering that a retransmission repairs is normal TCP), TSval never
goes backwards on a segment sent after everything seen before it (an older segment overtaken on
the way keeps its older TSval and is counted, reordered_segments: bytes, or an ACK, from before
the furthest sequence point a segment seen was sent at, since a pure ACK carries the sender's
next byte; or an ACK older than one seen; the mark is the newest TSval of a segment that moved
the stream on, since one that moved nothing, a duplicate ACK, a window update or a
retransmission, proves nothing about when it was sent; a segment that moves the stream on more
than TS_SLACK ticks below one that moved nothing is flagged too), no RST arrives, and no burst of duplicate ACKs (challenge ACKs) appears. Prints a
JSON summary; exit 1 on any violation.

--late-tx-ok: on veth, a segment the dataplane sends through AF_XDP sometimes leaves ms late
(dataplane/README.md, "Late AF_XDP transmits on veth"); the backend then answers the overtaken
bytes with duplicate ACKs, or a late handshake ACK with a RST once the connection is closed.
With this flag those two are counted (dup_ack_bursts, rsts_after_close), not violations; a
hole, a TSval going backwards and a RST before the server's FIN still are."""
import argparse
import json
import socket
import struct
import sys


# TSval ticks (ms on Linux) a segment that moved nothing (sent later, overtaking on the way) may
# carry above a segment that moves the stream on after it. A leg translated wrong is off by far
# more (each connection's TSval clock has its own random offset).
TS_SLACK = 10


def packets(path):
    with open(path, "rb") as fh:
        head = fh.read(24)
        if len(head) < 24:
            return
        magic = struct.unpack("<I", head[:4])[0]
        endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        while True:
            rec = fh.read(16)
            if len(rec) < 16:
                return
            _, _, incl, _ = struct.unpack(endian + "IIII", rec)
            yield fh.read(incl)


def tcp_of(frame):
    if len(frame) < 14 + 20:
        return None
    off = 14
    etype = struct.unpack("!H", frame[12:14])[0]
    if etype == 0x8100:
        etype = struct.unpack("!H", frame[16:18])[0]
        off = 18
    if etype == 0x0800:
        ihl = (frame[off] & 0x0F) * 4
        if frame[off + 9] != 6:
            return None
        total = struct.unpack("!H", frame[off + 2:off + 4])[0]
        src = socket.inet_ntop(socket.AF_INET, frame[off + 12:off + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[off + 16:off + 20])
    elif etype == 0x86DD:  # IPv6 without extension headers (what the appliance forwards)
        ihl = 40
        if frame[off + 6] != 6:
            return None
        total = 40 + struct.unpack("!H", frame[off + 4:off + 6])[0]
        src = socket.inet_ntop(socket.AF_INET6, frame[off + 8:off + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[off + 24:off + 40])
    else:
        return None
    t = off + ihl
    sport, dport, seq, ack = struct.unpack("!HHII", frame[t:t + 12])
    doff = (frame[t + 12] >> 4) * 4
    flags = frame[t + 13]
    plen = total - ihl - doff
    tsval = None
    o, end = t + 20, t + doff
    while o < end:
        kind = frame[o]
        if kind == 0:
            break
        if kind == 1:
            o += 1
            continue
        ln = frame[o + 1] if o + 1 < end else 0
        if ln < 2:
            break
        if kind == 8 and ln == 10:
            tsval = struct.unpack("!I", frame[o + 2:o + 6])[0]
        o += ln
    return {"src": src, "dst": dst, "sport": sport,
            "dport": dport, "seq": seq, "ack": ack, "flags": flags, "len": plen, "tsval": tsval}


def after(a, b):
    return ((a - b) & 0xFFFFFFFF) < 0x80000000 and a != b


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("pcap")
    ap.add_argument("--server", required=True, help="the VIP")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--late-tx-ok", action="store_true")
    args = ap.parse_args()
    late_rst = 0

    conns, problems = {}, []
    for frame in packets(args.pcap):
        p = tcp_of(frame)
        if not p or p["src"] != args.server or p["sport"] != args.port:
            continue
        key = (p["dst"], p["dport"])
        c = conns.setdefault(key, {"next": None, "ts": None, "segments": 0, "bytes": 0,
                                   "last_ack": None, "dup_acks": 0, "max_dup_acks": 0})
        if p["flags"] & 0x02:  # SYN-ACK: the stream starts after it
            c["next"] = c["sent_to"] = (p["seq"] + 1) & 0xFFFFFFFF
            c["ts"] = p["tsval"]
            continue
        if p["flags"] & 0x04:
            if args.late_tx_ok and c.get("fin"):
                late_rst += 1
            else:
                problems.append(f"{key}: RST from the server side")
        if p["flags"] & 0x01:
            c["fin"] = True
        n = p["len"] + (1 if p["flags"] & 0x01 else 0)
        # Whether the segment moved the stream on (new bytes, or a pure ACK with a newer seq or
        # ack): only those prove when they were sent. One that moves nothing (a duplicate ACK, a
        # window update, a retransmission) may have been sent before or after its neighbours, so
        # its TSval is not the mark later segments are held to (c["ts"]: the newest TSval of a
        # segment that moved the stream). Else a window update overtaking the duplicate ACKs
        # sent just before it, all at one seq and ack, read as a TSval going backwards.
        sent_end = (p["seq"] + n) & 0xFFFFFFFF
        if n:
            moved = c.get("sent_to") is None or after(sent_end, c["sent_to"])
        else:
            moved = (c.get("sent_to") is None or after(p["seq"], c["sent_to"])
                     or c.get("max_ack") is None or after(p["ack"], c["max_ack"]))
        if p["tsval"] is not None and c["ts"] is not None and after(c["ts"], p["tsval"]):
            # Sent before something already seen: it starts before the furthest sequence point
            # a segment seen so far was sent at (a pure ACK carries the sender's next byte, so
            # data sent before an ACK that overtook it counts too), or an ACK older than one seen.
            older_bytes = c.get("sent_to") is not None and after(c["sent_to"], p["seq"])
            older_ack = not n and c.get("max_ack") is not None and after(c["max_ack"], p["ack"])
            if older_bytes or older_ack:
                # An older segment overtaken on the way (the kernel's per-CPU queues on veth
                # reorder now and then), which carries its older TSval. Only a segment sent after
                # everything seen with an older TSval is a translation error.
                c["reordered"] = c.get("reordered", 0) + 1
            else:
                problems.append(f"{key}: TSval went backwards {c['ts']} -> {p['tsval']}")
        if c.get("sent_to") is None or after(sent_end, c["sent_to"]):
            c["sent_to"] = sent_end
        if (moved and p["tsval"] is not None and c.get("ts_any") is not None
                and after(c["ts_any"], (p["tsval"] + TS_SLACK) & 0xFFFFFFFF)
                and not (c["ts"] is not None and after(c["ts"], p["tsval"]))):
            problems.append(f"{key}: TSval went backwards {c['ts_any']} -> {p['tsval']} "
                            f"(below a segment that moved nothing, by more than {TS_SLACK})")
        if p["tsval"] is not None and (c.get("ts_any") is None or after(p["tsval"], c["ts_any"])):
            c["ts_any"] = p["tsval"]
        if moved and p["tsval"] is not None and (c["ts"] is None or after(p["tsval"], c["ts"])):
            c["ts"] = p["tsval"]
        if p["flags"] & 0x10 and (c.get("max_ack") is None or after(p["ack"], c["max_ack"])):
            c["max_ack"] = p["ack"]
        if n and c["next"] is not None:
            # Stream offsets from the SYN-ACK: what arrived, to find gaps never filled. A segment
            # past the stream's end (a loss or a reordering on the way) is normal TCP when a
            # retransmission fills the gap later; a gap nothing fills (a sequence translated
            # wrong at a move) is the problem.
            base = c.setdefault("base", c["next"])
            start = (p["seq"] - base) & 0xFFFFFFFF
            c.setdefault("got", []).append((start, start + n))
            if after(p["seq"], c["next"]):
                c["early"] = c.get("early", 0) + 1
            end = (p["seq"] + n) & 0xFFFFFFFF
            if after(end, c["next"]):
                c["next"] = end
            c["segments"] += 1
            c["bytes"] += p["len"]
        if not n:  # a pure ACK: count repeats (challenge ACKs come in bursts)
            if p["ack"] == c["last_ack"]:
                c["dup_acks"] += 1
                c["max_dup_acks"] = max(c["max_dup_acks"], c["dup_acks"])
            else:
                c["dup_acks"] = 0
            c["last_ack"] = p["ack"]
    for key, c in conns.items():
        reach = 0
        for a, b in sorted(c.get("got", [])):
            if a > reach:
                problems.append(f"{key}: hole never filled: stream bytes {reach}..{a} missing")
                break
            reach = max(reach, b)
        if c["max_dup_acks"] >= 3 and not args.late_tx_ok:
            problems.append(f"{key}: {c['max_dup_acks']} duplicate ACKs in a row")
    extra = {}
    if args.late_tx_ok:
        extra = {"dup_ack_bursts": sum(c["max_dup_acks"] >= 3 for c in conns.values()),
                 "rsts_after_close": late_rst}
    print(json.dumps({"connections": len(conns), "segments": sum(c["segments"] for c in conns.values()),
                      "early_segments": sum(c.get("early", 0) for c in conns.values()),
                      "reordered_segments": sum(c.get("reordered", 0) for c in conns.values()),
                      "bytes": sum(c["bytes"] for c in conns.values()), **extra, "problems": problems[:10]}))
    return 1 if problems or not conns else 0


if __name__ == "__main__":
    sys.exit(main())
