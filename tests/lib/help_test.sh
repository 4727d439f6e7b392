#!/usr/bin/env bash
# Every kvsteer binary in the build's bin/ answers --help: exit status 0, some text, within 10 s
# (a libFuzzer target once took --help for a corpus directory and fuzzed forever).
# Usage: tests/lib/help_test.sh BIN_DIR
set -uo pipefail
dir=${1:?usage: help_test.sh BIN_DIR}
n=0 bad=0
for b in "$dir"/kvsteer*; do
    [[ -f "$b" && -x "$b" ]] || continue
    n=$((n + 1))
    out=$(timeout 10 "$b" --help 2>&1 </dev/null)
    rc=$?
    if ((rc != 0)); then
        echo "FAIL $(basename "$b") --help: exit status $rc$( ((rc == 124)) && echo ' (no answer in 10 s)')"
        bad=$((bad + 1))
    elif [[ -z "$out" ]]; then
        echo "FAIL $(basename "$b") --help: no output"
        bad=$((bad + 1))
    else
        echo "ok   $(basename "$b")"
    fi
done
if ((n < 10)); then
    echo "FAIL only $n kvsteer binaries in $dir (is the build complete?)"
    exit 1
fi
echo "$n binaries, $bad without a working --help"
((bad == 0))
