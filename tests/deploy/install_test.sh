#!/usr/bin/env bash
# deploy/install.sh into a staging directory: every program and file the installed units name
# is there, and the example files agree with each other (one interface, the same VIP) - a unit
# named a setup script nothing installed, and the examples named two interfaces and two VIPs.
# usage: install_test.sh BUILD_DIR   (no root, no network)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:?usage: install_test.sh BUILD_DIR}
DEST=$(mktemp -d /tmp/kvs-install.XXXXXX)
trap 'rm -rf "$DEST"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# A build without DPDK has no dataplane (install.sh warns): nothing of it to check here.
[[ -x $BUILD/bin/kvsteer-dataplane ]] || { echo "SKIP: no kvsteer-dataplane in $BUILD (built without DPDK)"; exit 77; }

"$ROOT/deploy/install.sh" --build "$BUILD" --destdir "$DEST" >"$DEST/install.log" 2>&1 || { cat "$DEST/install.log"; fail "install.sh failed"; }
units=("$DEST"/etc/systemd/system/*.service)
(( ${#units[@]} == 3 )) || fail "expected 3 units, got ${#units[@]}"
checked=0
for u in "${units[@]}"; do
    while IFS= read -r line; do
        key=${line%%=*} val=${line#*=}
        case "$key" in
            ExecStart|ExecStartPre|ExecStartPost|ExecStop)
                prog=${val%% *} prog=${prog#[-@+!]}
                if [[ $prog == /usr/local/* ]]; then
                    [[ -x $DEST$prog ]] || fail "$(basename "$u"): $key $prog is not installed"
                else
                    [[ -x $prog ]] || fail "$(basename "$u"): $key $prog does not exist on this host"
                fi
                checked=$((checked + 1)) ;;
            EnvironmentFile)
                [[ -f $DEST${val#-} ]] || fail "$(basename "$u"): EnvironmentFile $val is not installed"
                checked=$((checked + 1)) ;;
        esac
    done <"$u"
done
(( checked >= 5 )) || fail "only $checked paths found in the units"

# The host setup reserves kvsteerd's SNAT range from the kernel's own ports (it moved the
# ephemeral range to a fixed 40000-60999, whatever snat-ports said).
printf 'vip = 10.0.0.1:80\nsnat-ports = 20000-30999  # ours\r\n' >"$DEST/snat.conf"
dry=$("$ROOT/deploy/setup-host.sh" --dry-run --hugepages 0 --conf "$DEST/snat.conf")
grep -q 'ip_local_reserved_ports=.*20000-30999' <<<"$dry" || grep -qs '\b20000-30999\b' /proc/sys/net/ipv4/ip_local_reserved_ports \
    || fail "setup-host.sh does not reserve snat-ports 20000-30999: $dry"
grep -q 'ip_local_port_range' <<<"$dry" && fail "setup-host.sh still moves the ephemeral range: $dry"

env=$DEST/etc/kvsteer/dataplane.env conf=$DEST/etc/kvsteer/kvsteerd.conf
# kvsteerd.conf holds the SYN-cookie key: readable by root alone.
[[ $(stat -c %a "$conf") == 600 ]] || fail "kvsteerd.conf is mode $(stat -c %a "$conf"), not 600"
prog=$(grep -o 'xdp_prog=[^ ",]*' "$env" | cut -d= -f2) || fail "no xdp_prog= in dataplane.env"
[[ -f $DEST$prog ]] || fail "dataplane.env's xdp_prog=$prog is not installed"
[[ -f $(dirname "$DEST$prog")/guard.bpf.o ]] || fail "guard.bpf.o is not beside $prog"
# One interface: the dataplane's, kvsteerd's and BIRD's BFD link.
dp_if=$(grep -o 'iface=[^ ,"]*' "$env" | cut -d= -f2) || fail "no iface= in dataplane.env"
kd_if=$(sed -n 's/^interface *= *//p' "$conf")
bird_if=$(grep -o 'interface "[^"]*"' "$ROOT/deploy/bird/bird.conf.example" | cut -d'"' -f2) ||
    fail "no BFD interface in the BIRD example"
[[ -n $dp_if && $dp_if == "$kd_if" && $dp_if == "$bird_if" ]] \
    || fail "interfaces differ: dataplane.env '$dp_if', kvsteerd.conf '$kd_if', BIRD '$bird_if'"
# BIRD announces kvsteerd's VIP.
vip=$(sed -n 's/^vip *= *\([0-9.]*\):.*/\1/p' "$conf")
grep -q "route $vip/32 blackhole" "$ROOT/deploy/bird/bird.conf.example" \
    || fail "BIRD does not announce kvsteerd.conf's vip $vip"
# A second run keeps the edited configuration.
echo "# edited" >>"$conf"
"$ROOT/deploy/install.sh" --build "$BUILD" --destdir "$DEST" >"$DEST/install.log" 2>&1 || fail "second install failed"
grep -q "^# edited" "$conf" || fail "a second install overwrote kvsteerd.conf"
# Another prefix: the units and dataplane.env name it (dataplane.env kept /usr/local before).
DEST2=$DEST/p2
"$ROOT/deploy/install.sh" --build "$BUILD" --destdir "$DEST2" --prefix /opt/kvsteer >"$DEST/install2.log" 2>&1 ||
    { cat "$DEST/install2.log"; fail "install.sh --prefix failed"; }
p2=$(grep -o 'xdp_prog=[^ ",]*' "$DEST2/etc/kvsteer/dataplane.env" | cut -d= -f2) || fail "no xdp_prog= with --prefix"
[[ $p2 == /opt/kvsteer/lib/kvsteer/kvsteer.bpf.o && -f $DEST2$p2 ]] || fail "--prefix: dataplane.env names $p2"
grep -q '^ExecStart=/opt/kvsteer/bin/kvsteerd ' "$DEST2/etc/systemd/system/kvsteerd.service" ||
    fail "--prefix: kvsteerd.service does not run /opt/kvsteer/bin/kvsteerd"
echo "install: ok ($checked unit paths, interface $dp_if, VIP $vip; --prefix)"
