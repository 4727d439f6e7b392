#!/usr/bin/env bash
# The fleet during a scale-out (full mode only): tests/deploy/fleet_test.sh's first phase — 60 long
# streams bound on one appliance while the router's multipath set grows to 2 and 3 appliances and
# shrinks by a planned drain — as figures: streams broken, packets sent on between appliances
# (second chance), and that per client packet forwarded. The per-packet cost of a send-on is
# kvsteer-bpf-bench's xdp_fleet_redirect_ns, beside xdp_fastpath_*.
# Usage: fleet_bench.sh full|smoke   Env: BUILD, KVS_BENCH_OUT (the JSON fragment)
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-full}
if [[ "$mode" != full ]]; then echo "[fleet_bench] full mode only (make test runs the same scenario)"; exit 0; fi
[[ $(id -u) == 0 ]] || { echo "[fleet_bench] needs root (namespaces, XDP): skipped"; exit 0; }
out=${KVS_BENCH_OUT:-${BUILD:-build}/bench/fleet_bench.json}
KVS_FLEET_FIGURES="$out" tests/deploy/fleet_test.sh "${BUILD:-build}"
cat "$out"
