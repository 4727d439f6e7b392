#!/usr/bin/env python3
"""Bounded SYN flood for the e2e test: COUNT raw TCP SYNs to VIP:PORT from the given source
address (IPv4 or IPv6) with varying source ports (run inside the test's client namespace only)."""
import random
import socket
import struct
import sys
import time


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def main():
    src, dst, dport, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    count = min(count, 100000)  # bounded whatever the caller asks
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_TCP)
    sa, da = socket.inet_pton(fam, src), socket.inet_pton(fam, dst)
    rnd = random.Random(7)
    t0 = time.time()
    for i in range(count):
        sport = 1024 + (i % 60000)
        seq = rnd.getrandbits(32)
        opts = struct.pack("!BBH", 2, 4, 1460)  # MSS
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, (6 << 4), 0x02, 64240, 0, 0) + opts
        if fam == socket.AF_INET6:  # RFC 8200 pseudo-header
            pseudo = sa + da + struct.pack("!IxxxB", len(hdr), 6)
        else:
            pseudo = sa + da + struct.pack("!BBH", 0, 6, len(hdr))
        c = csum(pseudo + hdr)
        hdr = hdr[:16] + struct.pack("!H", c) + hdr[18:]
        s.sendto(hdr, (dst, 0, 0, 0) if fam == socket.AF_INET6 else (dst, 0))
        if time.time() - t0 > 20:
            break
    print(f"sent {i + 1} SYNs in {time.time() - t0:.2f}s")


if __name__ == "__main__":
    main()
