#!/usr/bin/env bash
# Installs a built kvsteer where deploy/systemd's units look for it: the binaries in PREFIX/bin,
# the BPF objects and the host setup script in PREFIX/lib/kvsteer, the example configurations in
# /etc/kvsteer (an existing file is kept), the units in /etc/systemd/system (their paths rewritten
# when PREFIX is not /usr/local). It starts nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
build=$ROOT/build destdir="" prefix=/usr/local
usage() {
    cat <<USAGE
usage: $0 [--build DIR] [--prefix DIR] [--destdir DIR]
  --build DIR    the build tree (default $build; \`make build\` makes it)
  --prefix DIR   where binaries and BPF objects go (default $prefix)
  --destdir DIR  stage everything under DIR instead of / (packaging, a dry look)
USAGE
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --build) build=${2:?--build needs a directory}; shift ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ $prefix == /* ]] || { echo "install.sh: --prefix must be absolute (got $prefix)" >&2; exit 2; }
bins=(kvsteerd kvsteerctl kvsteer-xdp)
objs=(kvsteer.bpf.o guard.bpf.o)
for f in "${bins[@]/#/bin/}" "${objs[@]/#/bpf/}"; do
    [[ -f $build/$f ]] || { echo "install.sh: $build/$f is missing: build first (make build)" >&2; exit 1; }
done
# The dataplane is built only where DPDK is installed (make deps installs it).
if [[ -f $build/bin/kvsteer-dataplane ]]; then
    bins+=(kvsteer-dataplane)
else
    echo "install.sh: warning: $build/bin/kvsteer-dataplane is missing (a build without DPDK):" \
        "kvsteer-dataplane.service will not start" >&2
fi

say() { echo "[install] $*"; }
lib=$destdir$prefix/lib/kvsteer etc=$destdir/etc/kvsteer units=$destdir/etc/systemd/system
install -d "$destdir$prefix/bin" "$lib" "$etc" "$units"
for b in "${bins[@]}"; do install -m 755 "$build/bin/$b" "$destdir$prefix/bin/$b"; done
for o in "${objs[@]}"; do install -m 644 "$build/bpf/$o" "$lib/$o"; done
install -m 755 "$ROOT/deploy/setup-host.sh" "$lib/setup-host.sh"
say "binaries in $destdir$prefix/bin, BPF objects and setup-host.sh in $lib"
for c in kvsteerd.conf dataplane.env; do
    if [[ -e $etc/$c ]]; then
        say "kept $etc/$c (the current example: deploy/$c.example)"
    else
        # Its paths (dataplane.env's xdp_prog=) follow --prefix, as the units' do.
        # Not world-readable: kvsteerd.conf holds the SYN-cookie key (anyone reading it could
        # forge cookies past the SYN-flood defence).
        (umask 077 && sed "s#/usr/local/#$prefix/#g" "$ROOT/deploy/$c.example" >"$etc/$c")
        chmod 600 "$etc/$c"
        say "wrote $etc/$c from deploy/$c.example: edit it (vip, snat-addr, interface, backends)"
    fi
done
for u in "$ROOT"/deploy/systemd/*.service; do
    sed "s#/usr/local/#$prefix/#g" "$u" >"$units/$(basename "$u")"
    chmod 644 "$units/$(basename "$u")"
done
say "units in $units"
say "next: edit $etc/kvsteerd.conf and $etc/dataplane.env (one interface in both, README.md"
say "      \"Running it\"), then: systemctl daemon-reload && systemctl enable --now kvsteerd kvsteer-dataplane"
