#!/usr/bin/env python3
"""dp_pcap_check.py on hand-built captures: what it must flag (a TSval going backwards on a
segment sent after everything before it, a hole, a RST) and what is reordering on the way (data
overtaken by a later pure ACK, an ACK overtaken by later data, older bytes). No root needed."""
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
VIP, CLIENT = "10.77.0.1", "10.77.0.10"
SYN, RST, PSH, ACK = 0x02, 0x04, 0x08, 0x10


def ip4(a):
    return bytes(int(x) for x in a.split("."))


def frame(seq, ack, flags, tsval, payload=b""):
    opts = b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, 1)
    tcp = struct.pack("!HHIIBBHHH", 8000, 40000, seq, ack, (20 + len(opts)) // 4 << 4, flags,
                      65535, 0, 0) + opts + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, ip4(VIP),
                     ip4(CLIENT))
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp


def check(frames, *extra):
    with tempfile.NamedTemporaryFile(suffix=".pcap", delete=False) as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for f in frames:
            fh.write(struct.pack("<IIII", 0, 0, len(f), len(f)) + f)
        path = fh.name
    try:
        r = subprocess.run([sys.executable, os.path.join(HERE, "dp_pcap_check.py"), path,
                            "--server", VIP, "--port", "8000", *extra], capture_output=True,
                           text=True)
        return r.returncode, r.stdout
    finally:
        os.unlink(path)


def main():
    isn, ack = 1000, 5000
    synack = frame(isn, ack, SYN | ACK, 100)
    d1 = frame(isn + 1, ack, PSH | ACK, 101, b"a" * 100)
    d2 = frame(isn + 101, ack, PSH | ACK, 102, b"b" * 100)
    pure_after = frame(isn + 201, ack + 10, ACK, 103)  # sent after d2: its seq is past d2
    fails = []

    def expect(name, frames, rc, needle, *extra):
        got_rc, out = check(frames, *extra)
        if got_rc != rc or needle not in out:
            fails.append(f"{name}: exit {got_rc}, wanted {rc} with {needle!r}: {out.strip()}")

    expect("in order", [synack, d1, d2, pure_after], 0, '"reordered_segments": 0')
    # Data overtaken by the pure ACK the server sent after it: reordering, not a translation error.
    expect("data overtaken by a later ACK", [synack, d1, pure_after, d2], 0,
           '"reordered_segments": 1')
    # Older bytes overtaken by newer ones.
    expect("older bytes", [synack, d2, d1, pure_after], 0, '"reordered_segments": 1')
    # An ACK sent before data that overtook it (same ack number, seq before that data's end).
    pure_before = frame(isn + 101, ack, ACK, 101)
    expect("ACK overtaken by later data", [synack, d1, d2, pure_before], 0,
           '"reordered_segments": 1')
    # New bytes after everything seen, with an older TSval: a translation error.
    d2_old_ts = frame(isn + 101, ack, PSH | ACK, 100, b"b" * 100)
    d3 = frame(isn + 201, ack, PSH | ACK, 99, b"c" * 10)
    expect("new bytes with an older TSval", [synack, d1, d2_old_ts, d3], 1, "TSval went backwards")
    expect("ACK after everything with an older TSval",
           [synack, d1, d2, frame(isn + 201, ack, ACK, 101)], 1, "TSval went backwards")
    # Segments that move nothing, sent later and overtaking earlier ones on the way: a window
    # update (ms 104) ahead of ten duplicate ACKs of ms 103, all at one seq and ack (bursts
    # allowed: --late-tx-ok, as the pool test runs it); a retransmission (ms 104) ahead of ten new
    # segments of ms 103. Neither is a translation error.
    dups = [frame(isn + 201, ack, ACK, 103) for _ in range(10)]
    expect("duplicate ACKs overtaken by a window update",
           [synack, d1, d2, frame(isn + 201, ack, ACK, 104)] + dups, 0, '"problems": []',
           "--late-tx-ok")
    news = [frame(isn + 201 + 100 * k, ack, ACK, 103, b"n" * 100) for k in range(10)]
    expect("new segments overtaken by a retransmission",
           [synack, d1, d2, frame(isn + 101, ack, ACK, 104, b"b" * 100)] + news, 0,
           '"problems": []')
    # ... but new bytes after them with a TSval older than the last segment that moved the stream
    # still are.
    expect("new bytes older than the last that moved the stream",
           [synack, d1, d2, frame(isn + 201, ack, ACK, 104)] + dups +
           [frame(isn + 201, ack, PSH | ACK, 101, b"c" * 10)], 1, "TSval went backwards",
           "--late-tx-ok")
    # A segment that moved nothing far ahead of the new bytes after it (a window update of the
    # old leg, then a new leg's bytes translated too low): flagged.
    expect("new bytes far below a window update",
           [synack, d1, d2, frame(isn + 201, ack, ACK, 500),
            frame(isn + 201, ack, PSH | ACK, 300, b"c" * 10)], 1, "below a segment that moved nothing")
    expect("new bytes far below a retransmission",
           [synack, d1, d2, frame(isn + 101, ack, ACK, 400, b"b" * 100),
            frame(isn + 201, ack, PSH | ACK, 250, b"c" * 10)], 1, "below a segment that moved nothing")
    expect("a hole", [synack, d1, frame(isn + 201, ack, PSH | ACK, 103, b"c")], 1,
           "hole never filled")
    expect("a RST", [synack, d1, frame(isn + 101, ack, RST | ACK, 102)], 1, "RST from the server")
    for f in fails:
        print("FAIL", f)
    print("dp_pcap_check_test:", "ok" if not fails else f"{len(fails)} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
