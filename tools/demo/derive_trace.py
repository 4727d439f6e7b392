#!/usr/bin/env python3
"""Derive the demo's shipped trace from the Mooncake synthetic trace.

Keeps the first N requests (default: all of them, which is what `make demo` replays at its
default scale) and only the fields the replayer reads, with timestamps rebased so the first
request is at 0 ms. To keep the file small, each run of consecutive block ids in "hash_ids"
is written as an inclusive range [first, last] (kvsteer-replay expands it; a run of one stays a
plain integer). --check expands the output again and compares it with the source, request by
request, so the shipped file is known to stand for exactly those requests.

    tools/demo/derive_trace.py SOURCE.jsonl tools/demo/traces/mooncake-demo.jsonl [--limit N]
"""
import argparse
import hashlib
import json
import sys

FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
BLOCK_TOKENS = 512  # Mooncake hash ids cover 512-token blocks


def read_source(path, limit):
    reqs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit and len(reqs) >= limit:
                break
            d = json.loads(line)
            missing = [k for k in FIELDS if k not in d]
            if missing:
                sys.exit(f"{path}: line {n}: missing {missing}")
            ids = d["hash_ids"]
            if len(ids) != -(-d["input_length"] // BLOCK_TOKENS):
                sys.exit(f"{path}: line {n}: {len(ids)} hash_ids for input_length {d['input_length']}")
            reqs.append({k: d[k] for k in FIELDS})
    return reqs


def compact(ids):
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(ids[i] if i == j else [ids[i], ids[j]])
        i = j + 1
    return out


def expand(ids):
    out = []
    for e in ids:
        out.extend(range(e[0], e[1] + 1) if isinstance(e, list) else [e])
    return out


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="Mooncake-format trace (synthetic_trace.jsonl)")
    ap.add_argument("output", help="derived trace to write (or to check with --check)")
    ap.add_argument("--limit", type=int, default=0, help="first N requests (0: all)")
    ap.add_argument("--check", action="store_true", help="verify OUTPUT against SOURCE, write nothing")
    a = ap.parse_args()

    reqs = read_source(a.source, a.limit)
    if not reqs:
        sys.exit(f"{a.source}: no requests")
    t0 = reqs[0]["timestamp"]
    if a.check:
        with open(a.output) as f:
            got = [json.loads(l) for l in f if l.strip()]
        if len(got) != len(reqs):
            sys.exit(f"{a.output}: {len(got)} requests, source gives {len(reqs)}")
        for n, (g, s) in enumerate(zip(got, reqs), 1):
            want = dict(s, timestamp=s["timestamp"] - t0)
            if dict(g, hash_ids=expand(g["hash_ids"])) != want:
                sys.exit(f"{a.output}: line {n} differs from the source")
        print(f"ok: {len(got)} requests match the source")
    else:
        with open(a.output, "w") as f:
            for r in reqs:
                line = dict(r, timestamp=r["timestamp"] - t0, hash_ids=compact(r["hash_ids"]))
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
        print(f"wrote {len(reqs)} requests to {a.output}")
    print(f"sha256 source  {sha256(a.source)}")
    print(f"sha256 output  {sha256(a.output)}")


if __name__ == "__main__":
    main()
