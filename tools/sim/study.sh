#!/usr/bin/env bash
# Regenerates docs/study/: the routing-policy study (kvsteer vs baselines) with kvsteer-sim.
# Usage: tools/sim/study.sh [--quick]   (SIM=path/to/kvsteer-sim, TRACE=path/to/mooncake.jsonl)
# --quick: a smaller run (first 1000 trace requests) to check the pipeline, into build/study-quick.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIM=${SIM:-$ROOT/${BUILD:-build}/bin/kvsteer-sim}
TRACE=${TRACE:-$ROOT/tools/demo/traces/mooncake-demo.jsonl}  # the shipped Mooncake trace
LIMIT=0
# --quick writes beside the build (not over the committed study) unless OUT says otherwise.
if [[ ${1:-} == --quick ]]; then LIMIT=1000; OUT=${OUT:-$ROOT/${BUILD:-build}/study-quick}; fi
OUT=${OUT:-$ROOT/docs/study}

[[ -x $SIM ]] || { echo "study.sh: no simulator at $SIM (build it, or set SIM=)" >&2; exit 1; }
[[ -r $TRACE ]] || { echo "study.sh: cannot read the Mooncake trace $TRACE (set TRACE=)" >&2; exit 1; }
# A python3 with matplotlib (a pyenv/venv python3 first on PATH may lack the Debian package).
PY=${PYTHON:-}
for c in python3 /usr/bin/python3; do
    [[ -z $PY ]] && "$c" -c 'import matplotlib' 2>/dev/null && PY=$c
done
[[ -n $PY ]] || { echo "study.sh: no python3 with matplotlib (apt-get install python3-matplotlib, or set PYTHON=)" >&2; exit 1; }
mkdir -p "$OUT"
ALL=rr,least-loaded,ch,ch-bl,kvsteer,kvsteer-maglev,radix,oracle
MC=(--trace "$TRACE" --limit "$LIMIT")
SG=(--workload shared-prefix)
start=$SECONDS
run() {  # run NAME ARGS...: one simulator run into $OUT/NAME.json (+ .txt table)
    local name=$1; shift
    echo "[study] $name: $*" >&2
    "$SIM" "$@" --json "$OUT/$name.json" > "$OUT/$name.txt"
}

# 1. Load, light to saturated: Mooncake at 0.5x-2.5x its pace (speed 1 is the main table; round
#    robin keeps 8 servers ~80% busy there) and SGLang's shared-prefix shape, 8 and 32 servers.
run load-mooncake-8 "${MC[@]}" --servers 8 --sweep speed=0.5,1,1.5,2.5 --policies "$ALL"
run load-mooncake-32 "${MC[@]}" --servers 32 --sweep speed=2,4,6,10 --policies rr,least-loaded,ch-bl,kvsteer,radix,oracle
run load-sglang-8 "${SG[@]}" --servers 8 --sweep qps=30,60,120,480 --policies "$ALL"
run load-sglang-32 "${SG[@]}" --servers 32 --groups 256 --sweep qps=120,240,480,1920 --policies rr,least-loaded,ch-bl,kvsteer,radix,oracle
run load-sglang-short-8 "${SG[@]}" --output-len 16 --servers 8 --sweep qps=100,400,2000 --policies rr,least-loaded,ch-bl,kvsteer,radix,oracle
#    Conversations: every request opens with one shared system prompt (seeded; 1024 sessions;
#    closed loop: a turn waits for the reply before it, so the sessions in flight bound the load).
run load-conversation-8 --workload conversation --sessions 1024 --servers 8 --sweep speed=4,8,16,32,64 --policies rr,least-loaded,ch-bl,kvsteer,radix,oracle
# 2. kvsteer's defaults, one knob at a time around the shipped values (first 2000 trace requests).
KV=(--trace "$TRACE" --limit "$([[ $LIMIT == 0 ]] && echo 2000 || echo "$LIMIT")" --servers 8 --policies kvsteer,radix)
run knob-load-factor "${KV[@]}" --sweep load-factor=1.1,1.25,2,4
run knob-load-slack "${KV[@]}" --sweep load-slack=1,8,32,128
run knob-prefix-len "${KV[@]}" --sweep prefix-len=64,256,1024
run knob-block-size "${KV[@]}" --sweep block-size=256,512,2048
run knob-replication "${KV[@]}" --sweep replication=1,2,4
run knob-first-flight "${KV[@]}" --sweep first-flight=4380,14600,29200
SGK=("${SG[@]}" --servers 8 --qps 120 --policies kvsteer,radix)
run knob-load-factor-sglang "${SGK[@]}" --sweep load-factor=1.1,1.25,2,4
run knob-replication-sglang "${SGK[@]}" --sweep replication=1,2,4

rm -f "$OUT"/proposal-*.json "$OUT"/proposal-*.png  # a superseded proposal (kvsteer-slack) of earlier runs
for f in "$OUT"/load-*.json "$OUT"/knob-*.json; do
    n=$(basename "$f" .json)
    "$PY" "$ROOT/tools/sim/plot.py" "$f" "$OUT/$n.png"
done
# The simulators' CPU time: `times` run in this shell (in a pipe or $(...) it would report a
# subshell's children, none).
times >"$OUT/times.txt"
cpu=$(tail -1 "$OUT/times.txt" | awk '{print $1}')  # children's user CPU time
rm -f "$OUT/times.txt"
"$PY" "$ROOT/tools/sim/study_report.py" "$OUT" --seconds $((SECONDS - start)) --cpu "$cpu" > "$OUT/README.md"
rm -f "$OUT"/*.txt
echo "[study] wrote $OUT/README.md in $((SECONDS - start)) s" >&2
