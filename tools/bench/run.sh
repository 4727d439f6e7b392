#!/usr/bin/env bash
# Runs every benchmark that is built and merges their figures into $BUILD/bench/results.json
# (one flat object: name -> number, units in the names) plus $BUILD/bench/REPORT.md and plots.
# Usage: tools/bench/run.sh full|smoke
# Env: BUILD (default build); KVB_ONLY="name ..." runs only those benchmarks (binary names or
# script names without .sh, e.g. "xdp_bench e2e_bench"); other KVB_* knobs are in each script.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-full}
BUILD=${BUILD:-build}
out="$BUILD/bench"
mkdir -p "$out/fragments"
rm -f "$out"/fragments/*.json "$out"/*.png
# The scripts' raw records too: the report reads them, and a benchmark this run skips (KVB_ONLY,
# not built) or that died early left an earlier run's numbers there, shown under this run's date.
rm -rf "$out"/xdp "$out"/e2e "$out"/llm "$out"/saturation "$out"/fleet
case "$mode" in
    full) export KVS_BENCH_SMOKE=0 ;;
    smoke) export KVS_BENCH_SMOKE=1 ;;
    *) echo "usage: $0 full|smoke" >&2; exit 2 ;;
esac
only=${KVB_ONLY:-}
wanted() { [[ -z "$only" ]] || [[ " $only " == *" $1 "* ]]; }

start=$(date -u +%FT%TZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
echo "[bench] $mode run, load average $load_start"

# Each benchmark writes a flat JSON fragment to $KVS_BENCH_OUT.
benches=(kvsteer-core-bench kvsteer-bpf-bench kvsteer-dp-bench kvsteer-scale-bench)
scripts=(tools/bench/xdp_bench.sh tools/bench/e2e_bench.sh tools/bench/llm_bench.sh tools/bench/saturation_bench.sh
         tools/bench/fleet_bench.sh)
failed=0 ran=0
for b in "${benches[@]}"; do
    wanted "$b" || continue
    exe="$BUILD/bin/$b"
    if [[ ! -x "$exe" ]]; then
        # A smoke run (CI) measures everything: a benchmark missing is a failure, not a skip.
        echo "[bench] $b: not built, skipped"; [[ "$mode" == smoke ]] && failed=1
        continue
    fi
    echo "[bench] running $b ($mode)"
    if KVS_BENCH_OUT="$out/fragments/$b.json" "$exe" >"$out/$b.log" 2>&1; then
        ran=$((ran + 1))
    else
        echo "[bench] $b FAILED (log: $out/$b.log)"; tail -20 "$out/$b.log"; failed=1
    fi
done
for s in "${scripts[@]}"; do
    name=$(basename "$s" .sh)
    wanted "$name" || continue
    [[ -x "$s" ]] || { echo "[bench] $s: not executable"; failed=1; continue; }
    echo "[bench] running $name ($mode)"
    # Progress lines go to the console and to the log.
    if KVS_BENCH_OUT="$out/fragments/$name.json" BUILD="$BUILD" "$s" "$mode" 2>&1 | tee "$out/$name.log"; then
        ran=$((ran + 1))
    else
        echo "[bench] $name FAILED (log: $out/$name.log)"; failed=1
    fi
done

python3 - "$out" "$mode" <<'PY' || failed=1
import json, os, sys
out, mode = sys.argv[1], sys.argv[2]
res = {}
frag_dir = os.path.join(out, "fragments")
for f in sorted(os.listdir(frag_dir)):
    with open(os.path.join(frag_dir, f)) as fh:
        try:
            d = json.load(fh)
        except json.JSONDecodeError as e:
            sys.exit(f"[bench] {f}: not JSON: {e}")
    for k, v in d.items():
        if not isinstance(v, (int, float)):
            sys.exit(f"[bench] {f}: {k} is not a number")
        res[k] = v
with open(os.path.join(out, "results.json"), "w") as fh:
    json.dump(res, fh, indent=1, sort_keys=True)
print(f"[bench] {len(res)} figures -> {os.path.join(out, 'results.json')}")
# A smoke run passes only on runs that worked: every request of every arm answered.
bad = sorted(k for k, v in res.items() if k.endswith("_failed") and v > 0)
if mode == "smoke" and bad:
    sys.exit("[bench] smoke: failures counted: " + ", ".join(f"{k} {res[k]}" for k in bad))
PY
cat >"$out/meta.json" <<EOF
{"mode": "$mode", "start": "$start", "end": "$(date -u +%FT%TZ)", "wall_s": $(( $(date +%s) - t0 )),
 "load_start": "$load_start", "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "git": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)", "only": "$only"}
EOF
# Plots need matplotlib, which the system interpreter has (python3-matplotlib).
py=/usr/bin/python3
[[ -x "$py" ]] || py=python3
"$py" tools/bench/report.py "$out" || { echo "[bench] report failed"; failed=1; }
echo "[bench] $ran benchmark(s) ran in $(( $(date +%s) - t0 )) s; report: $out/REPORT.md"
exit $failed
