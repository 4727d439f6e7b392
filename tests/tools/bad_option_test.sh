#!/usr/bin/env bash
# Every command-line binary answers an unknown option whose name holds a Boost.Program_options
# placeholder ("--x%canonical_option%") with a clear error and a failure status, at once. Boost
# 1.74 formats such a token in an endless loop (kvsteer/core/po_error.h); before the fix every
# binary below hung here. And the dataplane refuses a negative number for an unsigned option.
set -euo pipefail
BIN=${1:?usage: bad_option_test.sh BUILD_BIN_DIR}
fail=0
check() {  # check NAME ARGS...: exits non-zero within 10 s, says what was wrong
    local name=$1 out rc; shift
    # Every binary listed is built (CI configures with KVS_REQUIRE_ALL): one missing, renamed or
    # left out, is a failure, not a check skipped.
    [[ -x "$BIN/$name" ]] || { echo "FAIL $name: not built"; fail=1; return 0; }
    set +e
    out=$(timeout 10 "$BIN/$name" "$@" 2>&1 </dev/null)
    rc=$?
    set -e
    if (( rc == 124 )); then
        echo "FAIL $name $*: hung (killed after 10 s)"; fail=1
    elif (( rc == 0 )); then
        echo "FAIL $name $*: exit status 0 for an unknown option"; fail=1
    elif ! grep -q "canonical_option\|?canonical_option?\|unrecognised\|unrecognized\|unknown" <<<"$out"; then
        echo "FAIL $name $*: status $rc but no error naming the option: $out"; fail=1
    else
        echo "ok   $name (status $rc): $(head -1 <<<"$out")"
    fi
}
bad='--x%canonical_option%'
for b in kvsteerd kvsteerctl kvsteer-dp-fixture kvsteer-sim kvsteer-replay kvsteer-gpu-emu \
         kvsteer-scale-bench kvsteer-xdp-live kvsteer-locate kvsteer-bpf-bench kvsteer-xdp; do
    check "$b" "$bad"
done
check kvsteer-dataplane -- "$bad"  # the application's options come after the EAL's "--"
check kvsteerctl status "$bad"
# A negative value for an unsigned option is refused (Boost alone reads it as a huge number).
set +e
out=$(timeout 10 "$BIN/kvsteer-dataplane" -- --max-pending=-1 2>&1 </dev/null); rc=$?
set -e
if (( rc == 0 || rc == 124 )) || ! grep -q "max-pending: must not be negative" <<<"$out"; then
    echo "FAIL kvsteer-dataplane -- --max-pending=-1: status $rc: $out"; fail=1
else
    echo "ok   kvsteer-dataplane --max-pending=-1 (status $rc): $(head -1 <<<"$out")"
fi
exit $fail
