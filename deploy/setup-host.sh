#!/usr/bin/env bash
# Prepares a host for kvsteer: bpffs, hugepages, sysctls. --dry-run (default) prints what it
# would do; --apply does it. Idempotent.
set -euo pipefail
apply=0 quiet=0 hugepages=${KVS_HUGEPAGES_2M:-512} conf=/etc/kvsteer/kvsteerd.conf
usage() {
    cat <<USAGE
usage: $0 [--dry-run|--apply] [--hugepages N] [--conf FILE] [--quiet]
  --dry-run       print the changes (default)
  --apply         make them
  --hugepages N   2 MiB hugepages to reserve for DPDK (default $hugepages; 0 = none, use --no-huge)
  --conf FILE     kvsteerd's configuration, for its snat-ports (default $conf; kvsteerd's
                  default range 10000-32767 when it is not there or does not set them)
USAGE
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) apply=0 ;;
        --apply) apply=1 ;;
        --quiet) quiet=1 ;;
        --hugepages) hugepages=${2:?--hugepages needs a number}; shift ;;
        --conf) conf=${2:?--conf needs a file}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ "$hugepages" =~ ^[0-9]+$ ]] || { echo "--hugepages: not a number: $hugepages" >&2; exit 2; }

run() {
    if (( apply )); then (( quiet )) || echo "+ $*"; "$@"; else echo "would run: $*"; fi
}

# Pinned maps live on a bpffs.
if ! mountpoint -q /sys/fs/bpf; then run mount -t bpf bpf /sys/fs/bpf; fi
run mkdir -p /sys/fs/bpf/kvsteer /run/kvsteer

# Hugepages for DPDK mempools. A failure here is said and the rest goes on (the SNAT range below
# must be reserved whatever the hugepages did; under set -e the script stopped here, and the
# unit's "-" hid it): how many the kernel gave is checked, a shortfall named.
warn() { echo "setup-host.sh: warning: $*" >&2; }
if (( hugepages > 0 )); then
    nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
    cur=$(cat $nr 2>/dev/null || echo 0)
    if (( cur < hugepages )); then
        run sh -c "echo $hugepages > $nr" || warn "could not ask for $hugepages 2 MiB hugepages"
        if (( apply )); then
            got=$(cat $nr 2>/dev/null || echo 0)
            (( got >= hugepages )) || warn "$got of $hugepages 2 MiB hugepages reserved (memory" \
                "fragmented): the dataplane's mempool may not fit (fewer --mbufs, or hugepages=" \
                "on the kernel command line)"
        fi
    fi
    if ! grep -qs ' hugetlbfs ' /proc/mounts; then  # no pipe: under pipefail grep -q's early exit failed it
        { run mkdir -p /dev/hugepages && run mount -t hugetlbfs nodev /dev/hugepages; } ||
            warn "could not mount hugetlbfs on /dev/hugepages"
    fi
fi

# The kernel must not pick its own ports (ephemeral ports: the appliance's health checks, scrapes,
# etcd) in the SNAT range the dataplane owns, or their replies would be taken by XDP (kvsteerd
# warns at start when they overlap). The range is reserved (net.ipv4.ip_local_reserved_ports,
# IPv6 too), added to what is reserved already; the ephemeral range is left as the operator set it
# (it was moved to 40000-60999 whatever snat-ports said, which could make the overlap).
snat=10000-32767
if [[ -r $conf ]]; then
    # As kvsteerd reads the file: '#' starts a comment, spaces around '=' and a CR are allowed.
    v=$(sed -e 's/#.*//' -e 's/\r$//' "$conf" |
        sed -n 's/^[[:space:]]*snat-ports[[:space:]]*=[[:space:]]*\([0-9]*-[0-9]*\)[[:space:]]*$/\1/p' | tail -1)
    [[ -n $v ]] && snat=$v
fi
[[ $snat =~ ^[0-9]+-[0-9]+$ ]] || { echo "snat-ports in $conf: not LO-HI: $snat" >&2; exit 2; }
reserved=$(cat /proc/sys/net/ipv4/ip_local_reserved_ports 2>/dev/null || true)
if [[ ",$reserved," != *",$snat,"* ]]; then
    run sysctl -qw net.ipv4.ip_local_reserved_ports="${reserved:+$reserved,}$snat"
fi
# Many flows in TIME_WAIT on the backends are normal; nothing here depends on the appliance's
# conntrack (the appliance is stateless for SYNs and keeps flows in its BPF flow map).
(( apply )) || echo "(dry run: nothing changed; --apply to make these changes)"
