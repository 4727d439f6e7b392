#!/usr/bin/env bash
# Runs every benchmark that is built and merges their figures into $BUILD/bench/results.json
# (one flat object: name -> number, units in the names) plus $BUILD/bench/REPORT.md.
# Usage: tools/bench/run.sh full|smoke
set -euo pipefail
mode=${1:-full}
BUILD=${BUILD:-build}
out="$BUILD/bench"
mkdir -p "$out/fragments"
rm -f "$out"/fragments/*.json
case "$mode" in
    full) export KVS_BENCH_SMOKE=0 ;;
    smoke) export KVS_BENCH_SMOKE=1 ;;
    *) echo "usage: $0 full|smoke" >&2; exit 2 ;;
esac

# Each benchmark writes a flat JSON fragment to $KVS_BENCH_OUT.
benches=(kvsteer-core-bench kvsteer-bpf-bench kvsteer-dp-bench)
scripts=(tools/bench/e2e_bench.sh tools/bench/llm_bench.sh)
failed=0 ran=0
for b in "${benches[@]}"; do
    exe="$BUILD/bin/$b"
    if [[ ! -x "$exe" ]]; then echo "[bench] $b: not built, skipped"; continue; fi
    echo "[bench] running $b ($mode)"
    if KVS_BENCH_OUT="$out/fragments/$b.json" "$exe" >"$out/$b.log" 2>&1; then
        ran=$((ran + 1))
    else
        echo "[bench] $b FAILED (log: $out/$b.log)"; tail -20 "$out/$b.log"; failed=1
    fi
done
for s in "${scripts[@]}"; do
    [[ -x "$s" ]] || continue
    name=$(basename "$s" .sh)
    echo "[bench] running $name ($mode)"
    if KVS_BENCH_OUT="$out/fragments/$name.json" BUILD="$BUILD" "$s" "$mode" >"$out/$name.log" 2>&1; then
        ran=$((ran + 1))
    else
        echo "[bench] $name FAILED (log: $out/$name.log)"; tail -20 "$out/$name.log"; failed=1
    fi
done

python3 - "$out" "$mode" <<'PY'
import json, os, platform, subprocess, sys, datetime
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
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
with open(os.path.join(out, "REPORT.md"), "w") as fh:
    fh.write(f"# kvsteer benchmark report ({mode})\n\n")
    fh.write(f"- date: {datetime.datetime.utcnow().isoformat(timespec='seconds')}Z\n")
    fh.write(f"- machine: {cpu}, {os.cpu_count()} CPUs, kernel {platform.release()}\n\n")
    fh.write("| figure | value |\n|---|---|\n")
    for k in sorted(res):
        fh.write(f"| {k} | {res[k]:.4g} |\n")
print(f"[bench] {len(res)} figures -> {os.path.join(out, 'results.json')}")
PY
echo "[bench] $ran benchmark(s) ran"
exit $failed
