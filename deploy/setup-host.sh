#!/usr/bin/env bash
# Prepares a host for kvsteer: bpffs, hugepages, sysctls. --dry-run (default) prints what it
# would do; --apply does it. Idempotent.
set -euo pipefail
apply=0 quiet=0 hugepages=${KVS_HUGEPAGES_2M:-512}
usage() {
    cat <<USAGE
usage: $0 [--dry-run|--apply] [--hugepages N] [--quiet]
  --dry-run       print the changes (default)
  --apply         make them
  --hugepages N   2 MiB hugepages to reserve for DPDK (default $hugepages; 0 = none, use --no-huge)
USAGE
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) apply=0 ;;
        --apply) apply=1 ;;
        --quiet) quiet=1 ;;
        --hugepages) hugepages=${2:?--hugepages needs a number}; shift ;;
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

# Hugepages for DPDK mempools.
if (( hugepages > 0 )); then
    cur=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages 2>/dev/null || echo 0)
    if (( cur < hugepages )); then
        run sh -c "echo $hugepages > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    fi
    if ! grep -qs ' hugetlbfs ' /proc/mounts; then  # no pipe: under pipefail grep -q's early exit failed it
        run mkdir -p /dev/hugepages
        run mount -t hugetlbfs nodev /dev/hugepages
    fi
fi

# The kernel's ephemeral ports must stay clear of the SNAT port range the dataplane owns
# (kvsteerd's default 10000-32767, the demo's 10000-39999), or replies to the appliance's own health
# checks would be taken by XDP (kvsteerd warns at start when they overlap).
run sysctl -qw net.ipv4.ip_local_port_range="40000 60999"
# Many flows in TIME_WAIT on the backends are normal; nothing here depends on the appliance's
# conntrack (the appliance is stateless for SYNs and keeps flows in its BPF flow map).
(( apply )) || echo "(dry run: nothing changed; --apply to make these changes)"
