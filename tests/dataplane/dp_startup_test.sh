#!/usr/bin/env bash
# kvsteer-dataplane startup errors: each bad input exits non-zero with a message naming it.
set -uo pipefail
# As root (CI) the runs below, which name the loopback interface (iface=lo) and would attach an
# XDP program there if a check were missed, happen in a network namespace of their own.
if [[ $(id -u) == 0 && -z ${KVS_STARTUP_NETNS:-} ]]; then
    exec env KVS_STARTUP_NETNS=1 unshare --net -- bash "$0" "$@"
fi
[[ -n ${KVS_STARTUP_NETNS:-} ]] && ip link set lo up
BIN=$1/bin/kvsteer-dataplane
fails=0
expect() {  # expect "what" "message regex" cmd...
    local what=$1 re=$2; shift 2
    local out rc
    out=$("$@" 2>&1); rc=$?
    if (( rc == 0 )) || ! grep -Eq -e "$re" <<<"$out"; then
        echo "FAIL: $what: rc=$rc, output:"; echo "$out" | tail -5; fails=$((fails + 1))
    else
        echo "ok: $what"
    fi
}
EAL=(--no-pci --no-huge -m 512 --no-shconf -l 0 --log-level=lib.eal:error)
out=$("$BIN" --help) && grep -q -- "--bpffs" <<<"$out" && echo "ok: --help" || { echo "FAIL: --help"; fails=$((fails + 1)); }
expect "bad --mode" "--mode must be xdp or dpdk" "$BIN" -- --mode foo
expect "unknown option" "unrecognised option '--bogus'" "$BIN" -- --bogus
expect "spin too long" "--idle-spin-us must be 0..1000000" "$BIN" -- --idle-spin-us 2000000
expect "pool floor above its size" "--backend-pool-min must not exceed --backend-pool" \
    "$BIN" -- --mode xdp --backend-pool 2 --backend-pool-min 3
expect "too many kept legs" "--backend-reuse must be 0..64" "$BIN" -- --mode xdp --backend-reuse 65
expect "SYN retries past the binder's count" "--backend-syn-retries must be 0..16" "$BIN" -- --mode xdp --backend-syn-retries 255
expect "no hugepages" "no hugepages configured: pass --no-huge" "$BIN" --no-pci -- --bpffs /nonexistent
expect "no such interface" "no such interface 'kvdp-nosuch0'" "$BIN" "${EAL[@]}" \
    --vdev net_af_xdp0,iface=kvdp-nosuch0 -- --bpffs /nonexistent
expect "maps missing" "pinned maps under /nonexistent-kvdp" "$BIN" "${EAL[@]}" -- --bpffs /nonexistent-kvdp \
    --wait-config-s 1
# xdp mode: the XDP object must be kvsteer's of this build (prog_abi.h), checked before anything.
expect "not a kvsteer XDP object" "is not a kvsteer XDP object of this build" "$BIN" "${EAL[@]}" \
    --vdev "net_af_xdp0,iface=lo,xdp_prog=$1/bpf/xdp_pass.bpf.o" -- --mode xdp --bpffs /nonexistent-kvdp
abi_tmp=$(mktemp)
printf 'ELF...kvsteer-xdp-abi:999\0...' >"$abi_tmp"
expect "another XDP ABI" "is of kvsteer XDP ABI 999, this dataplane needs" "$BIN" "${EAL[@]}" \
    --vdev "net_af_xdp0,iface=lo,xdp_prog=$abi_tmp" -- --mode xdp --bpffs /nonexistent-kvdp
rm -f "$abi_tmp"
expect "this build's XDP object passes" "pinned maps under /nonexistent-kvdp" "$BIN" "${EAL[@]}" \
    --vdev "net_af_xdp0,iface=lo,xdp_prog=$1/bpf/kvsteer.bpf.o" -- --mode xdp --bpffs /nonexistent-kvdp \
    --wait-config-s 1
if [[ $(id -u) == 0 ]]; then
    dir=/run/kvsteer-test-kvdpst
    mkdir -p "$dir" && mount -t bpf bpf "$dir" && trap 'umount "$dir"; rmdir "$dir"' EXIT
    # Maps exist (created) but kvsteerd never wrote the configuration.
    expect "config never written" "kvs_config under $dir was never written" "$BIN" "${EAL[@]}" \
        -- --bpffs "$dir" --create-maps --mode dpdk --wait-config-s 1
    "$1/bin/kvsteer-dp-fixture" fill --bpffs "$dir" --vip 10.77.1.1:8000 --snat 10.77.0.2 \
        --app-mac 02:00:00:00:00:02 >/dev/null || { echo "FAIL: fixture"; fails=$((fails + 1)); }
    # Configured, but no port was given: the error names the port.
    expect "no port" "port 0 does not exist" "$BIN" "${EAL[@]}" -- --bpffs "$dir" --mode dpdk
    # Started before kvsteerd made the maps (systemd starts both at once): it waits for them, then
    # goes on (here to the missing port). It exited at once before.
    late=$dir/late
    ( sleep 1.5; "$1/bin/kvsteer-dp-fixture" fill --bpffs "$late" --vip 10.77.1.1:8000 --snat 10.77.0.2 \
        --app-mac 02:00:00:00:00:02 >/dev/null ) &
    out=$("$BIN" "${EAL[@]}" -- --bpffs "$late" --mode dpdk --wait-config-s 10 2>&1)
    wait
    if grep -q "waiting up to 10 s for kvsteerd to create the pinned maps" <<<"$out" &&
        grep -q "port 0 does not exist" <<<"$out"; then
        echo "ok: maps made while it waits"
    else
        echo "FAIL: maps made while it waits:"; echo "$out" | tail -5; fails=$((fails + 1))
    fi
    rm -rf "$late"
fi
(( fails == 0 )) && echo PASS || exit 1
